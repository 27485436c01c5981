"""HTTP rankings API latency next to raw Redis ZREVRANGE, measured in the same run.

`shopstream serve` runs in a subprocess (``--workers`` 1, then 2) against its own
redis-server; both listen on 127.0.0.1 only. Both sides are driven by the same client:
``concurrency`` asyncio tasks in this process, each owning one keep-alive TCP connection
that sends a pre-encoded request (a RESP ``ZREVRANGE … 0 9 WITHSCORES``, or an HTTP/1.1
``GET``), reads until the buffer holds one whole reply (RESP array / headers +
``Content-Length`` body) and checks it (20 RESP elements; HTTP 200 and 10 items in the
JSON). No client library is on either side, so the client's own cost is small and alike
for both. For each API row, raw Redis and the API are measured in alternating rounds
(10 rounds of requests/10 each, after 200 warm-up requests on the same connections, all
within a time limit), so both sides see the same moments of a shared machine;
``p50_ratio`` / ``p99_ratio`` = the API's p50 / p99 over raw Redis's in that pairing.
``load_avg`` is the machine's 1-minute load average when the row ended (the machine is
shared: compare ratios, not absolute times).

Run alone: ``python -m tests.bench.bench_api`` (or ``python -m tests.bench.run --only bench_api``).
"""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[2]
KEY = "shopstream:top:24h:products"
WARM_UP = 200
ROUNDS = 10


def _fill(client, names: int = 2000, top_n: int = 50) -> None:
    """Rankings as transforms.redis_sink leaves them: top_n members per sorted set, product
    names in one hash (it grows as products enter rankings: up to every product)."""
    p = client.pipeline(transaction=False)
    ids = [10000 + i for i in range(max(names, top_n))]
    client.delete("shopstream:names:products")
    for i in range(0, names, 5000):
        p.hset("shopstream:names:products",
               mapping={str(k): f"Brand{k % 40} Men Casual Item {k}" for k in ids[i:i + 5000]})
    for h in ("1h", "24h", "all"):
        p.zadd(f"shopstream:top:{h}:products", {str(i): (i * 7919) % 1000 / 10 for i in ids[:top_n]})
        p.zadd(f"shopstream:top:{h}:brands", {f"Brand{b}": b * 3.5 for b in range(top_n)})
        p.zadd(f"shopstream:top:{h}:subcategories", {f"Sub{s}": s * 2.0 for s in range(30)})
        p.zadd(f"shopstream:top:{h}:products:season:Summer:gender:Men",
               {str(i): (i * 31) % 500 / 10 for i in ids[-top_n:]})
    now_us = int(time.time() * 1e6)
    meta = {"current_to": "2022-03-31T10:15:00.000000Z", "current_to_us": 1648721700 * 10**6,
            "written_at_us": now_us, "written_at": str(now_us)}
    for h in ("1h", "24h", "all"):
        meta.update({f"{h}:current_to_us": 1648721700 * 10**6,
                     f"{h}:current_to": "2022-03-31T10:15:00.000000Z",
                     f"{h}:written_at_us": now_us, f"{h}:written_at": str(now_us),
                     f"{h}:records": 1000})
    p.hset("shopstream:meta", mapping=meta)
    p.execute()


def _pct(sorted_ms: List[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms))) - 1))]


def resp_command(*args: str) -> bytes:
    """A command in the Redis protocol (RESP2), as any client sends it."""
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def resp_array_length(buf: bytes) -> Optional[int]:
    """Elements of the RESP array reply of bulk strings in ``buf``; None while incomplete."""
    end = buf.find(b"\r\n")
    if end < 0:
        return None
    if buf[:1] != b"*":
        raise RuntimeError(f"unexpected Redis reply {buf[:80]!r}")
    n, pos = int(buf[1:end]), end + 2
    for _ in range(n):
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        pos = end + 2 + int(buf[pos + 1:end]) + 2
        if pos > len(buf):
            return None
    return n


def http_response(buf: bytes) -> Optional[Tuple[int, bytes]]:
    """(status, body) of the HTTP/1.1 response (Content-Length body) in ``buf``; None
    while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if len(buf) < end + 4 + length:
        return None
    return int(lines[0].split(b" ", 2)[1]), buf[end + 4:end + 4 + length]


async def read_reply(reader: asyncio.StreamReader, parse: Callable[[bytes], Any]):
    """Read until ``parse`` finds one whole reply (one request in flight per connection)."""
    buf = b""
    while True:
        chunk = await reader.read(65536)
        if not chunk:
            raise asyncio.IncompleteReadError(buf, None)
        buf += chunk
        got = parse(buf)
        if got is not None:
            return got


Call = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


async def _connect(host: str, port: int, n: int):
    return [await asyncio.open_connection(host, port) for _ in range(n)]


async def _round(conns, call: Call, n: int, deadline: float, lat: List[float]) -> int:
    """`n` calls spread over the connections, one task per connection; errors."""
    errors = issued = 0

    async def worker(reader, writer):
        nonlocal issued, errors
        while issued < n and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                ok = await call(reader, writer)
            except (OSError, RuntimeError, ValueError, asyncio.IncompleteReadError):
                ok = False
            lat.append((time.perf_counter() - t0) * 1000)
            errors += 0 if ok else 1

    # a reply that never comes fails the bench instead of hanging it (no per-call timer:
    # it would add the same cost to both sides and shrink the ratio)
    await asyncio.wait_for(asyncio.gather(*(worker(r, w) for r, w in conns)),
                           timeout=max(1.0, deadline - time.perf_counter()) + 30)
    return errors


def _stats(lat: List[float], wall: float) -> Dict[str, float]:
    lat = sorted(lat)
    return {"p50_ms": round(_pct(lat, 0.50), 2), "p90_ms": round(_pct(lat, 0.90), 2),
            "p99_ms": round(_pct(lat, 0.99), 2),
            "req_per_s": round(len(lat) / wall) if wall else None}


async def _paired(redis_addr, api_addr, api: Call, requests: int, concurrency: int,
                  time_limit: float, rounds: int = ROUNDS) -> Dict[str, Any]:
    """Raw Redis and the API measured in alternating rounds of requests/rounds each (after
    WARM_UP of each), so both sides see the same moments of a shared machine."""
    sides = {"redis": (await _connect(*redis_addr, concurrency), redis_call()),
             "api": (await _connect(*api_addr, concurrency), api)}
    lat = {k: [] for k in sides}
    wall = {k: 0.0 for k in sides}
    errors = 0
    deadline = time.perf_counter() + time_limit
    try:
        for conns, call in sides.values():
            await _round(conns, call, WARM_UP, deadline, [])
        per_round = max(1, requests // rounds)
        for _ in range(rounds):
            for k, (conns, call) in sides.items():
                t0 = time.perf_counter()
                errors += await _round(conns, call, per_round, deadline, lat[k])
                wall[k] += time.perf_counter() - t0
    finally:
        for conns, _ in sides.values():
            for _, w in conns:
                w.close()
    r, a = _stats(lat["redis"], wall["redis"]), _stats(lat["api"], wall["api"])
    return {"requests": len(lat["api"]), "concurrency": concurrency, "errors": errors,
            "redis_p50_ms": r["p50_ms"], "redis_p99_ms": r["p99_ms"],
            "api_p50_ms": a["p50_ms"], "api_p90_ms": a["p90_ms"], "api_p99_ms": a["p99_ms"],
            "p50_ratio": round(a["p50_ms"] / r["p50_ms"], 1) if r["p50_ms"] else None,
            "p99_ratio": round(a["p99_ms"] / r["p99_ms"], 1) if r["p99_ms"] else None,
            "redis_req_per_s": r["req_per_s"], "api_req_per_s": a["req_per_s"]}


def redis_call(key: str = KEY) -> Call:
    payload = resp_command("ZREVRANGE", key, "0", "9", "WITHSCORES")

    async def call(reader, writer) -> bool:
        writer.write(payload)
        return await read_reply(reader, resp_array_length) == 20
    return call


def http_call(path: str, host: str) -> Call:
    import orjson

    payload = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: */*\r\n\r\n".encode()

    async def call(reader, writer) -> bool:
        writer.write(payload)
        status, body = await read_reply(reader, http_response)
        return status == 200 and len(orjson.loads(body)["items"]) == 10
    return call


API_ROWS = (
    ("api_rankings", "/api/rankings/products?horizon=24h&limit=10", 2000),
    ("api_rankings_filtered",
     "/api/rankings/products?horizon=24h&season=Summer&gender=Men&limit=10", 2000),
    ("api_rankings_names_44k", "/api/rankings/products?horizon=24h&limit=10", 44446),
)


def _start_server(redis_url: str, workers: int):
    from tests.conftest import free_port, wait_until_healthy

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--redis", redis_url,
         "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_until_healthy(proc, f"http://127.0.0.1:{port}", lambda: (
        proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"))
    return proc, port


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _measure_server(redis_url: str, redis_port: int, workers: int, requests: int,
                    concurrency: int, time_limit: float) -> List[dict]:
    import redis

    sync_client = redis.Redis.from_url(redis_url)
    _fill(sync_client, names=2000)
    current_names = 2000
    proc, port = _start_server(redis_url, workers)
    rows = []
    try:
        for name, path, names in API_ROWS:
            if names != current_names:
                _fill(sync_client, names=names)
                current_names = names
            stats = asyncio.run(_paired(
                ("127.0.0.1", redis_port), ("127.0.0.1", port),
                http_call(path, f"127.0.0.1:{port}"), requests, concurrency, time_limit))
            rows.append({"bench": name, "server_workers": workers, "names_hash": names,
                         **stats, "load_avg": round(os.getloadavg()[0], 1)})
    finally:
        _stop(proc)
    return rows


def run(requests: int = 2000, concurrency: int = 16, time_limit: float = 60.0,
        workers: Sequence[int] = (1, 2)) -> List[dict]:
    """Rows {bench, server_workers, names_hash, requests, concurrency, errors, p50_ms,
    p90_ms, p99_ms, max_ms, req_per_s, load_avg, p50_ratio, p99_ratio}; each measurement
    is bounded by `requests` and `time_limit` seconds. ``names_hash``: entries in
    shopstream:names:products during the measurement."""
    from tests.conftest import RedisServer

    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            for w in workers:
                rows.extend(_measure_server(server.url, server.port, w, requests,
                                            concurrency, time_limit))
        finally:
            server.stop()
    return rows


if __name__ == "__main__":
    import argparse

    from tests.bench.run import print_table

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", default="1,2", help="server processes to try, e.g. 1,2")
    a = ap.parse_args()
    print_table(run(a.requests, a.concurrency,
                    workers=[int(w) for w in a.workers.split(",")]))
