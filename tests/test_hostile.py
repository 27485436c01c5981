"""The hostile corpus (tests/data/hostile/, written by its build_corpus.py) through the
real commands: `shopstream replay`, `shopstream batch` and — as Pub/Sub messages —
`shopstream stream`. Every hostile record is dead-lettered with its reason, repeated or
kept as expected.csv says; the runs go on, exit 0, and their summaries add up to what
the dead_letter table holds. Plus the faults around the data: header-less and empty
files, an unusable weights file, Redis unreachable or refusing the password."""
from __future__ import annotations

import csv
import json
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from pipelines import cli

CORPUS = Path(__file__).parent / "data" / "hostile"
#: Good rows per table in the corpus (build_corpus.py), besides the hostile ones.
GOOD = {"click_stream": 20, "transactions": 4, "product": 3, "customer": 4}


def expected_rows():
    with open(CORPUS / "expected.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def expected_counts(sources):
    """Per source: read / valid / duplicate / dead_lettered that the corpus must give."""
    out = {}
    for source in sources:
        rows = [r for r in expected_rows() if r["source"] == source]
        c = Counter(r["outcome"] for r in rows)
        valid, dup, dead = GOOD[source] + c["valid"], c["duplicate"], c["dead"]
        out[source] = {"read": valid + dup + dead, "valid": valid, "duplicate": dup,
                       "dead_lettered": dead}
    return out


def summary_of(line: str) -> dict:
    """The per-source counts of a summary line (transforms.run_summary shape)."""
    out = {}
    for part in line.split(" | "):
        m = re.match(r"(click_stream|transactions|product|customer) (.*)", part)
        if m:
            out[m.group(1)] = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
    return out


def query(path, sql):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def run(args, capsys):
    capsys.readouterr()
    rc = cli.main(args)
    out = capsys.readouterr()
    return rc, out.out.strip().splitlines()[-1] if out.out.strip() else "", out.err


def check_dead_letters(warehouse, sources, source_of=lambda s: s):
    dead = query(warehouse, "SELECT source, raw, reason FROM dead_letter")
    for row in expected_rows():
        if row["source"] not in sources:
            continue
        hits = [d for d in dead if d[0] == source_of(row["source"]) and row["marker"] in d[1]]
        if row["outcome"] == "dead":
            assert len(hits) == 1, (row, hits)
            assert row["reason"] in hits[0][2], (row, hits[0])
        else:
            assert not hits, (row, hits)
    # the raw record shows undecodable bytes and controls as \xNN, never U+FFFD or NUL
    assert not any("\ufffd" in d[1] or "\x00" in d[1] for d in dead)
    return dead


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    shutil.copytree(CORPUS, root / "data", ignore=shutil.ignore_patterns("*.py", "expected.csv",
                                                                         "noheader", "empty"))
    return root


def test_replay_dead_letters_every_hostile_record_and_counts_add_up(corpus, capsys):
    wh = corpus / "replay.duckdb"
    rc, line, err = run(["replay", "--input", str(corpus / "data"), "--warehouse", str(wh)],
                        capsys)
    assert rc == 0, err[-3000:]
    sources = ("click_stream", "transactions", "product")
    assert summary_of(line) == expected_counts(sources), line
    dead = check_dead_letters(wh, sources)
    assert len(dead) == sum(c["dead_lettered"] for c in expected_counts(sources).values())
    assert f"dead_lettered={len(dead)} " in line
    # the record with a quoted newline is one event, with its product
    assert query(wh, "SELECT product_id FROM events_enriched "
                     "WHERE event_id = 'h-quoted-newline'") == [(303,)]
    assert query(wh, "SELECT count(*) FROM events_enriched")[0][0] == \
        expected_counts(["click_stream"])["click_stream"]["valid"]
    # the first product row of id 101 is the one kept
    assert ("Puma",) in query(wh, "SELECT brand FROM top10_brands")


def test_batch_dead_letters_every_hostile_record_and_counts_add_up(corpus, capsys):
    wh = corpus / "batch.duckdb"
    rc, line, err = run(["batch", "--input", str(corpus / "data"), "--warehouse", str(wh)],
                        capsys)
    assert rc == 0, err[-3000:]
    want = expected_counts(GOOD)  # the repeated click event is a duplicate here too
    assert summary_of(line) == want, line
    dead = check_dead_letters(wh, GOOD)
    assert len(dead) == sum(c["dead_lettered"] for c in want.values())
    # sales facts use the first product row of id 101 (Puma, not the conflicting Nike)
    brands = {r[0] for r in query(wh, "SELECT brand FROM sales_facts WHERE product_id = 101")}
    assert brands == {"Puma"}


@pytest.mark.parametrize("command", ["replay", "batch"])
def test_files_without_a_header_row_are_read_whole(tmp_path, command, capsys, caplog):
    data = tmp_path / "data"
    shutil.copytree(CORPUS / "noheader", data)
    wh = tmp_path / "w.duckdb"
    rc, line, err = run([command, "--input", str(data), "--warehouse", str(wh)], capsys)
    assert rc == 0, err[-3000:]
    got = summary_of(line)
    assert got["click_stream"]["read"] == GOOD["click_stream"]
    assert got["click_stream"]["dead_lettered"] == 0
    assert got["transactions"] == {"read": 4, "valid": 4, "duplicate": 0, "dead_lettered": 0}
    assert "click_stream.csv has no header row: its first line is read as data" in caplog.text
    assert query(wh, "SELECT count(*) FROM dead_letter")[0][0] == 0


@pytest.mark.parametrize("command", ["replay", "batch"])
def test_an_empty_table_is_an_empty_table(tmp_path, command, capsys):
    """A 0-byte transactions.csv and a header-only product.csv: no records, exit 0."""
    data = tmp_path / "data"
    shutil.copytree(CORPUS / "empty", data)
    wh = tmp_path / "w.duckdb"
    rc, line, err = run([command, "--input", str(data), "--warehouse", str(wh)], capsys)
    assert rc == 0, err[-3000:]
    got = summary_of(line)
    assert got["click_stream"]["valid"] == GOOD["click_stream"]
    assert got.get("transactions", {"read": 0})["read"] == 0


def test_weights_that_overflow_are_refused_with_a_message(tmp_path, capsys):
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"click_count": 1e308, "item_detail_count": 1e308,
                                   "add_to_cart_count": 1e308, "homepage_count": 1,
                                   "total_dwell_seconds": 1, "purchases": 1e308}))
    rc, _, err = run(["replay", "--input", str(CORPUS / "noheader"), "--weights", str(weights)],
                     capsys)
    assert rc == 2
    assert "weight click_count is too large" in err and "Traceback" not in err


def test_unreachable_redis_fails_the_replay_within_the_retry_budget(capsys):
    from tests.conftest import free_port

    began = time.monotonic()
    rc, _, err = run(["replay", "--input", str(CORPUS / "noheader"), "--redis",
                      f"redis://127.0.0.1:{free_port()}/0", "--redis-retry-seconds", "2"], capsys)
    assert rc == 1
    assert "cannot write the Redis rankings" in err and "unreachable for 2s" in err
    assert time.monotonic() - began < 30  # the budget, not the whole replay's 300 s


def test_a_wrong_redis_password_fails_the_replay_at_once(tmp_path, capsys):
    import socket
    import subprocess

    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no", "--requirepass", "sekret",
                             "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        rc, _, err = run(["replay", "--input", str(CORPUS / "noheader"), "--redis",
                          f"redis://:wrong@127.0.0.1:{port}/0"], capsys)
        assert rc == 1
        assert "refused the credentials" in err
        assert "wrong" not in err.replace("wrong@", "")  # the password is never printed
        assert ":***@" in err
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- live
#: The live test stamps its events this far ahead of the wall clock, which is the
#: DirectRunner's Pub/Sub watermark: on a loaded machine the read may lag the publisher
#: by tens of seconds, and a visit must not close before its events are read (they would
#: be dead-lettered as late). Well within max_future (1 day).
AHEAD = 150
GAP = 5


def records_time_us(event: dict) -> int:
    from transforms.records import parse_time_us

    return parse_time_us(event["event_time"], "event_time")


@pytest.mark.emulator
@pytest.mark.slow
def test_stream_dead_letters_an_oversized_message_and_a_bad_event_time_and_goes_on(tmp_path):
    """A 9 MB message, a garbage event_time attribute and a year-9999 event among 1,000
    good events on the Pub/Sub emulator: all 1,000 events reach the warehouse and the
    rankings, and the three bad messages are three dead letters (acked: they never come
    back, nothing stalls; the far-future one moves no watermark or shopstream:meta)."""
    import datetime as dt
    import os
    import subprocess
    import sys
    import uuid

    from google.cloud import pubsub_v1

    from tests.conftest import RedisServer
    from tests.emulators import PubSubEmulator

    emu = PubSubEmulator(tmp_path / "pubsub").start()
    redis = RedisServer(tmp_path).start()
    stream = None
    try:
        topic = emu.create_topic("clicks")
        sub = emu.create_subscription(topic, "clicks-sub")
        wh = tmp_path / "live.duckdb"
        products = tmp_path / "product.csv"
        products.write_bytes(b"".join((CORPUS / "product.csv").read_bytes().splitlines(True)[:2])
                             + b"202,Women,Apparel,Topwear,Tops,Red,Winter,2015,Casual,Vero Moda"
                             b" Women Red Top\n303,Men,Accessories,Watches,Watches,Black,Fall,"
                             b"2016,Casual,Titan Men Black Watch\n")
        env = {**os.environ, "PUBSUB_EMULATOR_HOST": emu.host}
        stream = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "stream", "--subscription", sub,
             "--products", str(products), "--redis", redis.url,
             "--warehouse", str(wh), "--visit-gap", str(GAP), "--lookback", "1",
             "--runner=DirectRunner"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(5)  # let the reader subscribe before publishing
        now = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=AHEAD)
        good, adds = [], Counter()
        for n in range(200):  # 200 visits x 5 events
            sid, pid = str(uuid.uuid4()), (101, 101, 101, 202, 202, 303)[n % 6]
            for i, name in enumerate(("HOMEPAGE", "CLICK", "ITEM_DETAIL", "ADD_TO_CART",
                                      "SCROLL")):
                t = now + dt.timedelta(milliseconds=10 * n + i)
                good.append({"session_id": sid, "event_name": name,
                             "event_time": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                             "event_id": str(uuid.uuid4()), "traffic_source": "WEB",
                             "event_metadata": "{'product_id': %d, 'quantity': 1, "
                                               "'item_price': 1000}" % pid
                             if name == "ADD_TO_CART" else ""})
            adds[pid] += 1
        big = dict(good[0], event_id="h-big", event_metadata="{'search_keywords': '%s'}"
                   % ("x" * 9_000_000), event_name="SEARCH")
        garbage = dict(good[1], event_id="h-garbage-time")
        future = dict(good[2], event_id="h-future", event_time="9999-12-31T23:59:59.000000Z")
        with emu.env():
            client = pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(
                max_messages=100, max_bytes=9_500_000, max_latency=0.05))
            futures = []
            for k, e in enumerate(good):
                if k == 300:
                    futures.append(client.publish(topic, json.dumps(big).encode(),
                                                  event_time=big["event_time"], event_id="h-big"))
                if k == 600:
                    futures.append(client.publish(topic, json.dumps(garbage).encode(),
                                                  event_time="garbage", event_id="h-garbage"))
                if k == 900:
                    futures.append(client.publish(topic, json.dumps(future).encode(),
                                                  event_time=future["event_time"],
                                                  event_id="h-future"))
                futures.append(client.publish(topic, json.dumps(e).encode(),
                                              event_time=e["event_time"], event_id=e["event_id"]))
            for f in futures:
                f.result(timeout=60)
        ids = {e["event_id"] for e in good}
        # DuckDB allows one process at a time: watch Redis while the stream runs (the
        # rankings are current to the newest add once every message was read), give the
        # visits time to settle, then stop the stream and read the warehouse
        last_add = max(records_time_us(e) for e in good if e["event_name"] == "ADD_TO_CART")
        client = redis.client()
        deadline = time.time() + AHEAD + 240
        while time.time() < deadline and stream.poll() is None:
            # past the big message and the bad attribute (the last ones may wait for a pane)
            current = client.hget("shopstream:meta", "all:current_to_us")
            if current and int(current) >= last_add - 500_000:
                break
            time.sleep(1)
        assert stream.poll() is None, stream.stdout.read()[-3000:]
        settle = last_add / 1e6 + 2 * GAP + 15 - time.time()
        time.sleep(max(0.0, settle))
        top = client.zrevrange("shopstream:top:all:products", 0, -1)
        meta = client.hgetall("shopstream:meta")
        stream.terminate()
        stream.wait(timeout=30)
        rows = query(wh, "SELECT event_id FROM events_enriched")
        dead = query(wh, "SELECT source, raw, reason FROM dead_letter")
        got = len({x[0] for x in rows} & ids)
        assert got == 1000, (got, Counter(d[2][:60] for d in dead))
        assert sorted(d[2].split(" (")[0] for d in dead) == [
            "event time 9999-12-31T23:59:59.000000Z is more than 86400 s ahead of the wall "
            "clock",
            "event_time attribute is not an ISO-8601 timestamp: 'garbage'",
            f"message of {len(json.dumps(big)):,} bytes is larger than --max-message-bytes "
            f"1,000,000"], dead
        assert {d[0] for d in dead} == {"click_stream:pubsub"}
        assert all(len(d[1]) < 10_000 for d in dead)  # the 9 MB payload is not stored
        assert top[:3] == [str(p) for p, _ in adds.most_common()]
        assert meta["all:current_to"] < "9999", meta  # the far-future event moved nothing
        # acked: nothing is left on the subscription for anyone
        assert emu.pull_all(sub, 1, timeout=5) == []
    finally:
        if stream is not None:
            stream.terminate()
            try:
                stream.wait(timeout=20)
            except subprocess.TimeoutExpired:
                stream.kill()
        redis.stop()
        emu.stop()


def test_spill_folders_of_killed_replays_are_removed_by_the_next_run(tmp_path, monkeypatch,
                                                                     capsys):
    import os
    import signal
    import subprocess
    import tempfile

    victim = subprocess.Popen(["sleep", "60"])
    os.kill(victim.pid, signal.SIGKILL)  # a run killed before its cleanup
    victim.wait()
    stale = tmp_path / f"shopstream-replay-{victim.pid}-0123456789ab"
    (stale / "warehouse").mkdir(parents=True)
    (stale / "0000-0-100.bin").write_bytes(b"x" * 100)
    alive = tmp_path / f"shopstream-replay-{os.getppid()}-0123456789ab"  # a live owner
    alive.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    rc, _, err = run(["replay", "--input", str(CORPUS / "noheader")], capsys)
    assert rc == 0, err[-2000:]
    assert not stale.exists()
    assert alive.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("shopstream-replay-")] == \
        [alive.name]  # and the run removed its own
