"""Near-duplicate text: MinHash signatures, LSH banding, then exact Jaccard on the shingles.

Everything is vectorized with NumPy over all texts at once (no per-text Python loop in the hot
path):

1. **Shingles.** Texts are normalized (whitespace collapsed, optionally lower-cased) and
   concatenated; a polynomial prefix hash modulo 2**64 gives the hash of any substring in O(1),
   so every character k-gram (``unit="char"``) or word k-gram (``unit="word"``) of every text is
   hashed in a few array passes. A text shorter than one shingle is one shingle (itself).
2. **MinHash.** ``num_perm`` multiply-add-shift hash functions (seeded) applied to every shingle;
   the minimum per text via ``np.minimum.reduceat``.
3. **LSH.** ``bands x rows`` chosen to balance false positives and false negatives around the
   threshold; texts sharing any band hash are candidates.
4. **Verification.** Each candidate pair's exact Jaccard similarity is computed on its shingle
   sets, and only pairs at or above ``threshold`` are kept: the output has no false positives.
   (A true pair can be missed only if LSH never makes it a candidate.)

Texts that are identical after normalization are grouped first, so a thousand copies of one text
cost one signature, not half a million candidate pairs.

>>> nd = near_duplicates(["the quick brown fox jumps", "the quick brown fox jumped",
...                       "a completely different sentence", None], threshold=0.7)
>>> nd.pairs().tolist(), nd.pair_similarities().round(3).tolist()
([[0, 1]], [0.87])
>>> nd.duplicate_of().tolist()
[-1, 0, -1, -1]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

from evenflow.core.steps.base import OnColumn
from evenflow.errors import DefinitionError

Unit = Literal["char", "word"]
_U64 = np.uint64
_P = 0x100000001B3  # odd, so invertible modulo 2**64
_P_INV = pow(_P, -1, 2**64)
_M1, _M2 = _U64(0xBF58476D1CE4E5B9), _U64(0x94D049BB133111EB)
_EMPTY = np.uint32(0xFFFFFFFF)
CHUNK = 100_000  # texts shingled and signed at a time


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: polynomial hashes are structured, MinHash wants them random."""
    x = x ^ (x >> _U64(30))
    x = x * _M1
    x = x ^ (x >> _U64(27))
    x = x * _M2
    return x ^ (x >> _U64(31))


def normalize(text: Any, *, lowercase: bool = True) -> str:
    """Whitespace collapsed to single spaces, ends stripped, optionally lower-cased.

    >>> normalize("  Hello \\n  World ")
    'hello world'
    """
    if text is None:
        return ""
    out = " ".join(str(text).split())
    return out.lower() if lowercase else out


@dataclass
class Shingles:
    """Shingle hashes of many texts in CSR form: text i owns ``hashes[offsets[i]:offsets[i+1]]``."""

    offsets: np.ndarray
    hashes: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)


def _segments(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For groups of ``counts[i]`` consecutive items beginning at ``starts[i]``: item and group ids."""
    total = int(counts.sum())
    group = np.repeat(np.arange(len(counts)), counts)
    first = np.cumsum(counts) - counts
    item = starts[group] + (np.arange(total) - first[group])
    return item, group


_POWER_CACHE: list[np.ndarray] = []


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P**i and P**-i modulo 2**64 for i < n (cached: every chunk needs the same prefix)."""
    if not _POWER_CACHE or len(_POWER_CACHE[0]) < n:
        size = max(n, 1 << 16)
        with np.errstate(over="ignore"):
            pw = np.cumprod(np.full(size, _P, dtype=_U64))
            iv = np.cumprod(np.full(size, _P_INV, dtype=_U64))
        _POWER_CACHE[:] = [np.concatenate([[_U64(1)], pw[:-1]]), np.concatenate([[_U64(1)], iv[:-1]])]
    return _POWER_CACHE[0][:n], _POWER_CACHE[1][:n]


def shingle(texts: Sequence[str], *, size: int = 5, unit: Unit = "char", seed: int = 1,
            unique: bool = False) -> Shingles:
    """Hash the shingles of already-normalized ``texts`` (see :func:`normalize`).

    ``unique=True`` sorts each text's hashes and removes repeats (the shingle *set*).

    >>> s = shingle(["abcabc", "ab", ""], size=3, unique=True)
    >>> s.sizes.tolist()
    [3, 1, 0]
    """
    if size < 1:
        raise DefinitionError(f"shingle size must be >= 1, got {size}")
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    joined = "".join(texts)
    if joined.isascii():
        codes = np.frombuffer(joined.encode("ascii"), dtype=np.uint8)
    else:
        codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    n = len(codes)
    text_start = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(texts) else lengths
    text_end = text_start + lengths
    # prefix[i] = sum_{j<i} (c_j + 1) * P**j  and  inv[i] = P**-i, all modulo 2**64 (wrapping)
    powers, inv = _powers(n)
    with np.errstate(over="ignore"):
        prefix = np.concatenate([[_U64(0)], np.cumsum((codes.astype(_U64) + _U64(1)) * powers)])
    if unit == "char":
        counts = np.where(lengths > 0, np.maximum(lengths - size + 1, 1), 0)
        start, group = _segments(text_start, counts)
        end = np.minimum(start + size, text_end[group])
    elif unit == "word":
        is_space = codes == 32
        spaces = np.flatnonzero(is_space)
        # word starts: each text start (if non-empty) and each position after a space
        nonempty = lengths > 0
        w_start = np.sort(np.concatenate([text_start[nonempty], spaces + 1]))
        w_end = np.sort(np.concatenate([text_end[nonempty], spaces]))
        words_per_text = np.bincount(np.searchsorted(text_end, w_start, side="right"),
                                     minlength=len(texts))[: len(texts)]
        first_word = np.cumsum(words_per_text) - words_per_text
        counts = np.where(words_per_text > 0, np.maximum(words_per_text - size + 1, 1), 0)
        w_idx, group = _segments(first_word, counts)
        last = np.minimum(w_idx + size - 1, first_word[group] + words_per_text[group] - 1)
        start, end = w_start[w_idx], w_end[last]
    else:
        raise DefinitionError(f"shingle unit must be 'char' or 'word', got {unit!r}")
    with np.errstate(over="ignore"):
        h = (prefix[end] - prefix[start]) * inv[start]
        h = _mix(h ^ _U64(seed * 0x9E3779B97F4A7C15 % 2**64))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if unique and len(h):
        order = np.lexsort((h, group))
        h, group = h[order], group[order]
        keep = np.ones(len(h), dtype=bool)
        keep[1:] = (h[1:] != h[:-1]) | (group[1:] != group[:-1])
        h, group = h[keep], group[keep]
        offsets = np.concatenate([[0], np.cumsum(np.bincount(group, minlength=len(texts)))])
    return Shingles(offsets.astype(np.int64), h)


def _perms(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, size=num_perm, dtype=np.uint64) * _U64(2) + _U64(1)
    b = rng.integers(0, 2**63, size=num_perm, dtype=np.uint64)
    return a, b


def minhash(sh: Shingles, *, num_perm: int = 128, seed: int = 1, block: int = 1 << 17) -> np.ndarray:
    """MinHash signatures, shape (texts, num_perm), uint32; a text without shingles is all 0xFFFFFFFF.

    Hash function p maps shingle hash x to the top 32 bits of ``a_p * x + b_p`` modulo 2**64
    (multiply-add-shift, a 2-universal family).

    >>> sig = minhash(shingle(["hello world", "hello world", ""]), num_perm=4)
    >>> bool((sig[0] == sig[1]).all()), bool((sig[2] == 0xFFFFFFFF).all())
    (True, True)
    """
    a, b = _perms(num_perm, seed)
    n = len(sh.offsets) - 1
    # (perms, texts) layout: reduceat then runs along contiguous rows, several times faster
    sig = np.full((num_perm, n), _EMPTY, dtype=np.uint32)
    sizes = sh.sizes
    # Blocks of whole texts keep the (perms x shingles) temporaries cache-sized.
    per_block = max(1, block // max(num_perm, 1))
    a_col, b_col = a[:, None], b[:, None]
    i = 0
    while i < n:
        j = int(np.searchsorted(sh.offsets, sh.offsets[i] + per_block, side="right")) - 1
        j = min(max(j, i + 1), n)
        lo, hi = int(sh.offsets[i]), int(sh.offsets[j])
        if hi > lo:
            with np.errstate(over="ignore"):
                hv = a_col * sh.hashes[None, lo:hi]
                hv += b_col
            rows = np.arange(i, j)[sizes[i:j] > 0]
            # the min of the 64-bit values has the min of their top 32 bits: shift once, after
            sig[:, rows] = np.minimum.reduceat(hv, sh.offsets[rows] - lo, axis=1) >> _U64(32)
        i = j
    return sig.T


@lru_cache(maxsize=64)
def lsh_params(threshold: float, num_perm: int, recall_weight: float = 0.9) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false-positive and false-negative probability mass.

    A pair with Jaccard s becomes a candidate with probability 1 - (1 - s**rows)**bands.
    Candidates are verified exactly, so a false positive costs only time while a false negative
    is a missed duplicate: by default misses weigh 0.9 and false positives 0.1 (0.5 weighs
    them equally, the usual choice when candidates are not verified).

    >>> lsh_params(0.8, 128), lsh_params(0.8, 128, 0.5)
    ((14, 9), (9, 13))
    """
    if not 0 < threshold <= 1:
        raise DefinitionError(f"threshold must be in (0, 1], got {threshold}")
    grid = np.linspace(0, 1, 1001)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1 - (1 - grid ** rows) ** bands
            below, above = grid <= threshold, grid >= threshold
            fp = np.trapezoid(p[below], grid[below]) if below.sum() > 1 else 0.0
            fn = np.trapezoid(1 - p[above], grid[above]) if above.sum() > 1 else 0.0
            err = (1 - recall_weight) * fp + recall_weight * fn
            if err < best_err:
                best, best_err = (bands, rows), float(err)
    return best


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit hash per (text, band) of ``rows`` signature values; shape (texts, bands)."""
    mult = np.random.default_rng(12345).integers(1, 2**63, size=rows, dtype=np.uint64) * _U64(2) + _U64(1)
    out = np.empty((sig.shape[0], bands), dtype=_U64)
    for band in range(bands):
        part = sig[:, band * rows:(band + 1) * rows].astype(_U64)
        with np.errstate(over="ignore"):
            out[:, band] = _mix((part * mult[None, :]).sum(axis=1, dtype=_U64) + _U64(band))
    return out


def _band_candidates(hashes: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Pairs (i < j) of texts sharing at least one band hash, deduplicated."""
    idx_all = np.flatnonzero(valid)
    out: list[np.ndarray] = []
    for band in range(hashes.shape[1]):
        h = hashes[idx_all, band]
        order = np.argsort(h, kind="stable")
        hs, ids = h[order], idx_all[order]
        same = hs[1:] == hs[:-1]
        if not same.any():
            continue
        # runs of equal band hash: all pairs inside each run
        run_id = np.concatenate([[0], np.cumsum(~same)])
        run_len = np.bincount(run_id)
        d = 1
        while True:
            ok = np.zeros(len(ids), dtype=bool)
            ok[:-d] = run_id[d:] == run_id[:-d]
            if not ok.any():
                break
            pos = np.flatnonzero(ok)
            out.append(np.stack([ids[pos], ids[pos + d]], axis=1))
            d += 1
            if d > 64:  # a huge bucket: pair its members explicitly, once
                for r in np.flatnonzero(run_len > 65):
                    members = ids[run_id == r]
                    ii, jj = np.triu_indices(len(members), 65)
                    out.append(np.stack([members[ii], members[jj]], axis=1))
                break
    if not out:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(out).astype(np.int64)
    pairs.sort(axis=1)
    return np.unique(pairs, axis=0)


def jaccard_pairs(sh: Shingles, pairs: np.ndarray, *, chunk: int = 1 << 21) -> np.ndarray:
    """Exact Jaccard similarity of each pair of texts, from unique shingle sets (``unique=True``).

    >>> s = shingle(["abcd", "abce", "zzzz"], size=2, unique=True)
    >>> jaccard_pairs(s, np.array([[0, 1], [0, 2]])).round(3).tolist()
    [0.5, 0.0]
    """
    sizes = sh.sizes
    out = np.zeros(len(pairs), dtype=np.float64)
    lo = 0
    per_pair = sizes[pairs[:, 0]] + sizes[pairs[:, 1]] if len(pairs) else np.empty(0, np.int64)
    while lo < len(pairs):
        cum = np.cumsum(per_pair[lo:])
        hi = lo + max(1, int(np.searchsorted(cum, chunk, side="right")))
        p = pairs[lo:hi]
        members = np.concatenate([p[:, 0], p[:, 1]])
        pair_of = np.concatenate([np.arange(len(p)), np.arange(len(p))])
        item, g = _segments(sh.offsets[members], sizes[members])
        key, hv = pair_of[g], sh.hashes[item]
        order = np.lexsort((hv, key))
        key, hv = key[order], hv[order]
        dup = (key[1:] == key[:-1]) & (hv[1:] == hv[:-1])
        inter = np.bincount(key[1:][dup], minlength=len(p))
        union = sizes[p[:, 0]] + sizes[p[:, 1]] - inter
        out[lo:hi] = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        lo = hi
    return out


class NearDupOptions(BaseModel):
    """Settings shared by :func:`near_duplicates`, the cross-split check and :class:`NearDedup`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    threshold: float = Field(0.8, gt=0, le=1)
    shingle: int = Field(5, ge=1)
    unit: Unit = "char"
    num_perm: int = Field(128, ge=2, le=1024)
    seed: int = 1
    lowercase: bool = True
    recall_weight: float = Field(0.9, gt=0, lt=1)


@dataclass
class NearDuplicates:
    """Verified near-duplicate pairs among ``n`` texts.

    ``group[i]`` is the first text identical to text i after normalization (itself when unique);
    ``edges`` are verified pairs between such group representatives with their exact Jaccard
    ``similarity`` (each >= ``threshold``).
    """

    n: int
    threshold: float
    group: np.ndarray
    edges: np.ndarray
    similarity: np.ndarray
    candidates: int = 0
    empty: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @cached_property
    def _members(self) -> dict[int, np.ndarray]:
        reps, counts = np.unique(self.group, return_counts=True)
        multi = set(reps[counts > 1].tolist()) | set(self.edges.ravel().tolist())
        order = np.argsort(self.group, kind="stable")
        bounds = np.searchsorted(self.group[order], reps)
        ends = np.append(bounds[1:], len(order))
        return {int(r): order[b:e] for r, b, e in zip(reps, bounds, ends, strict=True) if int(r) in multi}

    def pairs(self) -> np.ndarray:
        """Every verified pair (i < j), identical copies included; shape (m, 2)."""
        out = []
        sims = []
        for r, members in self._members.items():
            if len(members) > 1 and not self.empty[r]:
                ii, jj = np.triu_indices(len(members), 1)
                out.append(np.stack([members[ii], members[jj]], axis=1))
                sims.append(np.ones(len(ii)))
        for (u, v), s in zip(self.edges.tolist(), self.similarity.tolist(), strict=True):
            mu, mv = self._members[u], self._members[v]
            out.append(np.stack(np.meshgrid(mu, mv, indexing="ij"), axis=-1).reshape(-1, 2))
            sims.append(np.full(len(mu) * len(mv), s))
        if not out:
            self._sims = np.zeros(0)
            return np.empty((0, 2), dtype=np.int64)
        pairs = np.sort(np.concatenate(out), axis=1)
        sim = np.concatenate(sims)
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        self._sims = sim[order]
        return pairs[order]

    def pair_similarities(self) -> np.ndarray:
        """Jaccard similarity of each row of :meth:`pairs` (same order)."""
        self.pairs()
        return self._sims

    def clusters(self) -> list[list[int]]:
        """Connected components of size >= 2 over verified pairs, each sorted, by first member."""
        parent = np.arange(self.n)
        parent[:] = self.group

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = int(parent[x])
            return x

        for u, v in self.edges.tolist():
            ru, rv = find(u), find(v)
            if ru != rv:
                parent[max(ru, rv)] = min(ru, rv)
        roots = np.array([find(i) for i in range(self.n)]) if self.n else np.zeros(0, np.int64)
        roots[self.empty] = np.flatnonzero(self.empty)
        comps: dict[int, list[int]] = {}
        for i, r in enumerate(roots.tolist()):
            comps.setdefault(r, []).append(i)
        return [c for c in comps.values() if len(c) > 1]

    def duplicate_of(self, order: Iterable[int] | None = None) -> np.ndarray:
        """For each text, the kept text it duplicates (-1 when kept).

        Texts are visited in ``order`` (default: input order); a text is dropped when it has a
        verified pair (Jaccard >= threshold) with an already kept text, and then points at the
        earliest-visited such text. So every dropped text is a near-duplicate of its kept one.
        """
        visit = np.arange(self.n) if order is None else np.asarray(list(order), dtype=np.int64)
        rank = np.empty(self.n, dtype=np.int64)
        rank[visit] = np.arange(len(visit))
        neighbours: dict[int, list[int]] = {}
        for i, j in self.pairs().tolist():
            neighbours.setdefault(i, []).append(j)
            neighbours.setdefault(j, []).append(i)
        out = np.full(self.n, -1, dtype=np.int64)
        kept: set[int] = set()
        for i in visit.tolist():
            earlier = [k for k in neighbours.get(i, ()) if k in kept]
            if earlier:
                out[i] = min(earlier, key=lambda k: rank[k])
            else:
                kept.add(i)
        return out

    def matches(self, query: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Query texts with a near-duplicate among reference texts (boolean masks over all texts).

        Returns (query index, one matching reference index, its similarity), one row per query
        text that has at least one match.
        """
        best: dict[int, tuple[int, float]] = {}
        for (i, j), s in zip(self.pairs().tolist(), self.pair_similarities().tolist(), strict=True):
            for a, b in ((i, j), (j, i)):
                if query[a] and reference[b] and (a not in best or s > best[a][1]):
                    best[a] = (b, s)
        keys = sorted(best)
        return (np.array(keys, dtype=np.int64), np.array([best[k][0] for k in keys], dtype=np.int64),
                np.array([best[k][1] for k in keys], dtype=np.float64))


def near_duplicates(texts: Sequence[Any], *, threshold: float = 0.8, shingle_size: int = 5,
                    unit: Unit = "char", num_perm: int = 128, seed: int = 1,
                    lowercase: bool = True, recall_weight: float = 0.9, bands: int | None = None,
                    rows: int | None = None) -> NearDuplicates:
    """Find pairs of texts whose shingle sets have Jaccard similarity >= ``threshold``.

    Nulls and empty texts have no shingles and are never near-duplicates. ``bands``/``rows``
    override the LSH banding (default: :func:`lsh_params` with ``recall_weight``).
    """
    opts = NearDupOptions(threshold=threshold, shingle=shingle_size, unit=unit, num_perm=num_perm,
                          seed=seed, lowercase=lowercase, recall_weight=recall_weight)
    norm = [normalize(t, lowercase=opts.lowercase) for t in texts]
    n = len(norm)
    empty = np.fromiter((not t for t in norm), dtype=bool, count=n)
    # identical normalized texts share one representative (their first occurrence)
    first: dict[str, int] = {}
    group = np.fromiter((first.setdefault(t, i) for i, t in enumerate(norm)), dtype=np.int64, count=n)
    reps = np.flatnonzero((group == np.arange(n)) & ~empty)
    if bands is None or rows is None:
        bands, rows = lsh_params(opts.threshold, opts.num_perm, opts.recall_weight)
    if bands * rows > opts.num_perm:
        raise DefinitionError(f"bands x rows = {bands * rows} exceeds num_perm = {opts.num_perm}")
    rep_texts = [norm[i] for i in reps]
    # signatures chunk by chunk, keeping only the band hashes: memory stays flat in n
    parts, sizes = [], []
    for lo in range(0, len(rep_texts), CHUNK):
        sh = shingle(rep_texts[lo:lo + CHUNK], size=opts.shingle, unit=opts.unit, seed=opts.seed)
        parts.append(band_hashes(minhash(sh, num_perm=opts.num_perm, seed=opts.seed), bands, rows))
        sizes.append(sh.sizes)
    hashes = np.concatenate(parts) if parts else np.empty((0, bands), dtype=_U64)
    valid = np.concatenate(sizes) > 0 if sizes else np.zeros(0, dtype=bool)
    cand = _band_candidates(hashes, valid)
    if len(cand):
        involved = np.unique(cand)
        local = np.searchsorted(involved, cand)
        sub = shingle([rep_texts[i] for i in involved], size=opts.shingle, unit=opts.unit,
                      seed=opts.seed, unique=True)
        sim = jaccard_pairs(sub, local)
        keep = sim >= opts.threshold - 1e-12
        edges, sims = reps[cand[keep]], sim[keep]
    else:
        edges, sims = np.empty((0, 2), dtype=np.int64), np.zeros(0)
    return NearDuplicates(n, opts.threshold, group, edges, sims, candidates=len(cand), empty=empty)


class NearDedup(OnColumn):
    """Feature-set step: drop records whose ``column`` text is a near-duplicate of a kept record's.

    Records are visited by event time (``keep="first"``: earliest first, ties by arrival;
    ``"last"``: latest first); a record is dropped when its text has Jaccard >= ``threshold``
    with an already kept record, and the duplicates log points at that kept record, so the
    accounting (input = output + quarantined + duplicates) still reconciles.

    >>> NearDedup("title", threshold=0.9).id
    'near_dedup:title'
    """

    kind: Literal["near_dedup"] = "near_dedup"
    threshold: float = Field(0.8, gt=0, le=1)
    shingle: int = Field(5, ge=1)
    unit: Unit = "char"
    num_perm: int = Field(128, ge=2, le=1024)
    seed: int = 1
    keep: Literal["first", "last"] = "first"

    @property
    def learns(self) -> bool:
        return False

    def apply(self, con: Any, current: str, name: str, *, source: str, feature_set: str,
              event_time: str | None) -> int:
        """Batch form on DuckDB: ``name`` gets the kept rows of ``current``; returns the dropped count.

        Dropped records are appended to ``__duplicates`` with the kept record's ``__seq``.
        """
        from evenflow.core.sqltext import ident, literal

        col, et = ident(self.column), ident(event_time) if event_time else "__seq"
        desc = " DESC" if self.keep == "last" else ""
        rows = con.sql(f"SELECT __seq, CAST({col} AS VARCHAR) AS t FROM {ident(current)} "
                       f"ORDER BY {et}{desc}, __seq{desc}").fetchall()
        seqs = np.array([r[0] for r in rows], dtype=np.int64)
        nd = near_duplicates([r[1] for r in rows], threshold=self.threshold, shingle_size=self.shingle,
                             unit=self.unit, num_perm=self.num_perm, seed=self.seed)
        kept_of = nd.duplicate_of()
        dropped = np.flatnonzero(kept_of >= 0)
        log = pa.table({"record": seqs[dropped], "kept_record": seqs[kept_of[dropped]],
                        "text": [rows[i][1] for i in dropped.tolist()]})
        con.register("__near_dup_log", log)
        try:
            con.execute(f"INSERT INTO __duplicates SELECT {literal(source)}, {literal(feature_set)}, "
                        f"record, kept_record, {literal(self.id)}, "
                        f"CAST(json_object({literal(self.column)}, text) AS VARCHAR) FROM __near_dup_log")
            con.execute(f"CREATE OR REPLACE TEMP TABLE {ident(name)} AS SELECT * FROM {ident(current)} "
                        f"WHERE __seq NOT IN (SELECT record FROM __near_dup_log)")
        finally:
            con.unregister("__near_dup_log")
        return len(dropped)
