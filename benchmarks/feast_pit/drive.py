"""Driver: Feast point-in-time join benchmark + DuckDB ASOF correctness reference.

Runs with the project's .venv/bin/python (numpy, pyarrow, duckdb). For every
(size, key distribution) it
  1. generates data with make_data.py (cached in --data-root),
  2. runs feast_run.py in the Feast venv once per offline store as a subprocess
     with a wall-clock limit (--timeout) and a memory cap (RLIMIT_AS via
     preexec_fn + an RSS watchdog that SIGKILLs the process tree above --mem-gb),
  3. computes the reference with DuckDB `ASOF LEFT JOIN` (features.ts <= entity.ts,
     same card_id; label_id is the unique row id) and compares Feast's output
     against it: entity rows dropped / duplicated, and exact f1..f4 agreement on
     rows present in both.
Results are merged into results_feast.json (keyed by store/keys/size/seed) after
every run, so the driver can be run in stages.

Example:
  .venv/bin/python benchmarks/feast_pit/drive.py --sizes 100k --keys zipf,uniform
  .venv/bin/python benchmarks/feast_pit/drive.py --sizes 300k,1m --keys uniform
  .venv/bin/python benchmarks/feast_pit/drive.py --table     # markdown table of results_feast.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
FEAST_PY = os.path.join(REPO, "benchmarks", ".venvs", "feast", "bin", "python")
RESULTS = os.path.join(HERE, "results_feast.json")


def parse_size(s: str) -> int:
    s = s.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "km" else s) * mult)


def fmt_size(n: int) -> str:
    if n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n % 1_000 == 0:
        return f"{n // 1_000}k"
    return str(n)


# ---------------------------------------------------------------- process tree RSS
def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out.extend(int(x) for x in fh.read().split())
    except OSError:
        pass
    return out


def tree_rss_mb(pid: int) -> float:
    total, stack, seen = 0, [pid], set()
    while stack:
        p = stack.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            continue
        stack.extend(_children(p))
    return total / 2**20


def run_limited(cmd: list[str], timeout: float, mem_gb: float, as_gb: float, env: dict | None = None) -> dict:
    """Run cmd; kill on timeout or when tree RSS exceeds mem_gb. Returns status dict."""

    def preexec() -> None:
        os.setsid()
        if as_gb > 0:
            lim = int(as_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec, env=env)
    state = {"peak_tree_rss_mb": 0.0, "killed": None}

    def watch() -> None:
        while proc.poll() is None:
            rss = tree_rss_mb(proc.pid)
            state["peak_tree_rss_mb"] = max(state["peak_tree_rss_mb"], rss)
            reason = None
            if rss > mem_gb * 1024:
                reason = "OOM"
            elif time.time() - t0 > timeout:
                reason = "timeout"
            if reason:
                state["killed"] = reason
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return
            time.sleep(0.1)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    stdout, stderr = proc.communicate()
    th.join()
    return {
        "rc": proc.returncode,
        "stdout": stdout,
        "stderr": stderr,
        "wall": time.time() - t0,
        "killed": state["killed"],
        "peak_tree_rss_mb": round(state["peak_tree_rss_mb"], 1),
    }


OOM_MARKERS = ("MemoryError", "Out of Memory", "OutOfMemory", "bad_alloc", "Cannot allocate memory", "Unable to allocate", "ArrowMemoryError")


def classify(r: dict) -> str:
    if r["killed"]:
        return r["killed"]
    if r["rc"] == 0:
        return "ok"
    if r["rc"] in (-signal.SIGKILL, 137):  # kernel OOM killer
        return "OOM"
    if any(m in r["stderr"] for m in OOM_MARKERS):
        return "OOM"
    return "error"


# ---------------------------------------------------------------- reference + comparison
def reference(data_dir: str) -> dict:
    import duckdb

    ref_path = os.path.join(data_dir, "reference.parquet")
    con = duckdb.connect()
    t0 = time.perf_counter()
    con.execute(
        f"""
        COPY (
          SELECT e.label_id, e.card_id, e.event_timestamp, f.f1, f.f2, f.f3, f.f4
          FROM read_parquet('{data_dir}/entities.parquet') e
          ASOF LEFT JOIN read_parquet('{data_dir}/features.parquet') f
            ON e.card_id = f.card_id AND e.event_timestamp >= f.event_timestamp
        ) TO '{ref_path}' (FORMAT parquet)
        """
    )
    secs = time.perf_counter() - t0
    n, n_null = con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE f1 IS NULL) FROM read_parquet('{ref_path}')"
    ).fetchone()
    return {"ref_seconds": round(secs, 3), "ref_rows": n, "ref_rows_without_feature": n_null}


def compare(data_dir: str, feast_out: str) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute(f"CREATE VIEW r AS SELECT * FROM read_parquet('{data_dir}/reference.parquet')")
    con.execute(f"CREATE VIEW x AS SELECT * FROM read_parquet('{feast_out}')")
    con.execute(f"CREATE VIEW e AS SELECT * FROM read_parquet('{data_dir}/entities.parquet')")
    # duplicate entity keys: (card_id, event_timestamp) appearing more than once
    con.execute("CREATE TEMP TABLE dupkey AS SELECT card_id, event_timestamp FROM e GROUP BY ALL HAVING count(*) > 1")
    rows_out, distinct_out = con.execute("SELECT count(*), count(DISTINCT label_id) FROM x").fetchone()
    unknown = con.execute("SELECT count(*) FROM (SELECT DISTINCT label_id FROM x) WHERE label_id NOT IN (SELECT label_id FROM r)").fetchone()[0]
    dropped, dropped_no_feat, dropped_dupkey, dropped_other = con.execute(
        """
        WITH d AS (SELECT r.* FROM r ANTI JOIN (SELECT DISTINCT label_id FROM x) xx USING (label_id))
        SELECT count(*),
               count(*) FILTER (WHERE f1 IS NULL),
               count(*) FILTER (WHERE f1 IS NOT NULL AND (card_id, event_timestamp) IN (SELECT (card_id, event_timestamp) FROM dupkey)),
               count(*) FILTER (WHERE f1 IS NOT NULL AND (card_id, event_timestamp) NOT IN (SELECT (card_id, event_timestamp) FROM dupkey))
        FROM d
        """
    ).fetchone()
    both, mismatch, feast_null_ref_val, feast_val_ref_null = con.execute(
        """
        WITH j AS (
          SELECT r.f1 rf1, r.f2 rf2, r.f3 rf3, r.f4 rf4, x.f1 xf1, x.f2 xf2, x.f3 xf3, x.f4 xf4
          FROM r JOIN x USING (label_id))
        SELECT count(*),
               count(*) FILTER (WHERE rf1 IS DISTINCT FROM xf1 OR rf2 IS DISTINCT FROM xf2
                                   OR rf3 IS DISTINCT FROM xf3 OR rf4 IS DISTINCT FROM xf4),
               count(*) FILTER (WHERE xf1 IS NULL AND rf1 IS NOT NULL),
               count(*) FILTER (WHERE xf1 IS NOT NULL AND rf1 IS NULL)
        FROM j
        """
    ).fetchone()
    return {
        "rows_out": rows_out,
        "distinct_label_ids_out": distinct_out,
        "duplicate_rows_out": rows_out - distinct_out,
        "unknown_label_ids_out": unknown,
        "rows_dropped": dropped,
        "dropped_ref_has_no_feature": dropped_no_feat,
        "dropped_dup_entity_key": dropped_dupkey,
        "dropped_other": dropped_other,
        "rows_compared": both,
        "rows_value_mismatch": mismatch,
        "mismatch_feast_null_ref_value": feast_null_ref_val,
        "mismatch_feast_value_ref_null": feast_val_ref_null,
        "values_identical": mismatch == 0,
    }


# ---------------------------------------------------------------- results file
def load_results() -> list[dict]:
    if os.path.exists(RESULTS):
        with open(RESULTS) as fh:
            return json.load(fh)
    return []


def save_result(rec: dict) -> None:
    res = load_results()
    key = lambda r: (r["store"], r["keys"], r["n_feat"], r["n_ent"], r["seed"])  # noqa: E731
    res = [r for r in res if key(r) != key(rec)] + [rec]
    res.sort(key=lambda r: (r["keys"], r["n_feat"], r["n_ent"], r["store"]))
    tmp = RESULTS + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(res, fh, indent=1)
    os.replace(tmp, RESULTS)


def print_table() -> None:
    hdr = ["store", "keys", "size", "status", "ref ASOF s", "query s", "query CPU s", "peak MB", "rows_out", "dropped", "(no-feat/dup-key/other)", "identical"]
    rows = []
    for r in load_results():
        ok = r["status"] == "ok"
        rows.append([
            r["store"], r["keys"] + (f" a={r['data']['zipf_a']}" if r.get("data", {}).get("zipf_a") else ""), r["size"], r["status"],
            f"{r['ref_seconds']:.2f}" if "ref_seconds" in r else "-",
            f"{r['seconds']:.2f}" if ok else "-",
            f"{r['cpu_seconds']:.2f}" if ok and "cpu_seconds" in r else "-",
            f"{r['peak_rss_mb']:.0f}" if ok else (f">{r['watchdog_peak_tree_rss_mb']:.0f}" if r["status"] == "OOM" else "-"),
            str(r["rows_out"]) if ok else "-",
            str(r["rows_dropped"]) if ok else "-",
            f"{r['dropped_ref_has_no_feature']}/{r['dropped_dup_entity_key']}/{r['dropped_other']}" if ok else "-",
            ("yes" if r["values_identical"] else f"NO ({r['rows_value_mismatch']})") if ok else "-",
        ])
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for row in rows:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    if "--table" in sys.argv:
        print_table()
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100k,300k,1m", help="comma list; N means N_feat=N_ent=N, or FxE")
    ap.add_argument("--keys", default="zipf,uniform")
    ap.add_argument("--stores", default="file,duckdb")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--zipf-a", type=float, default=1.2)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--mem-gb", type=float, default=16, help="RSS watchdog limit for the Feast process tree")
    ap.add_argument("--as-gb", type=float, default=20, help="RLIMIT_AS for the Feast process (0 = none)")
    ap.add_argument("--data-root", default="/tmp/feast_pit_data")
    ap.add_argument("--no-skip", action="store_true", help="run larger sizes even after OOM/timeout at a smaller size")
    ap.add_argument("--keep-data", action="store_true")
    args = ap.parse_args()

    sizes = []
    for s in args.sizes.split(","):
        f, e = (s.split("x") + [s])[:2] if "x" in s else (s, s)
        sizes.append((parse_size(f), parse_size(e)))
    sizes.sort(key=lambda t: t[0] * t[1])
    failed: dict[tuple[str, str], str] = {}  # (store, keys) -> "OOM at 300k"
    if not args.no_skip:  # earlier runs (results file) that failed at a smaller size also count
        smallest = min(f * e for f, e in sizes)
        for r in load_results():
            if r["status"] in ("OOM", "timeout") and r["seed"] == args.seed and r["n_feat"] * r["n_ent"] < smallest:
                failed.setdefault((r["store"], r["keys"]), f"{r['status']} at {r['size']}")

    for keys in args.keys.split(","):
        for n_feat, n_ent in sizes:
            size = f"{fmt_size(n_feat)}x{fmt_size(n_ent)}"
            stores = args.stores.split(",")
            todo = [s for s in stores if args.no_skip or (s, keys) not in failed]
            for s in stores:
                if s not in todo:
                    rec = dict(store=s, keys=keys, n_feat=n_feat, n_ent=n_ent, seed=args.seed, size=size,
                               status="skipped", note=f"skipped: {failed[(s, keys)]}")
                    save_result(rec)
                    print(json.dumps(rec), flush=True)
            if not todo:
                continue
            data_dir = os.path.join(args.data_root, f"{keys}_{size}_s{args.seed}")
            if not os.path.exists(os.path.join(data_dir, "meta.json")):
                subprocess.run(
                    [sys.executable, os.path.join(HERE, "make_data.py"), "--n-feat", str(n_feat), "--n-ent", str(n_ent),
                     "--keys", keys, "--zipf-a", str(args.zipf_a), "--seed", str(args.seed), "--out", data_dir],
                    check=True, stdout=subprocess.DEVNULL,
                )
            with open(os.path.join(data_dir, "meta.json")) as fh:
                meta = json.load(fh)
            ref = reference(data_dir)
            for store in todo:
                out = os.path.join(data_dir, f"feast_{store}.parquet")
                if os.path.exists(out):
                    os.remove(out)
                if store == "evenflow":
                    cmd = [sys.executable, os.path.join(HERE, "evenflow_run.py"), data_dir, "--out", out]
                else:
                    cmd = [FEAST_PY, os.path.join(HERE, "feast_run.py"), data_dir, "--store", store, "--out", out]
                print(f"# {keys} {size} {store} ...", file=sys.stderr, flush=True)
                # temp files (Feast repo, Feast's prometheus dir) go under the data dir and are
                # removed afterwards, also when the run was SIGKILLed
                tmp = os.path.join(data_dir, f"tmp_{store}")
                os.makedirs(tmp, exist_ok=True)
                r = run_limited(cmd, args.timeout, args.mem_gb, args.as_gb, env={**os.environ, "TMPDIR": tmp})
                shutil.rmtree(tmp, ignore_errors=True)
                status = classify(r)
                load = [round(x, 2) for x in os.getloadavg()]  # the machine is shared: record contention
                rec = dict(store=store, keys=keys, n_feat=n_feat, n_ent=n_ent, seed=args.seed, size=size,
                           status=status, wall_seconds=round(r["wall"], 1), loadavg_after=load,
                           watchdog_peak_tree_rss_mb=r["peak_tree_rss_mb"],
                           limits=dict(timeout_s=args.timeout, rss_gb=args.mem_gb, as_gb=args.as_gb),
                           data=dict(n_cards=meta["n_cards"], planted=meta["planted"],
                                     max_feat_rows_per_card=meta["max_feat_rows_per_card"],
                                     max_ent_rows_per_card=meta["max_ent_rows_per_card"],
                                     equi_join_pairs=meta["equi_join_pairs"], zipf_a=meta["zipf_a"]),
                           **ref)
                if status == "ok":
                    line = [l for l in r["stdout"].splitlines() if l.startswith("{")][-1]
                    rec.update(json.loads(line))
                    rec.update(compare(data_dir, out))
                else:
                    failed[(store, keys)] = f"{status} at {size}"
                    rec["killed_by"] = (f"driver watchdog ({r['killed']})" if r["killed"]
                                        else f"process exited rc={r['rc']}")
                    tail = r["stderr"].strip().splitlines()[-3:]
                    rec["stderr_tail"] = tail
                save_result(rec)
                print(json.dumps(rec), flush=True)
            if not args.keep_data:
                for f in os.listdir(data_dir):
                    if f.startswith("feast_") or f == "reference.parquet":
                        os.remove(os.path.join(data_dir, f))


if __name__ == "__main__":
    main()
