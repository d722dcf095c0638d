"""The fraud pipeline in Python: the same definition as pipeline.yaml (same fingerprint).

    python examples/fraud/pipeline.py        # builds and publishes the training set
"""

from __future__ import annotations

from pathlib import Path

import evenflow as ef

HERE = Path(__file__).parent


def pipeline(data: Path = HERE / "data", out: Path = HERE / "out") -> ef.Pipeline:
    transactions = ef.source.csv(
        str(data / "transactions.csv"), name="transactions", key="card_id", event_time="ts",
        schema=ef.Schema(
            transaction_id=ef.String(nullable=False, unique=True, regex="t[0-9]+"),
            card_id=ef.String(nullable=False),
            merchant_id=ef.String(nullable=False),
            amount=ef.Float(ge=0),
            ts=ef.Timestamp(),
            lat=ef.Float(ge=-90, le=90),
            lon=ef.Float(ge=-180, le=180),
            channel=ef.String(allowed=["pos", "ecom", "atm"]),
            mcc=ef.String(),
        ),
    )
    labels = ef.source.parquet(
        str(data / "labels.parquet"), name="labels", key="card_id", event_time="ts",
        schema=ef.Schema(
            transaction_id=ef.String(nullable=False), card_id=ef.String(nullable=False),
            merchant_id=ef.String(nullable=False), ts=ef.Timestamp(), amount=ef.Float(),
            lat=ef.Float(), lon=ef.Float(), channel=ef.String(),
            is_fraud=ef.Int(nullable=False, allowed=[0, 1]), label_time=ef.Timestamp(),
        ),
    )
    card = ef.FeatureSet(
        "card", source=transactions,
        steps=[ef.Dedup("transaction_id"), ef.Impute("amount", "median"),
               ef.Clip("amount", q=(0.0, 0.995))],
        features=[
            ef.count(window="10m"), ef.count(window="1h"), ef.count(window="1d"),
            ef.sum("amount", window="1h"), ef.min("amount", window="1h"),
            ef.max("amount", window="1d"), ef.mean("amount", window="7d"),
            ef.std("amount", window="7d"), ef.distinct("merchant_id", window="1d"),
            ef.since_last(),
            ef.last("lat", window="7d", closed="left"), ef.last("lon", window="7d", closed="left"),
            ef.derive("hour", "hour(ts)"),
            ef.derive("amount_vs_mean_7d", "amount / (mean_amount_7d + 1)"),
            ef.derive("km_from_last", "111 * sqrt((lat - last_lat_7d_before) * (lat - last_lat_7d_before)"
                                      " + (lon - last_lon_7d_before) * (lon - last_lon_7d_before))"),
        ],
    )
    merchant = ef.FeatureSet(
        "merchant", source=transactions, key="merchant_id", steps=[ef.Dedup("transaction_id")],
        features=[ef.count(window="1h"), ef.count(window="1d"), ef.distinct("card_id", window="1d")],
    )
    return ef.Pipeline(
        name="fraud",
        feature_sets=[card, merchant],
        training_set=ef.TrainingSetSpec(
            name="fraud_v1", labels=labels, label="is_fraud", label_available_time="label_time",
            features=["card", "merchant"], split=ef.TimeSplit(test_from="2026-04-01"),
            steps=[ef.Encode("channel")],
        ),
        output=ef.Output(directory=str(out)),
    )


if __name__ == "__main__":
    from evenflow.batch.publish import write_training_set
    from evenflow.batch.training import build

    p = pipeline()
    ts = build(p)
    print(write_training_set(ts, p.output))
    print(ts.card["rows"], ts.fingerprint)
