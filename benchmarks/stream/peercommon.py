"""Input and output of the peer scripts (standard library only: the peers' virtualenvs have no
pyarrow). They read the events evenflow kept after cleaning and write the features of every
``SAMPLE_EVERY``-th row number for the agreement check, plus a JSON result."""

from __future__ import annotations

import argparse
import json
import pickle
import resource
from pathlib import Path
from typing import Any

SAMPLE_EVERY = 10


def args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--result-file", required=True)
    return ap.parse_args()


def load_events(folder: str) -> list[tuple[Any, ...]]:
    """(seq, card, event time µs, amount, merchant, lat, lon) in arrival (= event-time) order."""
    with open(Path(folder) / "clean.pkl", "rb") as fh:
        c = pickle.load(fh)
    return list(zip(c["seq"], c["card"], c["t"], c["amount"], c["merchant"], c["lat"], c["lon"],
                    strict=True))


def _peak_rss() -> int:
    """VmHWM: unlike ru_maxrss it does not inherit the parent's peak across exec."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def finish(folder: str, name: str, result_file: str, *, events: int, seconds: float,
           cpu_seconds: float, sample: dict[int, tuple[Any, ...]], **extra: Any) -> None:
    with open(Path(folder) / f"sample_{name}.pkl", "wb") as fh:
        pickle.dump(sample, fh, protocol=5)
    result = {"events": events, "seconds": seconds, "cpu_seconds": cpu_seconds,
              "events_per_s": events / seconds,
              "peak_rss_bytes": _peak_rss(), **extra}
    with open(result_file, "w") as fh:
        json.dump(result, fh)
