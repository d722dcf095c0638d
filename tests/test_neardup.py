"""Near-duplicate text: exact against brute force, no false positives, and the NearDedup step."""

from __future__ import annotations

import datetime as dt
import itertools
import json

import numpy as np
import pyarrow as pa
import pytest

import evenflow as ef
from evenflow.batch.engine import BatchEngine
from evenflow.core.pipeline import Pipeline
from evenflow.verify.neardup import NearDedup, lsh_params, near_duplicates, normalize

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _corpus(n: int, seed: int, alphabet: str = "abcdefghijklmnopqrstuvwxyz") -> list[str]:
    """Random sentences, 40% of them edited copies (0-3 words replaced) of earlier ones."""
    rng = np.random.default_rng(seed)
    words = ["".join(rng.choice(list(alphabet), int(rng.integers(2, 9)))) for _ in range(300)]
    texts: list[str] = []
    for _ in range(n):
        if texts and rng.random() < 0.4:
            w = texts[int(rng.integers(0, len(texts)))].split()
            for _ in range(int(rng.integers(0, 4))):
                w[int(rng.integers(0, len(w)))] = words[int(rng.integers(0, len(words)))]
            texts.append(" ".join(w))
        else:
            texts.append(" ".join(words[int(i)] for i in rng.integers(0, 300, int(rng.integers(4, 13)))))
    return texts


def _shingles(text: str, size: int, unit: str) -> set[object]:
    t = normalize(text)
    if not t:
        return set()
    if unit == "char":
        return {t[i:i + size] for i in range(max(len(t) - size + 1, 1))}
    w = t.split()
    return {tuple(w[i:i + size]) for i in range(max(len(w) - size + 1, 1))}


def _truth(texts: list[str], size: int, unit: str) -> dict[tuple[int, int], float]:
    sets = [_shingles(t, size, unit) for t in texts]
    return {(i, j): len(sets[i] & sets[j]) / len(sets[i] | sets[j])
            for i, j in itertools.combinations(range(len(texts)), 2) if sets[i] and sets[j]}


@pytest.mark.parametrize(("unit", "size", "threshold", "alphabet"), [
    ("char", 5, 0.8, "abcdefghijklmnopqrstuvwxyz"), ("char", 3, 0.5, "abcdefghijklmnopqrstuvwxyz"),
    ("word", 2, 0.7, "abcdefghijklmnopqrstuvwxyz"), ("char", 4, 0.8, "äöüßéèçñ漢字かなab"),
])
def test_pairs_are_exact_and_complete_away_from_the_threshold(unit: str, size: int, threshold: float,
                                                              alphabet: str) -> None:
    texts = _corpus(300, seed=size, alphabet=alphabet)
    truth = _truth(texts, size, unit)
    nd = near_duplicates(texts, threshold=threshold, shingle_size=size, unit=unit)  # type: ignore[arg-type]
    pairs = [tuple(p) for p in nd.pairs().tolist()]
    # no false positives, and each reported similarity is the exact Jaccard
    for (i, j), s in zip(pairs, nd.pair_similarities().tolist(), strict=True):
        assert truth[(i, j)] >= threshold and s == pytest.approx(truth[(i, j)], abs=1e-12)
    # every pair clearly above the threshold is found (LSH misses only happen near it)
    clear = {p for p, s in truth.items() if s >= min(1.0, threshold + 0.1)}
    assert clear and clear <= set(pairs)
    near = {p for p, s in truth.items() if s >= threshold}
    assert len(set(pairs)) / len(near) >= 0.9


def test_nulls_empties_copies_and_short_texts() -> None:
    texts = [None, "", "   ", "Same  text here", "same text here", "ab", "AB", "abc", "same text here!"]
    nd = near_duplicates(texts, threshold=0.8)
    pairs = {tuple(p) for p in nd.pairs().tolist()}
    # normalized copies; "ab" (shorter than a shingle) is one shingle; "!" leaves Jaccard 10/11
    assert pairs == {(3, 4), (3, 8), (4, 8), (5, 6)}
    assert nd.clusters() == [[3, 4, 8], [5, 6]]
    assert nd.duplicate_of().tolist() == [-1, -1, -1, -1, 3, -1, 5, -1, 3]
    strict = near_duplicates(texts, threshold=0.95)
    assert {tuple(p) for p in strict.pairs().tolist()} == {(3, 4), (5, 6)}


def test_many_identical_copies_cost_one_signature_and_all_pairs_come_back() -> None:
    texts = ["the same sentence every time"] * 200 + ["something else entirely, really"]
    nd = near_duplicates(texts)
    assert nd.candidates == 0  # copies are grouped before LSH
    assert len(nd.pairs()) == 200 * 199 // 2
    assert (nd.duplicate_of()[1:200] == 0).all() and nd.duplicate_of()[200] == -1


def test_duplicate_of_points_at_a_kept_near_duplicate_in_visit_order() -> None:
    texts = _corpus(200, seed=9)
    nd = near_duplicates(texts, threshold=0.6)
    truth = _truth(texts, 5, "char")
    order = list(range(199, -1, -1))
    kept_of = nd.duplicate_of(order)
    kept = {i for i in range(200) if kept_of[i] < 0}
    for i, k in enumerate(kept_of.tolist()):
        if k >= 0:
            assert k in kept and order.index(k) < order.index(i)
            assert truth[(min(i, k), max(i, k))] >= 0.6


def test_matches_between_two_groups() -> None:
    texts = ["alpha beta gamma delta", "completely unrelated words", "alpha beta gamma delta!", "zzz"]
    nd = near_duplicates(texts, threshold=0.7)
    q, r, s = nd.matches(np.array([False, False, True, True]), np.array([True, True, False, False]))
    assert q.tolist() == [2] and r.tolist() == [0] and s[0] >= 0.7


def test_lsh_params_fit_the_budget_and_favour_recall() -> None:
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = lsh_params(threshold, 128)
        assert bands * rows <= 128
        assert 1 - (1 - threshold ** rows) ** bands >= 0.8  # at the threshold, most pairs are candidates


# -- the NearDedup step ---------------------------------------------------------------------------
def _events() -> tuple[pa.Table, set[int], dict[int, int]]:
    texts = _corpus(120, seed=3)
    truth = near_duplicates(texts, threshold=0.8)
    expected = {i: int(k) for i, k in enumerate(truth.duplicate_of().tolist()) if k >= 0}
    n = len(texts)
    ev = pa.table({"card": [f"c{i % 7}" for i in range(n)],
                   "ts": pa.array([T0 + dt.timedelta(minutes=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
                   "title": texts, "amount": [float(i) for i in range(n)]})
    return ev, set(expected), expected


def test_near_dedup_drops_near_duplicates_and_logs_the_kept_record() -> None:
    ev, dropped, kept_of = _events()
    assert dropped
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=tx, steps=[NearDedup("title", threshold=0.8)],
                       features=[ef.count(window="1d")])
    eng = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    prepared = eng.prepare(fs)
    acc = prepared.accounting()
    assert acc["duplicates"] == len(dropped) and acc["reconciles"] and acc["output"] == ev.num_rows - len(dropped)
    log = eng.duplicates().to_pylist()
    # events are in time order, so record numbers are positions: the log matches duplicate_of
    assert {r["record"]: r["kept_record"] for r in log} == kept_of
    assert all(r["step"] == "near_dedup:title" and "title" in json.loads(r["key"]) for r in log)
    remaining = eng.con.sql(f"SELECT __seq FROM {prepared.table}").fetchall()
    assert not {s for (s,) in remaining} & dropped


def test_near_dedup_keep_last_and_yaml() -> None:
    ev, _, _ = _events()
    tx = ef.source.frame(ev, name="tx", key="card", event_time="ts")
    fs = ef.FeatureSet("card", source=tx, steps=[NearDedup("title", keep="last")], features=[ef.count()])
    eng = BatchEngine(ef.Pipeline(name="p", feature_sets=[fs]))
    log = eng.prepare(fs) and eng.duplicates().to_pylist()
    assert log and all(r["kept_record"] > r["record"] for r in log)  # the later record is kept
    yaml_text = ("name: p\nsources:\n  tx: {format: parquet, path: tx.parquet, key: card, event_time: ts}\n"
                 "feature_sets:\n  - name: card\n    source: tx\n    steps:\n"
                 "      - {kind: near_dedup, column: title, threshold: 0.9, shingle: 3, unit: word}\n"
                 "    features:\n      - {agg: count}\n")
    step = Pipeline.from_yaml(yaml_text).feature_sets[0].steps[0]
    assert isinstance(step, NearDedup) and (step.threshold, step.shingle, step.unit) == (0.9, 3, "word")
