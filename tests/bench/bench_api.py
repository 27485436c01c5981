"""HTTP rankings API latency next to raw Redis ZREVRANGE, measured in the same run.

`shopstream serve` (uvicorn, one process) runs in a subprocess against its own
redis-server; both listen on 127.0.0.1 only. Each measurement sends a bounded number of
requests (default 2,000) from `concurrency` concurrent clients, and stops early at its time
limit. ``ratio_vs_redis`` = the API's p50 / raw ZREVRANGE's p50.

Run alone: ``python -m tests.bench.bench_api`` (or ``python -m tests.bench.run --only bench_api``).
"""
from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Awaitable, Callable, Dict, List

ROOT = Path(__file__).resolve().parents[2]
KEY = "shopstream:top:24h:products"


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
    p.hset("shopstream:meta", mapping={"current_to": "2022-03-31T10:15:00.000000Z",
                                       "current_to_us": 1648721700 * 10**6,
                                       "written_at_us": now_us, "written_at": str(now_us)})
    p.execute()


def _pct(sorted_ms: List[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    return sorted_ms[min(len(sorted_ms) - 1, max(0, int(round(q * len(sorted_ms))) - 1))]


async def _drive(call: Callable[[], Awaitable[bool]], requests: int, concurrency: int,
                 time_limit: float) -> Dict[str, float]:
    """`requests` calls from `concurrency` workers (or until time_limit): latency stats."""
    lat: List[float] = []
    errors = 0
    issued = 0
    deadline = time.perf_counter() + time_limit

    async def worker():
        nonlocal issued, errors
        while issued < requests and time.perf_counter() < deadline:
            issued += 1
            t0 = time.perf_counter()
            try:
                ok = await call()
            except Exception:
                ok = False
            lat.append((time.perf_counter() - t0) * 1000)
            errors += 0 if ok else 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"requests": len(lat), "concurrency": concurrency, "errors": errors,
            "p50_ms": round(_pct(lat, 0.50), 3), "p99_ms": round(_pct(lat, 0.99), 3),
            "mean_ms": round(sum(lat) / len(lat), 3) if lat else float("nan"),
            "req_per_s": round(len(lat) / wall, 1) if wall else float("nan")}


async def _measure(base: str, redis_url: str, requests: int, concurrency: int,
                   time_limit: float) -> List[dict]:
    import httpx
    import redis
    import redis.asyncio as aredis

    rows = []
    sync_client = redis.Redis.from_url(redis_url)
    current_names = 2000
    _fill(sync_client, names=current_names)
    r = aredis.Redis.from_url(redis_url, max_connections=concurrency)
    try:
        async def zrev() -> bool:
            return len(await r.zrevrange(KEY, 0, 9, withscores=True)) == 10

        await _drive(zrev, 200, concurrency, time_limit)  # warm-up
        rows.append({"bench": "redis_zrevrange", "names_hash": current_names,
                     **await _drive(zrev, requests, concurrency, time_limit)})
    finally:
        await r.aclose()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as http:
        for name, url, names in (
                ("api_rankings", "/api/rankings/products?horizon=24h&limit=10", 2000),
                ("api_rankings_filtered",
                 "/api/rankings/products?horizon=24h&season=Summer&gender=Men&limit=10", 2000),
                ("api_rankings_names_44k", "/api/rankings/products?horizon=24h&limit=10",
                 44446)):
            if names != current_names:
                _fill(sync_client, names=names)
                current_names = names

            async def get(url=url) -> bool:
                resp = await http.get(url)
                return resp.status_code == 200 and len(resp.json()["items"]) == 10

            await _drive(get, 200, concurrency, time_limit)  # warm-up
            rows.append({"bench": name, "names_hash": names,
                         **await _drive(get, requests, concurrency, time_limit)})
    base_p50 = rows[0]["p50_ms"]
    for row in rows:
        row["ratio_vs_redis"] = round(row["p50_ms"] / base_p50, 1) if base_p50 else None
    return rows


def run(requests: int = 2000, concurrency: int = 16, time_limit: float = 20.0) -> List[dict]:
    """Rows {bench, names_hash, requests, concurrency, errors, p50_ms, p99_ms, mean_ms,
    req_per_s, ratio_vs_redis}; each measurement is bounded by `requests` and `time_limit`
    seconds. ``names_hash``: entries in shopstream:names:products during the measurement."""
    from tests.conftest import RedisServer, free_port, wait_until_healthy

    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        server = RedisServer(Path(tmp)).start()
        proc = None
        try:
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "serve", "--redis", server.url,
                 "--host", "127.0.0.1", "--port", str(port)],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            base = f"http://127.0.0.1:{port}"
            wait_until_healthy(proc, base, lambda: (
                proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "timeout"))
            return asyncio.run(_measure(base, server.url, requests, concurrency, time_limit))
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            server.stop()


if __name__ == "__main__":
    from tests.bench.run import print_table

    print_table(run())
