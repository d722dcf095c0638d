"""Generate a point-in-time-join benchmark data set (features + entities).

Runs with plain python + numpy/pyarrow (e.g. /work/main/.venv/bin/python).

Outputs in --out:
  features.parquet  card_id string, event_timestamp timestamp[us, UTC], f1..f4 float64
                    (unique per (card_id, event_timestamp))
  entities.parquet  card_id string, event_timestamp timestamp[us, UTC], label_id int64
                    (label_id unique = row id)
  meta.json         generation parameters and counts of the planted edge cases

Planted edge cases in the entity table (so correctness differences show):
  * dup_key   : rows that copy the (card_id, event_timestamp) of another entity row
  * before    : rows timestamped before every feature row of their card
  * no_feat   : rows whose card has no feature rows at all
  * exact_ts  : rows whose timestamp equals a feature row's timestamp exactly
                (a point-in-time join with feature_ts <= entity_ts must match it)
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

T0_US = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z in microseconds
SPAN_US = 365 * 86_400 * 1_000_000  # one year


def draw_cards(rng: np.random.Generator, n: int, n_cards: int, keys: str, a: float, perm: np.ndarray) -> np.ndarray:
    """perm maps Zipf rank -> card id; shared by features and entities so hot cards coincide."""
    if keys == "uniform":
        return rng.integers(0, n_cards, size=n)
    if keys == "zipf":
        # bounded Zipf over n_cards ranks: p(k) ~ 1/k^a ; permute ranks -> card ids
        w = 1.0 / np.arange(1, n_cards + 1, dtype=np.float64) ** a
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        ranks = np.searchsorted(cdf, rng.random(n), side="right")
        ranks = np.minimum(ranks, n_cards - 1)
        return perm[ranks]
    raise ValueError(keys)


def card_names(idx: np.ndarray, prefix: str = "c") -> pa.Array:
    return pa.array(np.char.add(prefix, idx.astype(np.int64).astype(str)).astype(object), type=pa.string())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-feat", type=int, required=True)
    ap.add_argument("--n-ent", type=int, required=True)
    ap.add_argument("--keys", choices=["zipf", "uniform"], required=True)
    ap.add_argument("--zipf-a", type=float, default=1.2)
    ap.add_argument("--cards-div", type=int, default=5, help="number of cards = n_feat // cards_div")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    ap.add_argument("--frac-dup", type=float, default=0.02)
    ap.add_argument("--frac-before", type=float, default=0.02)
    ap.add_argument("--frac-nofeat", type=float, default=0.02)
    ap.add_argument("--frac-exact", type=float, default=0.01)
    args = ap.parse_args()

    t_start = time.time()
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    n_cards = max(1, args.n_feat // args.cards_div)
    perm = rng.permutation(n_cards)

    # ---------------- features ----------------
    f_card = draw_cards(rng, args.n_feat, n_cards, args.keys, args.zipf_a, perm)
    # timestamps in [T0 + 1 day, T0 + SPAN), microsecond resolution
    f_ts = T0_US + 86_400_000_000 + rng.integers(0, SPAN_US - 86_400_000_000, size=args.n_feat)
    # enforce uniqueness of (card, ts) so the reference join is unambiguous
    order = np.lexsort((f_ts, f_card))
    f_card, f_ts = f_card[order], f_ts[order]
    keep = np.ones(len(f_card), dtype=bool)
    keep[1:] = (f_card[1:] != f_card[:-1]) | (f_ts[1:] != f_ts[:-1])
    f_card, f_ts = f_card[keep], f_ts[keep]
    n_feat = len(f_card)
    # shuffle row order (sources are not sorted in practice)
    sh = rng.permutation(n_feat)
    f_card, f_ts = f_card[sh], f_ts[sh]
    feats = {f"f{i}": rng.standard_normal(n_feat) for i in range(1, 5)}
    f_tab = pa.table(
        {
            "card_id": card_names(f_card),
            "event_timestamp": pa.array(f_ts, type=pa.timestamp("us", tz="UTC")),
            **{k: pa.array(v, type=pa.float64()) for k, v in feats.items()},
        }
    )
    pq.write_table(f_tab, os.path.join(args.out, "features.parquet"))

    # ---------------- entities ----------------
    n = args.n_ent
    e_card = draw_cards(rng, n, n_cards, args.keys, args.zipf_a, perm)
    e_ts = T0_US + rng.integers(0, SPAN_US + 30 * 86_400_000_000, size=n)  # a bit past the last feature
    slots = rng.permutation(n)
    n_nofeat = int(n * args.frac_nofeat)
    n_before = int(n * args.frac_before)
    n_exact = int(n * args.frac_exact)
    n_dup = int(n * args.frac_dup)
    s = 0
    idx_nofeat = slots[s : s + n_nofeat]; s += n_nofeat
    idx_before = slots[s : s + n_before]; s += n_before
    idx_exact = slots[s : s + n_exact]; s += n_exact
    idx_dup = slots[s : s + n_dup]; s += n_dup

    # cards with no feature rows: ids beyond the feature card range (prefix "x")
    nofeat_card = rng.integers(0, max(1, n_nofeat // 3 + 1), size=n_nofeat)

    # rows before the card's first feature row: earliest feature ts per card minus something
    first_ts = np.full(n_cards, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(first_ts, f_card, f_ts)
    has_feat = np.flatnonzero(first_ts != np.iinfo(np.int64).max)
    bc = has_feat[rng.integers(0, len(has_feat), size=n_before)]
    e_card[idx_before] = bc
    e_ts[idx_before] = first_ts[bc] - 1 - rng.integers(0, 86_400_000_000, size=n_before)

    # rows exactly at a feature row's timestamp
    pick = rng.integers(0, n_feat, size=n_exact)
    e_card[idx_exact] = f_card[pick]
    e_ts[idx_exact] = f_ts[pick]

    # duplicate (card, ts) rows: copy from other (non-special) rows
    rest = slots[s:]
    src = rest[rng.integers(0, len(rest), size=n_dup)]
    e_card[idx_dup] = e_card[src]
    e_ts[idx_dup] = e_ts[src]

    names = np.char.add("c", e_card.astype(np.int64).astype(str)).astype(object)
    names[idx_nofeat] = np.char.add("x", nofeat_card.astype(str)).astype(object)
    e_tab = pa.table(
        {
            "card_id": pa.array(names, type=pa.string()),
            "event_timestamp": pa.array(e_ts, type=pa.timestamp("us", tz="UTC")),
            "label_id": pa.array(np.arange(n, dtype=np.int64)),
        }
    )
    pq.write_table(e_tab, os.path.join(args.out, "entities.parquet"))

    # skew stats
    fc = np.bincount(f_card, minlength=n_cards)
    ec = np.bincount(e_card[np.setdiff1d(np.arange(n), idx_nofeat)], minlength=n_cards)
    meta = {
        "keys": args.keys,
        "zipf_a": args.zipf_a if args.keys == "zipf" else None,
        "seed": args.seed,
        "n_cards": n_cards,
        "n_feat": n_feat,
        "n_ent": n,
        "planted": {"no_feat": n_nofeat, "before": n_before, "exact_ts": n_exact, "dup_key": n_dup},
        "max_feat_rows_per_card": int(fc.max()),
        "max_ent_rows_per_card": int(ec.max()),
        # rows an equi-join on card_id alone would produce (the pre-filter blowup)
        "equi_join_pairs": int((fc.astype(np.int64) * ec.astype(np.int64)).sum()),
        "gen_seconds": round(time.time() - t_start, 2),
    }
    with open(os.path.join(args.out, "meta.json"), "w") as fh:
        json.dump(meta, fh, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
