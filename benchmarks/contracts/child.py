"""What every runner of the contracts benchmark shares: arguments, peak memory, the result file.

Standard library only, so it imports in every peer's virtualenv.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any


def peak_rss_bytes() -> int:
    """Peak resident set of this process (``VmHWM``: starts afresh at exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def main(load: Callable[[str], Any], validate: Callable[[Any, list[dict[str, Any]]], list[str]],
         *, version: str) -> None:
    """Parse ``--data --rows --result-file``; time ``load`` then ``validate``; write the result.

    ``validate`` returns the names of the failing rules.
    """
    from rules import rules  # the runner put benchmarks/contracts on sys.path

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--rows", type=int, required=True)
    ap.add_argument("--result-file", required=True)
    args = ap.parse_args()
    # CPU seconds (all threads of this process) beside wall seconds: the machine is shared, and
    # CPU time moves less with the other load than wall time does
    t0, c0 = time.perf_counter(), time.process_time()
    frame = load(args.data)
    t1, c1 = time.perf_counter(), time.process_time()
    failed = validate(frame, rules(args.rows))
    t2, c2 = time.perf_counter(), time.process_time()
    payload = {"version": version, "load_seconds": t1 - t0, "validate_seconds": t2 - t1,
               "load_cpu_seconds": c1 - c0, "validate_cpu_seconds": c2 - c1,
               "total_seconds": t2 - t0, "failed": sorted(failed), "peak_rss_bytes": peak_rss_bytes()}
    extra = getattr(validate, "extra", None)
    if extra:
        payload.update(extra)
    with open(args.result_file, "w") as fh:
        json.dump(payload, fh)
