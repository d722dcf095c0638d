"""Small helpers shared by the benchmarks: child processes with peak RSS, timing, tables.

Every measured implementation runs in its own child process, so its peak resident memory is its
own (``ru_maxrss`` of the child, reported by the child itself, cross-checked by sampling the
child's RSS from the parent with psutil) and no cache or allocator state leaks between runs.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import psutil

MB = 1024 * 1024


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far.

    ``VmHWM`` from /proc/self/status: unlike ``ru_maxrss`` it starts afresh at ``exec``, so a
    child does not inherit the peak of the parent it was forked from (Linux keeps ``ru_maxrss``
    across exec, which made every child look at least as big as the benchmark driver).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


def write_result(path: str, payload: dict[str, Any]) -> None:
    """Called in the child: write its result, adding its own peak RSS."""
    payload = {**payload, "peak_rss_bytes": peak_rss_bytes()}
    with open(path, "w") as fh:
        json.dump(payload, fh, default=str)


def run_child(argv: Sequence[str], *, timeout: float | None = None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python argv...`` with ``--result-file PATH``; return the JSON the child wrote.

    Adds ``sampled_peak_rss_bytes`` (psutil, every 50 ms) and ``wall_seconds`` (process start to
    exit, including interpreter start and imports). Raises on a non-zero exit.
    """
    fd, path = tempfile.mkstemp(prefix="bench-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, *argv, "--result-file", path]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env)
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        try:
            ps = psutil.Process(proc.pid)
            while not done.is_set():
                rss = ps.memory_info().rss
                for child in ps.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        rss += child.memory_info().rss
                peak[0] = max(peak[0], rss)
                time.sleep(0.05)
        except psutil.Error:
            return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
        sampler.join()
    wall = time.perf_counter() - t0
    try:
        if rc != 0:
            raise RuntimeError(f"child failed with exit code {rc}: {' '.join(cmd)}")
        with open(path) as fh:
            result: dict[str, Any] = json.load(fh)
    finally:
        os.unlink(path)
    result["sampled_peak_rss_bytes"] = peak[0]
    result["wall_seconds"] = wall
    return result


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def fmt_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def fmt_mb(value: float | None) -> str:
    return "—" if value is None else f"{value / MB:,.0f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None or math.isnan(value) else f"{value:.2f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
