"""Seeded synthetic card-transaction generator for the evenflow fraud example.

Usage::

    python examples/fraud/generate.py --out DIR --n 100000 --seed 7

Writes two files into ``DIR``:

``transactions.csv``
    The raw event history, as an upstream system would export it. Columns:
    ``transaction_id, card_id, merchant_id, amount, ts, lat, lon, channel, mcc``.
    Rows are roughly (not perfectly) in time order. With ``dirty=True`` it also
    contains injected problems: exact duplicate lines, empty amounts, negative
    amounts, malformed timestamps, naive timestamps (no UTC offset) and huge but
    valid outlier amounts. Most timestamps end in ``+00:00``; a few use ``Z`` and
    a few use the local offset of the transaction's city (``+01:00``/``+02:00``),
    always denoting the correct instant.

``labels.parquet``
    One row per clean, unique transaction (injected dirty rows and duplicate
    lines excluded; outliers are clean and included as legit). Columns:
    ``transaction_id, card_id, merchant_id, ts, amount, lat, lon, channel,
    is_fraud, label_time`` where ``ts``/``label_time`` are ``timestamp[us, UTC]``.
    ``label_time`` is when the label became known: chargeback time
    ``ts + U(2, 40) days`` for fraud, ``ts + 30 days`` (maturity) for legit.

Fraud patterns (about 1.5% of rows), all visible in windowed per-card features:
bursts of 5-15 high-value transactions within an hour at unusual high-risk
merchants; card testing (5-20 tiny amounts within minutes, mostly ecom, sometimes
followed by a large one); geographic jumps (>1200 km from the previous legit
transaction within ~2 hours); night-time spikes between 00:00 and 05:00 UTC.

The total number of CSV rows equals ``n_transactions`` (duplicate lines are
included in that count). This module deliberately does not import evenflow.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

US_PER_S = 1_000_000
US_PER_MIN = 60 * US_PER_S
US_PER_H = 60 * US_PER_MIN
US_PER_DAY = 24 * US_PER_H

# name, lat, lon, UTC offset (hours, no DST), weight for card homes
CITIES = [
    ("London", 51.5074, -0.1278, 0, 0.16),
    ("Dublin", 53.3498, -6.2603, 0, 0.05),
    ("Lisbon", 38.7223, -9.1393, 0, 0.05),
    ("Paris", 48.8566, 2.3522, 1, 0.13),
    ("Madrid", 40.4168, -3.7038, 1, 0.09),
    ("Berlin", 52.5200, 13.4050, 1, 0.12),
    ("Rome", 41.9028, 12.4964, 1, 0.08),
    ("Amsterdam", 52.3676, 4.9041, 1, 0.07),
    ("Stockholm", 59.3293, 18.0686, 1, 0.06),
    ("Warsaw", 52.2297, 21.0122, 1, 0.07),
    ("Athens", 37.9838, 23.7275, 2, 0.06),
    ("Helsinki", 60.1699, 24.9384, 2, 0.06),
]
CITY_LAT = np.array([c[1] for c in CITIES])
CITY_LON = np.array([c[2] for c in CITIES])
CITY_TZ = np.array([c[3] for c in CITIES], dtype=np.int64)
CITY_W = np.array([c[4] for c in CITIES])
CITY_W = CITY_W / CITY_W.sum()
N_CITIES = len(CITIES)

# mcc, merchant share, amount multiplier, probability the merchant is ecom
MCCS = [
    ("5411", 0.22, 1.0, 0.05),  # grocery
    ("5812", 0.14, 0.8, 0.05),  # restaurants
    ("5814", 0.10, 0.3, 0.05),  # fast food
    ("5541", 0.09, 1.2, 0.00),  # fuel
    ("5912", 0.06, 0.6, 0.10),  # pharmacy
    ("5311", 0.06, 1.8, 0.30),  # department stores
    ("5999", 0.07, 1.0, 0.50),  # misc retail
    ("5732", 0.05, 4.0, 0.50),  # electronics
    ("5944", 0.03, 5.0, 0.30),  # jewelry
    ("4111", 0.05, 0.2, 0.30),  # transit
    ("7011", 0.03, 5.0, 0.60),  # hotels
    ("5967", 0.03, 0.9, 1.00),  # direct marketing
    ("4829", 0.02, 3.0, 0.80),  # money transfer
    ("6011", 0.05, 2.0, 0.00),  # ATM cash
]
MCC_CODES = np.array([m[0] for m in MCCS])
MCC_W = np.array([m[1] for m in MCCS])
MCC_W = MCC_W / MCC_W.sum()
MCC_MULT = np.array([m[2] for m in MCCS])
MCC_ECOM = np.array([m[3] for m in MCCS])
MCC_ATM = int(np.flatnonzero(MCC_CODES == "6011")[0])
HIGH_RISK = np.isin(MCC_CODES, ["5732", "5944", "5967", "4829", "5999", "7011"])
NIGHT_RISK = np.isin(MCC_CODES, ["6011", "5732", "5944"])

CHANNELS = np.array(["pos", "ecom", "atm"])
POS, ECOM, ATM = 0, 1, 2

# local-time hour weights for legit activity (daytime weighted)
HOUR_W = np.array([0.5, 0.3, 0.2, 0.15, 0.15, 0.3, 1, 2, 3.5, 4.5, 5, 5.5,
                   6.5, 6, 5.5, 5, 5.5, 6.5, 7, 6.5, 5, 3.5, 2, 1], dtype=float)
HOUR_W = HOUR_W / HOUR_W.sum()

MALFORMED_TS = np.array([
    "2026-13-45 99:00", "not a time", "2026-02-30T25:61:00+00:00",
    "31/01/2026 10:00", "2026-01-0510:00:00", "N/A", "2026-1-5T7:3",
    "yesterday", "2026-00-00T00:00:00+00:00", "12:30:00",
])

# dirty fractions (of n_transactions)
FRAC_DUP = 0.010
FRAC_MISSING = 0.003
FRAC_NEGATIVE = 0.003
FRAC_MALFORMED = 0.003
FRAC_NAIVE = 0.003
FRAC_OUTLIER = 0.002

FRAUD_RATE = 0.015
# pattern: (share of fraud rows, mean fraud rows per event)
FRAUD_MIX = {"burst": (0.35, 10.0), "testing": (0.30, 13.1), "geo": (0.15, 2.0), "night": (0.20, 4.0)}


def _haversine_km(lat1, lon1, lat2, lon2):
    lat1, lon1, lat2, lon2 = map(np.radians, (lat1, lon1, lat2, lon2))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * np.arcsin(np.sqrt(a))


CITY_DIST = _haversine_km(CITY_LAT[:, None], CITY_LON[:, None], CITY_LAT[None, :], CITY_LON[None, :])


def _expand(sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For events with ``sizes`` rows: (event index per row, position within event)."""
    ev = np.repeat(np.arange(len(sizes)), sizes)
    starts = np.cumsum(sizes) - sizes
    pos = np.arange(int(sizes.sum())) - np.repeat(starts, sizes)
    return ev, pos


def _group_cumsum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Cumulative sum of ``values`` restarting at each event boundary."""
    cs = np.cumsum(values)
    ends = np.cumsum(sizes)
    base = np.concatenate([[0], cs[ends[:-1] - 1]]) if len(sizes) else np.zeros(0, values.dtype)
    return cs - np.repeat(base, sizes)


class _Pool:
    """Pick random merchants from a subset, by city (with fallbacks)."""

    def __init__(self, mask: np.ndarray, m_city: np.ndarray, fallback: _Pool | None = None):
        idx = np.flatnonzero(mask)
        if len(idx) == 0:
            if fallback is None:
                raise ValueError("empty merchant pool")
            idx = fallback.idx
        order = np.argsort(m_city[idx], kind="stable")
        self.idx = idx[order]
        self.counts = np.bincount(m_city[self.idx], minlength=N_CITIES)
        self.offsets = np.cumsum(self.counts) - self.counts
        self.fallback = fallback

    def any(self, rng, n):
        return self.idx[rng.integers(0, len(self.idx), n)]

    def in_city(self, rng, city):
        city = np.asarray(city)
        out = np.empty(len(city), dtype=np.int64)
        cnt = self.counts[city]
        ok = cnt > 0
        u = rng.random(len(city))
        out[ok] = self.idx[self.offsets[city[ok]] + (u[ok] * cnt[ok]).astype(np.int64)]
        if (~ok).any():
            if self.fallback is not None:
                out[~ok] = self.fallback.in_city(rng, city[~ok])
            else:
                out[~ok] = self.any(rng, int((~ok).sum()))
        return out


def _fixed(scaled: np.ndarray, decimals: int) -> pl.Series:
    """Format integers scaled by 10**decimals as fixed-point decimal strings ("-12.30")."""
    q = 10 ** decimals
    scaled = np.asarray(scaled, np.int64)
    a = pl.lit(pl.Series("a", np.abs(scaled)))
    return pl.select(
        pl.when(pl.lit(pl.Series("s", scaled)) < 0).then(pl.lit("-")).otherwise(pl.lit(""))
        + (a // q).cast(pl.Utf8) + pl.lit(".") + (a % q).cast(pl.Utf8).str.zfill(decimals)
    ).to_series()


def _ids(prefix: str, nums: np.ndarray, width: int) -> pl.Series:
    """Zero-padded string ids: prefix + number padded to width."""
    num = pl.lit(pl.Series("n", np.asarray(nums, np.int64))).cast(pl.Utf8)
    return pl.select(pl.lit(prefix) + num.str.zfill(width)).to_series()


def _arrow_str(s: pl.Series, idx: np.ndarray) -> pa.Array:
    return s.gather(idx).to_arrow().cast(pa.string())


def generate(out_dir: str | Path, *, n_transactions: int = 1_000_000, n_cards: int | None = None,
             n_merchants: int | None = None, seed: int = 7, start: str = "2026-01-01",
             days: int = 120, dirty: bool = True) -> dict[str, int]:
    """Generate ``transactions.csv`` and ``labels.parquet`` into ``out_dir``; return counts."""
    if n_transactions < 1000:
        raise ValueError("n_transactions must be >= 1000")
    if days < 3:
        raise ValueError("days must be >= 3")
    n_cards = max(50, n_transactions // 20) if n_cards is None else int(n_cards)
    n_merchants = max(20, n_transactions // 200) if n_merchants is None else int(n_merchants)
    if n_cards < 1 or n_merchants < N_CITIES:
        raise ValueError(f"need n_cards >= 1 and n_merchants >= {N_CITIES}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    t_start = int(np.datetime64(start, "us").astype(np.int64))
    span = days * US_PER_DAY
    t_end = t_start + span

    # ---------------- merchants ----------------
    m_city = np.concatenate([np.arange(N_CITIES),  # every city gets at least one merchant
                             rng.choice(N_CITIES, n_merchants - N_CITIES, p=CITY_W)])
    m_mcc = rng.choice(len(MCCS), n_merchants, p=MCC_W)
    m_lat = CITY_LAT[m_city] + rng.normal(0, 0.08, n_merchants)
    m_lon = CITY_LON[m_city] + rng.normal(0, 0.12, n_merchants)
    m_chan = np.where(rng.random(n_merchants) < MCC_ECOM[m_mcc], ECOM, POS)
    m_chan[m_mcc == MCC_ATM] = ATM

    pool_all = _Pool(np.ones(n_merchants, bool), m_city)
    pool_ecom = _Pool(m_chan == ECOM, m_city, pool_all)
    pool_risky_ecom = _Pool(HIGH_RISK[m_mcc] & (m_chan == ECOM), m_city, pool_ecom)
    pool_present = _Pool(m_chan != ECOM, m_city, pool_all)
    pool_pos = _Pool(m_chan == POS, m_city, pool_present)
    pool_night = _Pool(NIGHT_RISK[m_mcc] & (m_chan != ECOM), m_city, pool_present)

    # ---------------- cards ----------------
    c_city = rng.choice(N_CITIES, n_cards, p=CITY_W)
    c_lat = CITY_LAT[c_city] + rng.normal(0, 0.08, n_cards)
    c_lon = CITY_LON[c_city] + rng.normal(0, 0.12, n_cards)
    c_level = rng.lognormal(np.log(35.0), 0.6, n_cards)
    c_activity = rng.gamma(2.0, 1.0, n_cards)
    c_activity /= c_activity.sum()
    # a few cardholders travel: a trip of 3-8 days to another city
    c_trip = rng.random(n_cards) < 0.03
    c_trip_city = (c_city + rng.integers(1, N_CITIES, n_cards)) % N_CITIES
    c_trip_start = rng.integers(0, max(1, days - 8), n_cards)
    c_trip_end = c_trip_start + rng.integers(3, 9, n_cards)

    def amounts(level, mult, sigma, size):
        return level * mult * rng.lognormal(0.0, sigma, size)

    def atm_round(a):
        return np.clip(np.round(a / 20.0) * 20.0, 20.0, 2000.0)

    def fraud_t0(n):
        """Event start times for fraud; ~40% start during the 00:00-05:00 UTC night."""
        day = rng.integers(0, days - 1, n)
        night = rng.random(n) < 0.4
        tod = np.where(night, rng.integers(0, 4 * US_PER_H, n), rng.integers(0, US_PER_DAY, n))
        return t_start + day * US_PER_DAY + tod

    n_dup = max(1, round(FRAC_DUP * n_transactions)) if dirty else 0
    n_base = n_transactions - n_dup
    fraud_target = FRAUD_RATE * n_base
    ev_n = {k: max(1, round(share * fraud_target / mean)) for k, (share, mean) in FRAUD_MIX.items()}

    parts = []  # dicts of arrays: card, merchant, ts, amount, lat, lon (lat/lon None -> by channel)

    def part(card, merch, ts, amount, is_fraud, loc_lat=None, loc_lon=None):
        parts.append(dict(card=card, merch=merch, ts=ts, amount=amount,
                          fraud=np.full(len(card), is_fraud, np.int8), loc_lat=loc_lat, loc_lon=loc_lon))

    # ---- fraud: bursts (5-15 txns within an hour at unusual high-risk merchants) ----
    ne = ev_n["burst"]
    sizes = rng.integers(5, 16, ne)
    ev, _ = _expand(sizes)
    e_card = rng.integers(0, n_cards, ne)
    e_t0 = fraud_t0(ne)
    e_city = rng.integers(0, N_CITIES, ne)  # fraudster location
    card = e_card[ev]
    ts = e_t0[ev] + rng.integers(0, US_PER_H, len(ev))
    merch = pool_risky_ecom.any(rng, len(ev))
    amt = c_level[card] * rng.uniform(3, 10, len(ev)) * rng.lognormal(0, 0.3, len(ev))
    amt = np.where(m_chan[merch] == ATM, atm_round(amt), amt)
    part(card, merch, ts, amt, 1,
         CITY_LAT[e_city[ev]] + rng.normal(0, 0.05, len(ev)), CITY_LON[e_city[ev]] + rng.normal(0, 0.07, len(ev)))

    # ---- fraud: card testing (5-20 tiny amounts within minutes, maybe then a big one) ----
    ne = ev_n["testing"]
    sizes = rng.integers(5, 21, ne)
    ev, pos = _expand(sizes)
    e_card = rng.integers(0, n_cards, ne)
    e_t0 = fraud_t0(ne)
    e_city = rng.integers(0, N_CITIES, ne)
    e_ecom = rng.random(ne) < 0.85
    e_merch = np.where(e_ecom, pool_ecom.any(rng, ne), pool_pos.in_city(rng, c_city[e_card]))
    gap_mean = rng.uniform(5, 40, ne)[ev] * US_PER_S
    gaps = np.where(pos == 0, 0, rng.exponential(1.0, len(ev)) * gap_mean).astype(np.int64)
    ts = e_t0[ev] + _group_cumsum(gaps, sizes)
    card = e_card[ev]
    merch = e_merch[ev]
    amt = rng.uniform(0.5, 3.0, len(ev))
    f_lat = CITY_LAT[e_city[ev]] + rng.normal(0, 0.05, len(ev))
    f_lon = CITY_LON[e_city[ev]] + rng.normal(0, 0.07, len(ev))
    part(card, merch, ts, amt, 1, f_lat, f_lon)
    big = rng.random(ne) < 0.6
    last_ts = ts[np.cumsum(sizes) - 1]
    bcard = e_card[big]
    bmerch = pool_risky_ecom.any(rng, int(big.sum()))
    bts = last_ts[big] + rng.integers(2 * US_PER_MIN, 30 * US_PER_MIN, int(big.sum()))
    bamt = c_level[bcard] * rng.uniform(5, 20, len(bcard))
    bamt = np.where(m_chan[bmerch] == ATM, atm_round(bamt), bamt)
    part(bcard, bmerch, bts, bamt, 1,
         CITY_LAT[e_city[big]] + rng.normal(0, 0.05, len(bcard)),
         CITY_LON[e_city[big]] + rng.normal(0, 0.07, len(bcard)))

    # ---- fraud: geographic jumps (legit anchor near home, then card-present txns >1200 km away) ----
    ne = ev_n["geo"]
    e_card = rng.integers(0, n_cards, ne)
    home = c_city[e_card]
    far = CITY_DIST[home] > 1200.0
    far_w = far / far.sum(axis=1, keepdims=True)
    e_far = (rng.random(ne)[:, None] > np.cumsum(far_w, axis=1)).sum(axis=1)
    e_far = np.minimum(e_far, N_CITIES - 1)
    day = rng.integers(0, days - 1, ne)
    local_h = rng.choice(24, ne, p=HOUR_W)
    e_t0 = (t_start + day * US_PER_DAY + (local_h - CITY_TZ[home]) * US_PER_H
            + rng.integers(0, US_PER_H, ne))
    e_t0 = t_start + (e_t0 - t_start) % (span - US_PER_DAY)
    amerch = pool_all.in_city(rng, home)
    aamt = amounts(c_level[e_card], MCC_MULT[m_mcc[amerch]], 0.5, ne)
    aamt = np.where(m_chan[amerch] == ATM, atm_round(aamt), aamt)
    part(e_card, amerch, e_t0, aamt, 0)
    sizes = rng.integers(1, 4, ne)
    ev, pos = _expand(sizes)
    gaps = np.where(pos == 0, rng.integers(10 * US_PER_MIN, 2 * US_PER_H, len(ev)),
                    rng.integers(US_PER_MIN, 20 * US_PER_MIN, len(ev)))
    ts = e_t0[ev] + _group_cumsum(gaps, sizes)
    card = e_card[ev]
    merch = pool_present.in_city(rng, e_far[ev])
    amt = c_level[card] * rng.uniform(2, 8, len(ev))
    amt = np.where(m_chan[merch] == ATM, atm_round(amt), amt)
    part(card, merch, ts, amt, 1)

    # ---- fraud: night-time spikes (00:00-05:00 UTC, ATM/electronics near home) ----
    ne = ev_n["night"]
    sizes = rng.integers(2, 7, ne)
    ev, pos = _expand(sizes)
    e_card = rng.integers(0, n_cards, ne)
    day = rng.integers(0, days - 1, ne)
    e_t0 = t_start + day * US_PER_DAY + rng.integers(0, 3 * US_PER_H, ne)
    gaps = np.where(pos == 0, 0, rng.integers(2 * US_PER_MIN, 25 * US_PER_MIN, len(ev)))
    ts = e_t0[ev] + _group_cumsum(gaps, sizes)
    night_end = t_start + day[ev] * US_PER_DAY + 5 * US_PER_H - US_PER_S
    ts = np.minimum(ts, night_end - rng.integers(0, US_PER_MIN, len(ev)))
    card = e_card[ev]
    merch = pool_night.in_city(rng, c_city[card])
    amt = c_level[card] * rng.uniform(3, 10, len(ev))
    amt = np.where(m_chan[merch] == ATM, atm_round(amt), amt)
    part(card, merch, ts, amt, 1)

    # ---------------- legit ----------------
    n_other = sum(len(p["card"]) for p in parts)
    n_legit = n_base - n_other
    if n_legit <= 0:
        raise ValueError("n_transactions too small")
    card = rng.choice(n_cards, n_legit, p=c_activity)
    day = rng.integers(0, days, n_legit)
    on_trip = c_trip[card] & (day >= c_trip_start[card]) & (day < c_trip_end[card])
    city = np.where(on_trip, c_trip_city[card], c_city[card])
    local_h = rng.choice(24, n_legit, p=HOUR_W)
    ts = (t_start + day * US_PER_DAY + (local_h - CITY_TZ[city]) * US_PER_H
          + rng.integers(0, US_PER_H, n_legit))
    ts = t_start + (ts - t_start) % span
    merch = pool_all.in_city(rng, city)
    amt = amounts(c_level[card], MCC_MULT[m_mcc[merch]], 0.6, n_legit)
    amt = np.where(m_chan[merch] == ATM, atm_round(amt), amt)
    cur_lat = np.where(on_trip, CITY_LAT[city] + rng.normal(0, 0.05, n_legit), c_lat[card])
    cur_lon = np.where(on_trip, CITY_LON[city] + rng.normal(0, 0.07, n_legit), c_lon[card])
    part(card, merch, ts, amt, 0, cur_lat, cur_lon)

    # ---------------- assemble ----------------
    card = np.concatenate([p["card"] for p in parts])
    merch = np.concatenate([p["merch"] for p in parts])
    ts = np.concatenate([p["ts"] for p in parts]).astype(np.int64)
    amt = np.concatenate([p["amount"] for p in parts])
    fraud = np.concatenate([p["fraud"] for p in parts])
    # location: card-present -> at the merchant; ecom -> where the shopper is
    shop_lat = np.concatenate([c_lat[p["card"]] if p["loc_lat"] is None else p["loc_lat"] for p in parts])
    shop_lon = np.concatenate([c_lon[p["card"]] if p["loc_lon"] is None else p["loc_lon"] for p in parts])
    chan = m_chan[merch]
    n = len(card)
    present = chan != ECOM
    lat = np.where(present, m_lat[merch] + rng.normal(0, 0.002, n), shop_lat)
    lon = np.where(present, m_lon[merch] + rng.normal(0, 0.003, n), shop_lon)
    ts = np.clip(ts, t_start, t_end - 1)

    order = np.lexsort((rng.random(n), ts))
    card, merch, ts, amt, fraud, lat, lon, chan = (a[order] for a in (card, merch, ts, amt, fraud, lat, lon, chan))
    cents = np.maximum(np.round(amt * 100), 1).astype(np.int64)
    ulat = np.round(lat * 1e6).astype(np.int64)
    ulon = np.round(lon * 1e6).astype(np.int64)

    label_time = np.where(fraud == 1, ts + rng.integers(2 * US_PER_DAY, 40 * US_PER_DAY + 1, n),
                          ts + 30 * US_PER_DAY)

    # ---------------- dirty injection (CSV only) ----------------
    kind = np.zeros(n, np.int8)  # 0 clean, 1 missing, 2 negative, 3 malformed, 4 naive, 5 outlier
    if dirty:
        legit_idx = np.flatnonzero(fraud == 0)
        fracs = [FRAC_MISSING, FRAC_NEGATIVE, FRAC_MALFORMED, FRAC_NAIVE, FRAC_OUTLIER]
        ks = [max(1, round(f * n_transactions)) for f in fracs]
        chosen = rng.choice(legit_idx, sum(ks), replace=False)
        kind[chosen] = np.repeat(np.arange(1, 6, dtype=np.int8), ks)
        out_idx = np.flatnonzero(kind == 5)
        cents[out_idx] = np.round(rng.uniform(1e6, 1e7, len(out_idx)) * 100).astype(np.int64)
    clean = (kind == 0) | (kind == 5)

    # ---------------- CSV strings ----------------
    tid = _ids("t", np.arange(1, n + 1), max(8, len(str(n))))
    cid = _ids("c", card, max(6, len(str(n_cards - 1))))
    mid = _ids("m", merch, max(5, len(str(n_merchants - 1))))
    dt = pl.Series("ts", ts).cast(pl.Datetime("us"))
    iso = dt.dt.to_string("%Y-%m-%dT%H:%M:%S%.6f")
    # a few rows carry the local offset of the merchant's city (+01:00/+02:00; +02:00 for UTC cities)
    tz_h = CITY_TZ[m_city[merch]]
    tz_h = np.where(tz_h == 0, 2, tz_h)
    local_iso = (pl.Series("l", ts + tz_h * US_PER_H).cast(pl.Datetime("us"))
                 .dt.to_string("%Y-%m-%dT%H:%M:%S%.6f"))
    variant = rng.random(n)
    df = pl.DataFrame({
        "transaction_id": tid, "card_id": cid, "merchant_id": mid,
        "iso": iso, "local": local_iso, "naive": dt.dt.to_string("%Y-%m-%d %H:%M:%S"),
        "mal": MALFORMED_TS[rng.integers(0, len(MALFORMED_TS), n)],
        "tz": np.where(tz_h == 1, "+01:00", "+02:00"),
        "var": np.where(variant < 0.90, 0, np.where(variant < 0.95, 1, 2)).astype(np.int8),
        "kind": kind,
        "amount_txt": _fixed(np.where(kind == 2, -cents, cents), 2),
        "lat": _fixed(ulat, 6), "lon": _fixed(ulon, 6),
        "channel": CHANNELS[chan], "mcc": MCC_CODES[m_mcc[merch]],
    }).select(
        "transaction_id", "card_id", "merchant_id",
        amount=pl.when(pl.col("kind") == 1).then(pl.lit(None, pl.Utf8)).otherwise(pl.col("amount_txt")),
        ts=pl.when(pl.col("kind") == 3).then(pl.col("mal"))
        .when(pl.col("kind") == 4).then(pl.col("naive"))
        .when(pl.col("var") == 0).then(pl.col("iso") + pl.lit("+00:00"))
        .when(pl.col("var") == 1).then(pl.col("iso") + pl.lit("Z"))
        .otherwise(pl.col("local") + pl.col("tz")),
        lat="lat", lon="lon", channel="channel", mcc="mcc",
    )

    # duplicates: exact copies of clean lines, placed near the original
    pos_key = np.arange(n, dtype=np.float64)
    if n_dup:
        dup_src = rng.choice(np.flatnonzero(clean), n_dup, replace=False)
        df = pl.concat([df, df[dup_src]])
        pos_key = np.concatenate([pos_key, dup_src + rng.uniform(0.5, 20, n_dup)])
    # roughly time ordered: jitter positions so rows get locally out of order
    key = pos_key + rng.uniform(0, 64, len(pos_key))
    csv_order = np.argsort(key, kind="stable")
    df = df[csv_order]
    df.write_csv(out_dir / "transactions.csv", quote_style="necessary", null_value="")

    # ---------------- labels ----------------
    sel = np.flatnonzero(clean)
    labels = pa.table({
        "transaction_id": _arrow_str(tid, sel),
        "card_id": _arrow_str(cid, sel),
        "merchant_id": _arrow_str(mid, sel),
        "ts": pa.array(ts[sel], type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "amount": pa.array(cents[sel] / 100.0, type=pa.float64()),
        "lat": pa.array(ulat[sel] / 1e6, type=pa.float64()),
        "lon": pa.array(ulon[sel] / 1e6, type=pa.float64()),
        "channel": pa.array(CHANNELS[chan[sel]]),
        "is_fraud": pa.array(fraud[sel].astype(np.int64)),
        "label_time": pa.array(label_time[sel], type=pa.int64()).cast(pa.timestamp("us", tz="UTC")),
    })
    pq.write_table(labels, out_dir / "labels.parquet", compression="zstd")

    return {
        "transactions": int(df.height),
        "labels": int(labels.num_rows),
        "fraud": int(fraud[sel].sum()),
        "duplicates": int(n_dup),
        "dirty": int((kind != 0).sum()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate synthetic card transactions for the fraud example.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--n", type=int, default=1_000_000, help="number of CSV rows (default 1,000,000)")
    ap.add_argument("--cards", type=int, default=None, help="number of cards (default max(50, n//20))")
    ap.add_argument("--merchants", type=int, default=None, help="number of merchants (default max(20, n//200))")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--start", default="2026-01-01", help="first day (UTC)")
    ap.add_argument("--days", type=int, default=120)
    ap.add_argument("--clean", action="store_true", help="do not inject dirty rows")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    counts = generate(args.out, n_transactions=args.n, n_cards=args.cards, n_merchants=args.merchants,
                      seed=args.seed, start=args.start, days=args.days, dirty=not args.clean)
    dt = time.perf_counter() - t0
    print(" ".join(f"{k}={v}" for k, v in counts.items()) + f" seconds={dt:.2f}")


if __name__ == "__main__":
    main()
