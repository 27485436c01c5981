"""The live path: Pub/Sub emulator → `shopstream stream` (DirectRunner) → Redis.

Publishes click events stamped "now" at a fixed rate for a while per step, and measures
publish-to-Redis latency: the time until ``shopstream:meta`` says the rankings are current
to an event's time. A rate is sustained when the runner keeps up (its p99 stays bounded
and everything published is read); the table shows each step.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

PRODUCTS = ("id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,"
            "productDisplayName\n" + "".join(
                f"{i},Men,Apparel,Topwear,Tshirts,Blue,Summer,2012,Casual,Brand{i % 7} Men Tee {i}\n"
                for i in range(1, 201)))


def _iso(us: int) -> str:
    return dt.datetime.fromtimestamp(us / 1e6, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _event(sid: str, name: str, us: int, pid=None) -> dict:
    meta = str({"product_id": pid, "quantity": 1, "item_price": 1000}) if pid else ""
    return {"session_id": sid, "event_name": name, "event_time": _iso(us),
            "event_id": str(uuid.uuid4()), "traffic_source": "WEB", "event_metadata": meta}


def _publish_step(client, topic, rate: float, seconds: float, sent: list) -> None:
    """Publish ~rate events/s for ``seconds``; records (event_us, wall_publish_s)."""
    interval = 1.0 / rate
    t_end = time.time() + seconds
    nxt = time.time()
    futures = []
    sid, n = str(uuid.uuid4()), 0
    while time.time() < t_end:
        now_us = int(time.time() * 1e6)
        n += 1
        if n % 4 == 0:
            e = _event(sid, "ADD_TO_CART", now_us, 1 + n % 200)
            sid = str(uuid.uuid4())
        else:
            e = _event(sid, "CLICK", now_us)
        futures.append(client.publish(topic, json.dumps(e).encode(), event_time=e["event_time"],
                                      event_id=e["event_id"]))
        sent.append((now_us, time.time()))
        nxt += interval
        delay = nxt - time.time()
        if delay > 0:
            time.sleep(delay)
    for f in futures:
        f.result(timeout=60)


def _watch_meta(client, stop: threading.Event, seen: list) -> None:
    """Poll shopstream:meta; record (wall time, current_to_us of the all-time ranking)."""
    while not stop.is_set():
        raw = client.hget("shopstream:meta", "current_to_us") or client.hget(
            "shopstream:meta", "all:current_to_us")
        if raw:
            seen.append((time.time(), int(float(raw))))
        time.sleep(0.05)


def _latencies(sent, seen):
    out = []
    j = 0
    for event_us, published in sent:
        while j < len(seen) and seen[j][1] < event_us:
            j += 1
        if j == len(seen):
            break
        out.append(seen[j][0] - published)
    return out, len(sent) - len(out)


def run(rates=(50, 150, 300, 600), step_seconds=40) -> list:
    import redis
    from google.cloud import pubsub_v1
    from tests.conftest import RedisServer
    from tests.emulators import PubSubEmulator

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        emu = PubSubEmulator(tmp / "ps").start()
        server = RedisServer(tmp).start()
        (tmp / "product.csv").write_text(PRODUCTS)
        try:
            for rate in rates:
                topic = emu.create_topic(f"bench-{rate}")
                sub = emu.create_subscription(topic, f"bench-{rate}-sub")
                server.client().flushall()
                env = {**os.environ, "PUBSUB_EMULATOR_HOST": emu.host}
                proc = subprocess.Popen(
                    [sys.executable, "-m", "pipelines.cli", "stream", "--subscription", sub,
                     "--products", str(tmp / "product.csv"), "--redis", server.url,
                     "--visit-gap", "2", "--runner=DirectRunner"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    time.sleep(8)
                    stop, seen, sent = threading.Event(), [], []
                    client = redis.Redis.from_url(server.url, decode_responses=True)
                    watcher = threading.Thread(target=_watch_meta, args=(client, stop, seen))
                    watcher.start()
                    with emu.env():
                        _publish_step(pubsub_v1.PublisherClient(), topic, rate, step_seconds, sent)
                    time.sleep(45)  # drain: triggers fire every few seconds
                    stop.set()
                    watcher.join()
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                lat, missing = _latencies(sent, seen)
                q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [float("nan")] * 99
                rows.append({"bench": "live_pubsub_redis", "target_rate": rate,
                             "published": len(sent), "achieved_rate": len(sent) / step_seconds,
                             "not_visible_after_drain": missing,
                             "p50_latency_s": q[49], "p99_latency_s": q[98]})
        finally:
            server.stop()
            emu.stop()
    return rows
