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


NAMES = ["HOMEPAGE", "CLICK", "CLICK", "ITEM_DETAIL", "SCROLL", "SEARCH", "PROMO_PAGE"]


def _publish_step(client, topic, rate: float, seconds: float, sent: list, rng,
                  open_sessions: int = 200) -> int:
    """Publish ~rate events/s of realistic sessions for ``seconds``: ``open_sessions``
    sessions at a time, browse events with 15% add-to-carts, a session ending after
    3-30 events (replaced by a new one). Records (event_us, wall_publish_s) of the
    add-to-carts (what the latency is measured on)."""
    interval = 1.0 / rate
    t_end = time.time() + seconds
    nxt = time.time()
    futures = []
    sessions = [[str(uuid.uuid4()), rng.randint(3, 30)] for _ in range(open_sessions)]
    while time.time() < t_end:
        now_us = int(time.time() * 1e6)
        s = sessions[rng.randrange(open_sessions)]
        if rng.random() < 0.15:
            e = _event(s[0], "ADD_TO_CART", now_us, 1 + rng.randrange(200))
            sent.append((now_us, time.time()))
        else:
            e = _event(s[0], rng.choice(NAMES), now_us)
        s[1] -= 1
        if s[1] <= 0:
            s[0], s[1] = str(uuid.uuid4()), rng.randint(3, 30)
        futures.append(client.publish(topic, json.dumps(e).encode(), event_time=e["event_time"],
                                      event_id=e["event_id"]))
        nxt += interval
        delay = nxt - time.time()
        if delay > 0:
            time.sleep(delay)
    for f in futures:
        f.result(timeout=60)
    return len(futures)


def _watch_meta(client, stop: threading.Event, seen: list) -> None:
    """Poll shopstream:meta; record (wall time, current_to_us of the all-time ranking):
    an add-to-cart is visible once the all-time ranking is current to its time (adds
    count the moment they leave Sessionize, so the newest record counted bounds them)."""
    while not stop.is_set():
        raw = client.hget("shopstream:meta", "all:current_to_us")
        if raw:
            seen.append((time.time(), int(float(raw))))
        time.sleep(0.05)


def _wait_started(log: Path, proc, timeout: float = 120) -> None:
    """Until `shopstream stream` says the pipeline runs (then give the reader 3 s)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if "streaming from Pub/Sub" in log.read_text():
            time.sleep(3)
            return
        time.sleep(0.2)
    raise RuntimeError(f"shopstream stream did not start: {log.read_text()[-2000:]}")


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


def run(rates=(100, 200, 400, 500), step_seconds=40, drain_seconds=30) -> list:
    """One ``shopstream stream`` per rate with the DEFAULT options (visit gap 1800 s):
    sustained events/s and p50/p99 publish→visible latency of add-to-carts."""
    import random

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
                     "--runner=DirectRunner"],
                    env=env, stdout=subprocess.DEVNULL, stderr=open(tmp / f"stream-{rate}.log", "w"))
                try:
                    _wait_started(tmp / f"stream-{rate}.log", proc)
                    stop, seen, sent = threading.Event(), [], []
                    client = redis.Redis.from_url(server.url, decode_responses=True)
                    watcher = threading.Thread(target=_watch_meta, args=(client, stop, seen))
                    watcher.start()
                    with emu.env():
                        t0 = time.time()
                        total = _publish_step(pubsub_v1.PublisherClient(), topic, rate,
                                              step_seconds, sent, random.Random(rate))
                        published_s = time.time() - t0
                    time.sleep(drain_seconds)
                    stop.set()
                    watcher.join()
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                lat, missing = _latencies(sent, seen)
                q = statistics.quantiles(lat, n=100) if len(lat) > 2 else [float("nan")] * 99
                rows.append({"bench": "live_pubsub_redis", "target_rate": rate,
                             "adds_published": len(sent),
                             "events_published": total, "achieved_rate": total / published_s,
                             "not_visible_after_drain": missing,
                             "p50_latency_s": q[49], "p99_latency_s": q[98]})
        finally:
            server.stop()
            emu.stop()
    return rows
