"""Near-duplicate text: evenflow's vectorized MinHash LSH vs datasketch ``MinHashLSH``.

Generates N short texts (8-14 random words) with planted near-duplicates (typos, dropped,
swapped, added or replaced words: Jaccard spread around the threshold), writes them once, then
runs each implementation in its own child process at the same threshold, shingles (character
5-grams of the same normalized text) and num_perm. Each reports its wall time (shingling,
signatures, index, candidate pairs; reading the file excluded) and its pairs.

Recall is measured against exact Jaccard on a sample: 2,000 planted groups plus 5,000 random
texts, with every pair inside the sample scored exactly (sparse shingle-count product). datasketch
returns LSH candidates (unverified); evenflow returns verified pairs only, so its precision is 1.

    .venv/bin/python benchmarks/neardup_bench.py            # 1M texts
    .venv/bin/python benchmarks/neardup_bench.py --quick    # 100k texts
    make bench-neardup                                      # same, with the datasketch venv
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS_PYTHON = HERE / ".venvs" / "datasketch" / "bin" / "python"
SHINGLE = 5


def normalize(text: str) -> str:
    return " ".join(text.split()).lower()


def char_shingles(text: str) -> set[str]:
    t = normalize(text)
    if not t:
        return set()
    return {t[i:i + SHINGLE] for i in range(max(len(t) - SHINGLE + 1, 1))}


# -- data ---------------------------------------------------------------------------------------
def generate(n: int, seed: int, path: Path) -> dict[str, int]:
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = ["".join(rng.choice(letters, int(k))) for k in rng.integers(3, 10, 30_000)]
    n_dup = n // 20  # 5% of the texts are edited copies of earlier ones
    n_orig = n - n_dup
    lengths = rng.integers(8, 15, n_orig)
    words = rng.integers(0, len(vocab), int(lengths.sum()))
    texts, pos = [], 0
    for k in lengths.tolist():
        texts.append(" ".join(vocab[w] for w in words[pos:pos + k]))
        pos += k
    sources = rng.integers(0, n_orig, n_dup)
    kinds = rng.integers(0, 5, n_dup)
    for src, kind in zip(sources.tolist(), kinds.tolist(), strict=True):
        w = texts[src].split()
        i = int(rng.integers(0, len(w)))
        if kind == 0:  # typo
            c = w[i]
            j = int(rng.integers(0, len(c)))
            w[i] = c[:j] + str(letters[int(rng.integers(0, 26))]) + c[j + 1:]
        elif kind == 1:
            del w[i]
        elif kind == 2 and i + 1 < len(w):
            w[i], w[i + 1] = w[i + 1], w[i]
        elif kind == 3:
            w.insert(i, vocab[int(rng.integers(0, len(vocab)))])
        else:  # replace one to three words: some pairs fall below the threshold
            for _ in range(int(rng.integers(1, 4))):
                w[int(rng.integers(0, len(w)))] = vocab[int(rng.integers(0, len(vocab)))]
        texts.append(" ".join(w))
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    origin = {int(np.flatnonzero(order == n_orig + d)[0]): int(np.flatnonzero(order == s)[0])
              for d, s in enumerate(sources.tolist()[:2000])}
    path.write_text("\n".join(texts))
    (path.parent / "planted.json").write_text(json.dumps(origin))
    return {"texts": len(texts), "planted": n_dup}


# -- implementations (each in its own process) ----------------------------------------------------
def run_evenflow(texts: list[str], threshold: float, num_perm: int) -> tuple[float, list[tuple[int, int]], dict]:
    sys.path.insert(0, str(HERE.parent))
    from evenflow.verify.neardup import near_duplicates

    t = time.perf_counter()
    nd = near_duplicates(texts, threshold=threshold, shingle_size=SHINGLE, num_perm=num_perm)
    pairs = nd.pairs()
    elapsed = time.perf_counter() - t
    return elapsed, [tuple(p) for p in pairs.tolist()], {"candidates": nd.candidates}


def run_datasketch(texts: list[str], threshold: float, num_perm: int, weights: tuple[float, float] = (0.5, 0.5)
                   ) -> tuple[float, list[tuple[int, int]], dict]:
    """datasketch's fastest documented path: ``MinHash.bulk`` and an insertion session.

    ``weights`` (false positive, false negative) picks its banding; ``datasketch:recall`` uses
    (0.1, 0.9), the weighting evenflow uses by default, for a like-for-like recall.
    """
    from datasketch import MinHash, MinHashLSH

    t = time.perf_counter()
    sets = [[s.encode() for s in char_shingles(x)] for x in texts]
    sigs = MinHash.bulk(sets, num_perm=num_perm, seed=1)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=weights)
    with lsh.insertion_session() as session:
        for i, m in enumerate(sigs):
            if sets[i]:
                session.insert(i, m, check_duplication=False)
    pairs = set()
    for i, m in enumerate(sigs):
        if sets[i]:
            for j in lsh.query(m):
                if j != i:
                    pairs.add((min(i, j), max(i, j)))
    elapsed = time.perf_counter() - t
    return elapsed, sorted(pairs), {"bands_rows": [lsh.b, lsh.r]}


def worker(impl: str, data: Path, threshold: float, num_perm: int, out: Path) -> None:
    texts = data.read_text().split("\n")
    if impl == "evenflow":
        elapsed, pairs, extra = run_evenflow(texts, threshold, num_perm)
    else:
        weights = (0.1, 0.9) if impl == "datasketch:recall" else (0.5, 0.5)
        elapsed, pairs, extra = run_datasketch(texts, threshold, num_perm, weights)
    out.write_text(json.dumps({"impl": impl, "seconds": elapsed, "pairs": pairs, **extra}))


# -- ground truth and report -----------------------------------------------------------------------
def truth_on_sample(texts: list[str], planted: dict[str, int], threshold: float, seed: int
                    ) -> tuple[set[int], set[tuple[int, int]]]:
    import numpy as np
    from scipy import sparse

    rng = np.random.default_rng(seed + 1)
    sample = {int(k) for k in planted} | set(planted.values())
    sample |= {int(i) for i in rng.choice(len(texts), 5000, replace=False)}
    ids = sorted(sample)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, i in enumerate(ids):
        for s in char_shingles(texts[i]):
            rows.append(r)
            cols.append(vocab.setdefault(s, len(vocab)))
    x = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(ids), len(vocab)))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = sparse.triu(x @ x.T, k=1).tocoo()
    jac = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = jac >= threshold
    truth = {(ids[a], ids[b]) for a, b in zip(inter.row[keep], inter.col[keep], strict=True)}
    return sample, truth


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--quick", action="store_true", help="100k texts")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--impls", default="evenflow,datasketch",
                    help="comma list of evenflow, datasketch, datasketch:recall")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, Path(args.data), args.threshold, args.num_perm, Path(args.out))
        return
    n = 100_000 if args.quick else args.n
    tmp = Path(tempfile.mkdtemp(prefix="neardup_bench_"))
    data = tmp / "texts.txt"
    info = generate(n, args.seed, data)
    print(f"{info['texts']:,} texts, {info['planted']:,} planted near-duplicates; "
          f"threshold {args.threshold}, char {SHINGLE}-grams, num_perm {args.num_perm}", flush=True)
    results = {}
    for impl in args.impls.split(","):
        python = str(DS_PYTHON) if impl.startswith("datasketch") else sys.executable
        if impl.startswith("datasketch") and not DS_PYTHON.exists():
            sys.exit(f"no datasketch venv at {DS_PYTHON}: run make bench-neardup")
        out = tmp / f"{impl.replace(':', '_')}.json"
        env = {**os.environ, "PYTHONPATH": ""}
        subprocess.run([python, __file__, "--worker", impl, "--data", str(data), "--out", str(out),
                        "--threshold", str(args.threshold), "--num-perm", str(args.num_perm)],
                       check=True, env=env)
        results[impl] = json.loads(out.read_text())
        print(f"  {impl}: {results[impl]['seconds']:.1f} s, {len(results[impl]['pairs']):,} pairs", flush=True)
    texts = data.read_text().split("\n")
    sample, truth = truth_on_sample(texts, json.loads((tmp / "planted.json").read_text()),
                                    args.threshold, args.seed)
    print(f"ground truth: {len(truth):,} pairs with exact Jaccard >= {args.threshold} among "
          f"{len(sample):,} sampled texts")
    summary = {"n": info["texts"], "threshold": args.threshold, "num_perm": args.num_perm,
               "sample": len(sample), "truth_pairs": len(truth), "impls": {}}
    for impl, res in results.items():
        found = {tuple(p) for p in res["pairs"]}
        in_sample = {p for p in found if p[0] in sample and p[1] in sample}
        recall = len(in_sample & truth) / max(len(truth), 1)
        precision = len(in_sample & truth) / max(len(in_sample), 1)
        summary["impls"][impl] = {"seconds": round(res["seconds"], 2), "pairs": len(found),
                                  "recall": round(recall, 4), "precision": round(precision, 4),
                                  **{k: v for k, v in res.items() if k not in ("pairs", "seconds", "impl")}}
        print(f"  {impl}: recall {recall:.4f}, precision {precision:.4f} (on the sample)")
    for peer in ("datasketch", "datasketch:recall"):
        if {"evenflow", peer} <= set(results):
            ratio = results[peer]["seconds"] / results["evenflow"]["seconds"]
            summary[f"speedup_vs_{peer}"] = round(ratio, 2)
            print(f"evenflow is {ratio:.2f}x faster than {peer}")
    results_dir = HERE / "results"
    results_dir.mkdir(exist_ok=True)
    name = "neardup_quick.json" if args.quick else f"neardup_{n}.json"
    (results_dir / name).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
