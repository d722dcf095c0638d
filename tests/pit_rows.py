"""Shared generated data of the ``features_at`` tests: the time grid and the query rows.

Query rows repeat (key, time) pairs, sit on event times (multiples of ``STEP`` after ``BASE``)
and one microsecond either side, come before a key's first event, and use a key with no events.
"""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
from hypothesis import strategies as st

TS = pa.timestamp("us", tz="UTC")
BASE = int(dt.datetime(2026, 3, 2, 8, tzinfo=dt.UTC).timestamp()) * 1_000_000
STEP = 10 * 60 * 1_000_000  # 10 minutes: windows of 20 min and 1h end exactly on event times
KEYS = ["k1", "k2", "k3"]


@st.composite
def query_rows(draw: st.DrawFn) -> list[dict]:
    rows = draw(st.lists(st.fixed_dictionaries({
        "card": st.sampled_from([*KEYS, "k_none"]),
        "t": st.tuples(st.integers(-1, 13), st.sampled_from([0, 0, 1, -1])).map(
            lambda p: BASE + p[0] * STEP + p[1]),
    }), min_size=1, max_size=20))
    # repeated (key, time) rows
    return rows + [dict(rows[i]) for i in draw(st.lists(st.integers(0, len(rows) - 1), max_size=3))]
