"""The 20 rules of the contracts benchmark, in one neutral form every tool's runner translates.

Pure Python, no imports beyond the standard library: each runner imports it from its own
virtualenv. Semantics every runner implements the same way (they are evenflow's):
nulls pass ``allowed``, ``matches`` and ``rule``; ``matches`` is a full match; ``unique`` fails when
any value (combination) repeats; ``monotonic`` compares each row with the previous one in file
order; ``null_fraction`` and ``row_count`` bound one number; ``freshness`` bounds ``max(column)``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

START = datetime(2026, 3, 1, tzinfo=UTC)
STEP_US = 50_000  # one transaction every 50 ms: ts is strictly increasing

COUNTRIES = ["FR", "DE", "ES", "IT", "NL", "BE", "PT", "PL", "SE", "DK", "FI", "IE", "AT", "CZ",
             "GR", "HU", "RO", "GB", "US", "CA"]
CURRENCIES = ["EUR", "USD", "GBP", "SEK", "DKK", "PLN", "CZK", "HUF", "RON", "CAD"]
STATUSES = ["approved", "declined", "review", "reversed"]
CHANNELS = ["pos", "ecom", "atm"]

#: The rules that fail on the generated data (planted violations), at any size >= 1M rows.
EXPECTED_FAILURES = ["unique_transaction_id", "allowed_country", "matches_mcc",
                     "null_fraction_channel", "monotonic_seq_no", "refund_at_atm"]


def reference_time(rows: int) -> datetime:
    """One day after the last transaction: ``freshness(ts, within=2d)`` passes."""
    return START + timedelta(microseconds=STEP_US * (rows - 1)) + timedelta(days=1)


def rules(rows: int) -> list[dict[str, Any]]:
    """The 20 rules, as plain dicts."""
    ref = reference_time(rows)
    return [
        {"name": "unique_transaction_id", "kind": "unique", "columns": ["transaction_id"]},
        {"name": "unique_card_id_ts", "kind": "unique", "columns": ["card_id", "ts"]},
        {"name": "allowed_channel", "kind": "allowed", "column": "channel", "values": CHANNELS},
        {"name": "allowed_country", "kind": "allowed", "column": "country", "values": COUNTRIES},
        {"name": "allowed_currency", "kind": "allowed", "column": "currency", "values": CURRENCIES},
        {"name": "allowed_status", "kind": "allowed", "column": "status", "values": STATUSES},
        {"name": "matches_mcc", "kind": "matches", "column": "mcc", "pattern": "[0-9]{4}"},
        {"name": "matches_transaction_id", "kind": "matches", "column": "transaction_id",
         "pattern": "t[0-9]+"},
        {"name": "matches_merchant_id", "kind": "matches", "column": "merchant_id",
         "pattern": "m[0-9]+"},
        {"name": "null_fraction_amount", "kind": "null_fraction", "column": "amount", "le": 0.05},
        {"name": "null_fraction_channel", "kind": "null_fraction", "column": "channel", "le": 0.001},
        {"name": "null_fraction_merchant_id", "kind": "null_fraction", "column": "merchant_id",
         "le": 0.0},
        {"name": "row_count_min", "kind": "row_count", "ge": 1000},
        {"name": "row_count_max", "kind": "row_count", "le": 100_000_000},
        {"name": "monotonic_seq_no", "kind": "monotonic", "column": "seq_no", "strict": True},
        {"name": "monotonic_ts", "kind": "monotonic", "column": "ts", "strict": False},
        # cross-column rules: (a >= 0 or b == 'atm'), written per tool; null operands pass
        {"name": "refund_at_atm", "kind": "rule", "expr": "amount >= 0 or channel == 'atm'",
         "column": "amount", "min": 0, "unless": ("channel", "atm")},
        {"name": "large_needs_review", "kind": "rule", "expr": "amount <= 10000 or status == 'review'",
         "column": "amount", "max": 10000, "unless": ("status", "review")},
        {"name": "latitude", "kind": "rule", "expr": "lat >= -90 and lat <= 90",
         "column": "lat", "min": -90, "max": 90},
        {"name": "freshness_ts", "kind": "freshness", "column": "ts", "within_days": 2,
         "reference": ref.isoformat()},
    ]
