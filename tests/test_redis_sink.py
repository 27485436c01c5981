"""The Redis rankings writer against a real redis-server: key layout, atomic swaps,
idempotence, newest-wins, outages (server stopped and restarted), passwords, Beam DoFn."""
from __future__ import annotations

import logging
import socket
import threading
import time

import apache_beam as beam
import pytest
import redis
from apache_beam.options.pipeline_options import PipelineOptions

from tests.conftest import free_port
from transforms.ranking_store import connect, read_meta, read_ranking, redact_url
from transforms.redis_sink import RedisRankingWriter, WriteRankingsToRedis
from transforms.top_n import RankingSnapshot

S = 1_000_000
T0 = 1_567_785_600 * S


def snap(horizon, as_of_s, products, records=None, extra=None, window_end_us=None):
    """A snapshot whose rankings are derived from ``products`` {id: score}."""
    ranking = sorted(((str(p), float(s)) for p, s in products.items()),
                     key=lambda ms: (-ms[1], int(ms[0])))
    rankings = {"products": ranking,
                "brands": [(f"Brand{int(m) % 3}", s) for m, s in ranking[:3]],
                "subcategories": []}
    rankings.update(extra or {})
    names = {m: f"Product {m}" for m, _ in ranking}
    return RankingSnapshot(horizon, T0 + as_of_s * S, rankings, names, {},
                           records if records is not None else len(products), window_end_us)


def dump(client, prefix="shopstream"):
    """What readers can observe, without wall-clock fields (comparable across runs).

    The names hash only grows (a cache of display names); only the names of products
    currently ranked are observable through read_ranking, so only those are compared."""
    out = {}
    ranked = set()
    for key in sorted(client.scan_iter(f"{prefix}:*")):
        kind = client.type(key)
        if kind == "zset":
            out[key] = client.zrange(key, 0, -1, withscores=True)
            ranked.update(m for m, _ in out[key])
        elif kind == "hash":
            out[key] = {k: v for k, v in client.hgetall(key).items() if "written_at" not in k}
        elif kind == "set":
            out[key] = sorted(client.smembers(key))
        else:
            out[key] = client.get(key)
    names = f"{prefix}:names:products"
    if names in out:
        out[names] = {k: v for k, v in out[names].items() if k in ranked}
    return out


def writer(url, **kw):
    kw.setdefault("retry_seconds", 20)
    kw.setdefault("backoff_max", 0.2)
    return RedisRankingWriter(url, **kw)


# --------------------------------------------------------------------------- layout
def test_write_layout_names_and_meta(redis_server):
    c = redis_server.client()
    w = writer(redis_server.url)
    s = snap("1h", 60, {10: 0.9, 11: 0.4, 12: 0.4}, extra={"products:gender:Men": [("11", 0.4)]},
             window_end_us=T0 + 300 * S)
    assert w.write(s) is True
    assert c.zrevrange("shopstream:top:1h:products", 0, -1, withscores=True) == [
        ("10", 0.9), ("12", 0.4), ("11", 0.4)]  # Redis orders ties by member, descending
    assert c.zrange("shopstream:top:1h:products:gender:Men", 0, -1, withscores=True) == [("11", 0.4)]
    assert c.exists("shopstream:top:1h:subcategories") == 0  # empty ranking: no key
    assert c.hget("shopstream:names:products", "10") == "Product 10"
    assert sorted(c.smembers("shopstream:dims:1h")) == ["brands", "products", "products:gender:Men"]
    assert not list(c.scan_iter("shopstream:tmp:*"))
    meta = read_meta(c)
    h = meta["horizons"]["1h"]
    assert h["current_to_us"] == T0 + 60 * S and h["records"] == 3
    assert h["current_to"] == "2019-09-06T16:01:00.000000Z"
    assert h["window_end_us"] == T0 + 300 * S
    assert abs(h["written_at_us"] / S - time.time()) < 30
    assert meta["current_to_us"] == T0 + 60 * S and meta["written_at"]
    # the reader orders ties like the ranker: by product id
    assert [r["id"] for r in read_ranking(c, "products", "1h")] == [10, 11, 12]
    assert w.stats["writes"] == 1


def test_top_n_is_enforced(redis_server):
    w = writer(redis_server.url, top_n=20)
    w.write(snap("all", 10, {p: p / 100 for p in range(1, 80)}))
    assert redis_server.client().zcard("shopstream:top:all:products") == 20


def test_writes_are_idempotent(redis_server):
    c = redis_server.client()
    s = snap("all", 100, {1: 0.5, 2: 0.7})
    writer(redis_server.url).write(s)
    first = dump(c)
    writer(redis_server.url).write(s)  # a retried bundle, another worker
    w = writer(redis_server.url)
    w.write(s)
    w.write(s)
    assert dump(c) == first


def test_an_older_snapshot_never_overwrites_a_newer_one(redis_server):
    c = redis_server.client()
    new, old = snap("24h", 200, {1: 0.9}), snap("24h", 100, {2: 0.9})
    a, b = writer(redis_server.url), writer(redis_server.url)
    assert a.write(new)
    expected = dump(c)
    b.write(old)  # a different writer (worker) with a stale snapshot
    assert dump(c) == expected and b.stats["stale_skipped"] == 1
    a.write(old)  # the same writer: refused before any round trip
    assert dump(c) == expected
    # a later pane of the same window counts more records: it replaces
    more = snap("24h", 200, {1: 0.9, 3: 0.2}, records=5)
    b.write(more)
    assert c.zrange("shopstream:top:24h:products", 0, -1) == ["3", "1"]
    # other horizons are independent
    b.write(snap("1h", 50, {4: 1.0}))
    assert c.zrange("shopstream:top:1h:products", 0, -1) == ["4"]


def test_dimensions_that_disappear_are_deleted(redis_server):
    c = redis_server.client()
    w = writer(redis_server.url)
    w.write(snap("1h", 10, {1: 1.0}, extra={"products:gender:Boys": [("1", 1.0)]}))
    assert c.exists("shopstream:top:1h:products:gender:Boys")
    writer(redis_server.url).write(snap("1h", 20, {2: 1.0}))  # no Boys products any more
    assert not c.exists("shopstream:top:1h:products:gender:Boys")
    assert "products:gender:Boys" not in c.smembers("shopstream:dims:1h")


def test_readers_never_see_a_half_written_ranking(redis_server):
    """Each snapshot's ranking and meta are derived from its as_of; a reader reading in
    one MULTI must always find a consistent pair while a writer swaps many times."""
    url = redis_server.url
    stop = threading.Event()
    bad = []
    reads = [0]

    def reader():
        c = connect(url)
        while not stop.is_set():
            with c.pipeline(transaction=True) as pipe:
                pipe.zrange("shopstream:top:all:products", 0, -1, withscores=True)
                pipe.hget("shopstream:meta", "all:current_to_us")
                members, as_of = pipe.execute()
            if as_of is None:
                continue
            k = (int(as_of) - T0) // S
            want = sorted(((str(k * 100 + j), float(j)) for j in range(1, 31)),
                          key=lambda ms: ms[1])
            if members != want:
                bad.append((k, members[:3]))
            reads[0] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        w = writer(url)
        for k in range(1, 120):
            w.write(snap("all", k, {k * 100 + j: float(j) for j in range(1, 31)}))
    finally:
        stop.set()
        t.join()
    assert reads[0] > 10 and not bad, bad[:3]


# --------------------------------------------------------------------------- outages
SNAPSHOTS = [snap(h, k * 60, {(k * 7 + j) % 40 + 1: (k + j) % 9 / 10 + 0.05 for j in range(25)},
                  window_end_us=None if h == "all" else T0 + (k * 60 + 300) * S)
             for k in range(1, 13) for h in ("1h", "24h", "all")]


def test_restart_mid_run_ends_like_a_fault_free_run(redis_server):
    """Stop the real redis-server mid-run (its data is gone: no persistence) and start a
    new one on the same port 1.5 s later: the final state equals a fault-free run's."""
    clean = writer(redis_server.url)
    for s in SNAPSHOTS:
        clean.write(s)
    expected = dump(redis_server.client())
    redis_server.client().flushall()

    w = writer(redis_server.url, retry_seconds=30, backoff_max=0.2)
    half = len(SNAPSHOTS) // 2
    for s in SNAPSHOTS[:half]:
        assert w.write(s)
    redis_server.stop()
    restarter = threading.Timer(1.5, redis_server.start)
    restarter.start()
    try:
        t = time.monotonic()
        for s in SNAPSHOTS[half:]:
            assert w.write(s)  # blocks, retrying, until the new server answers
        assert time.monotonic() - t >= 1.0
    finally:
        restarter.join()
    assert w.stats["retries"] >= 1
    assert dump(redis_server.client()) == expected


def test_restart_between_writes_is_detected_and_repaired(redis_server):
    """The pool reconnects silently to a restarted (empty) server: the writer notices
    that Redis lost its rankings and writes its newest snapshots again."""
    w = writer(redis_server.url)
    for s in SNAPSHOTS[:6]:
        w.write(s)
    expected = dump(redis_server.client())
    redis_server.stop()
    redis_server.start()
    assert w.flush()  # e.g. the next bundle's finish_bundle, with nothing new
    assert dump(redis_server.client()) == expected


def test_unreachable_redis_never_raises_and_keeps_the_newest(redis_server, caplog):
    url = redis_server.url
    redis_server.stop()
    w = writer(url, retry_seconds=0.3, backoff_max=0.05)
    with caplog.at_level(logging.WARNING, logger="transforms.redis_sink"):
        assert w.write(SNAPSHOTS[0]) is False  # gave up for now: no exception
        assert w.write(SNAPSHOTS[3]) is False
    assert w.stats["failures"] == 2 and w.stats["retries"] >= 2
    assert "unreachable" in caplog.text
    redis_server.start()
    assert w.flush() is True
    assert read_meta(redis_server.client())["horizons"]["1h"]["current_to_us"] == SNAPSHOTS[3].as_of_us


# --------------------------------------------------------------------------- security
def test_password_from_url_or_env_and_never_logged(redis_server, monkeypatch, caplog):
    secret = "s3cr3t-Pa55"
    redis_server.client().config_set("requirepass", secret)
    host = f"127.0.0.1:{redis_server.port}"
    with_password = f"redis://:{secret}@{host}/0"
    assert redact_url(with_password) == f"redis://:***@{host}/0"
    assert redact_url(f"rediss://user:{secret}@{host}/1") == f"rediss://user:***@{host}/1"
    assert redact_url(f"redis://{host}/0") == f"redis://{host}/0"

    assert writer(with_password).write(snap("all", 1, {1: 1.0}))
    monkeypatch.setenv("REDIS_PASSWORD", secret)
    assert writer(f"redis://{host}/0").write(snap("all", 2, {1: 1.0}))
    monkeypatch.delenv("REDIS_PASSWORD")

    # failures are logged with the redacted URL only
    dead = f"redis://:{secret}@127.0.0.1:{free_port()}/0"
    with caplog.at_level(logging.DEBUG):
        w = writer(dead, retry_seconds=0.2, backoff_max=0.05)
        w.write(snap("all", 3, {1: 1.0}))
        wrong = writer(f"redis://:wrong-{secret}@{host}/0", retry_seconds=0.2)
        assert wrong.write(snap("all", 4, {1: 1.0})) is False
    assert caplog.text and secret not in caplog.text
    assert ":***@" in caplog.text


def test_rediss_urls_use_tls():
    client = connect("rediss://:pw@127.0.0.1:6390/0")
    assert client.connection_pool.connection_class is redis.SSLConnection
    with pytest.raises(ValueError, match="redis:// or rediss://") as info:
        connect("http://:topsecret@127.0.0.1/0")
    assert "topsecret" not in str(info.value)


# --------------------------------------------------------------------------- Beam
def _run(snapshots, url, **kw):
    p = beam.Pipeline(runner="DirectRunner", options=PipelineOptions(["--runner=DirectRunner"]))
    _ = p | beam.Create(snapshots) | WriteRankingsToRedis(url, **kw)
    result = p.run()
    result.wait_until_finish()
    return result


def _counter(result, name):
    counters = result.metrics().query(beam.metrics.MetricsFilter().with_name(name))["counters"]
    return sum(c.committed or 0 for c in counters)


class _RefusingPort:
    """Stands on a stopped Redis's port: accepts a connection and closes it at once (a
    failed attempt for the writer), then frees the port and calls ``then`` — so Redis
    comes back only after the writer has seen it down, however slowly the job starts."""

    def __init__(self, port: int, then, timeout: float = 120.0):
        self.sock = socket.create_server(("127.0.0.1", port))
        self.sock.settimeout(timeout)
        self.then, self.refused = then, False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.sock.accept()
            conn.close()
            self.refused = True
        except OSError:  # timed out: nobody tried
            pass
        finally:
            self.sock.close()
            self.then()

    def join(self):
        self.thread.join()


def test_beam_write_survives_redis_starting_late(redis_server):
    """The pipeline starts while Redis is down; Redis comes back only after the writer's
    first attempt failed. The job does not fail and Redis ends with the newest snapshot
    of each horizon, as in a clean run."""
    clean = writer(redis_server.url)
    for s in SNAPSHOTS:
        clean.write(s)
    expected = dump(redis_server.client())
    redis_server.stop()
    gate = _RefusingPort(redis_server.port, redis_server.start)
    try:
        result = _run(list(reversed(SNAPSHOTS)), redis_server.url, retry_seconds=30,
                      backoff_max=0.2)
    finally:
        gate.join()
    assert gate.refused, "the writer never tried while Redis was down"
    assert dump(redis_server.client()) == expected
    assert _counter(result, "redis_writes") >= 3
    assert _counter(result, "redis_retries") >= 1


def test_write_rankings_transform_arguments():
    with pytest.raises(ValueError, match="at least 10"):
        WriteRankingsToRedis("redis://127.0.0.1:1/0", top_n=5)
    with pytest.raises(ValueError, match="needs a Redis URL"):
        WriteRankingsToRedis("")
    t = WriteRankingsToRedis("redis://:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in str(t.display_data())


# --------------------------------------------------------------------------- issue 11
def test_non_finite_scores_are_refused_by_the_writer(redis_server, caplog):
    w = writer(redis_server.url)
    bad = snap("all", 10, {1: 5.0, 2: float("inf"), 3: float("nan"), 4: 1.0})
    with caplog.at_level(logging.ERROR, logger="transforms.redis_sink"):
        assert w.write(bad) is True
    assert redis_server.client().zrevrange("shopstream:top:all:products", 0, -1,
                                           withscores=True) == [("1", 5.0), ("4", 1.0)]
    assert "refused a non-finite score (inf) for 2" in caplog.text
    assert read_ranking(redis_server.client(), "products", "all")[0]["id"] == 1


def test_the_retry_budget_spans_flushes_and_a_bounded_run_fails_loudly():
    from transforms.redis_sink import RedisWriteError

    url = f"redis://127.0.0.1:{free_port()}/0"
    w = writer(url, retry_seconds=0.5, backoff_max=0.05)
    t0 = time.monotonic()
    assert w.write(SNAPSHOTS[0]) is False
    assert w.write(SNAPSHOTS[1]) is False  # the budget is spent: no second 0.5 s of retries
    assert time.monotonic() - t0 < 0.9
    strict = writer(url, retry_seconds=0.3, backoff_max=0.05, fail_on_give_up=True)
    with pytest.raises(RedisWriteError, match=r"unreachable for 0s"):
        strict.write(SNAPSHOTS[0])


def test_wait_for_redis_fails_fast_on_refused_credentials(tmp_path):
    import subprocess

    from transforms.redis_sink import RedisWriteError, wait_for_redis

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--requirepass", "pw", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        t0 = time.monotonic()
        with pytest.raises(RedisWriteError, match="refused the credentials"):
            wait_for_redis(f"redis://:nope@127.0.0.1:{port}/0", retry_seconds=30)
        assert time.monotonic() - t0 < 5
        wait_for_redis(f"redis://:pw@127.0.0.1:{port}/0", retry_seconds=5)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
