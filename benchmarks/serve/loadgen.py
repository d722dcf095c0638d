"""Open-loop HTTP load generator: a fixed request schedule, latency from the scheduled send time.

Runs in its own process (``python benchmarks/serve/loadgen.py ...``) so that it does not share an
interpreter (or a GIL) with the server it measures. Request ``i`` is due at ``start + i / rate``;
it goes out on an idle keep-alive connection, or a new one when all are busy, so a slow
answer never delays the next request (no coordinated omission). Its latency is the time from
its *scheduled* send time to the end of the response body. A lean HTTP/1.1 client over asyncio
streams keeps the generator's own overhead small next to the servers'.

Prints one JSON object: counts, achieved rate, latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list.

    >>> percentile([1.0, 2.0, 3.0, 4.0], 0.5), percentile([1.0, 2.0, 3.0, 4.0], 0.99)
    (2.0, 4.0)
    """
    if not sorted_values:
        return float("nan")
    rank = max(1, int(-(-q * len(sorted_values) // 1)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def build_requests(kind: str, keys: list[str], host: str, features: list[str]) -> list[bytes]:
    """The raw HTTP requests, one per key, for an evenflow or a Feast feature server."""
    out = []
    for key in keys:
        if kind == "evenflow":
            head = f"GET /v1/features/card/{key} HTTP/1.1\r\nHost: {host}\r\n\r\n"
            out.append(head.encode())
        else:
            body = json.dumps({"features": [f"card:{f}" for f in features],
                               "entities": {"card": [key]}}).encode()
            head = (f"POST /get-online-features HTTP/1.1\r\nHost: {host}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
            out.append(head.encode() + body)
    return out


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if not chunked:
        return status, await reader.readexactly(length)
    body = b""
    while True:
        size = int((await reader.readuntil(b"\r\n")).strip(), 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, body
        body += chunk[:-2]


async def run(host: str, port: int, requests: list[bytes], rate: float, warmup_s: float,
              check: bytes | None) -> dict[str, Any]:
    idle: list[Conn] = []
    opened = 0
    latencies: list[float] = []
    errors: dict[str, int] = {}
    late_sends = 0
    n = len(requests)
    start = time.perf_counter() + 0.2

    async def exchange(conn: Conn, request: bytes) -> tuple[int, bytes]:
        reader, writer = conn
        writer.write(request)
        await writer.drain()
        return await _response(reader)

    async def one(i: int, due: float) -> None:
        nonlocal opened
        conn = idle.pop() if idle else None
        try:
            if conn is not None:
                try:
                    status, body = await exchange(conn, requests[i])
                except (OSError, asyncio.IncompleteReadError):
                    # the server closed an idle keep-alive connection: resend on a new one
                    conn[1].close()
                    conn = None
            if conn is None:
                conn = await asyncio.open_connection(host, port)
                opened += 1
                status, body = await exchange(conn, requests[i])
            done = time.perf_counter()
            if status != 200 or (check is not None and check not in body):
                errors[str(status)] = errors.get(str(status), 0) + 1
            elif due - start >= warmup_s:
                latencies.append(done - due)
            idle.append(conn)
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
            if conn is not None:
                conn[1].close()

    tasks = []
    for i in range(n):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        elif wait < -0.001:
            late_sends += 1      # the generator itself fell behind its schedule
        tasks.append(asyncio.ensure_future(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {"requests": n, "measured": len(ms), "errors": errors, "connections": opened,
            "late_sends": late_sends, "achieved_rps": round(n / elapsed, 1),
            "p50_ms": percentile(ms, 0.50), "p90_ms": percentile(ms, 0.90),
            "p99_ms": percentile(ms, 0.99), "p999_ms": percentile(ms, 0.999),
            "max_ms": ms[-1] if ms else None, "mean_ms": sum(ms) / len(ms) if ms else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["evenflow", "feast"], required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--keys", required=True, help="JSON file: entity keys and feature names")
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with open(args.keys) as f:
        spec = json.load(f)
    rng = random.Random(args.seed)        # the same key sequence for every server
    total = int(args.rate * (args.seconds + args.warmup))
    keys = [rng.choice(spec["keys"]) for _ in range(total)]
    requests = build_requests(args.kind, keys, f"{args.host}:{args.port}", spec["features"])
    check = b'"count_1h"' if args.kind == "evenflow" else b"count_1h"
    result = asyncio.run(run(args.host, args.port, requests, args.rate, args.warmup, check))
    print(json.dumps({"kind": args.kind, "rate": args.rate, "seconds": args.seconds, **result}))


if __name__ == "__main__":
    main()
