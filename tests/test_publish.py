"""`shopstream publish` against the real Pub/Sub emulator (and its sort without one)."""
from __future__ import annotations

import csv
import json
import random
import time
from pathlib import Path

import pytest

from pipelines import publish as pub
from pipelines.cli import main
from tests.emulators import PubSubEmulator
from transforms import records

BAD_CLICKS = [
    # unknown event name, bad time, ADD_TO_CART without product, wrong field count
    ["s-bad", "TELEPORT", "2021-01-05T10:00:00.000000Z", "e-bad-1", "WEB", ""],
    ["s-bad", "CLICK", "yesterday", "e-bad-2", "WEB", ""],
    ["s-bad", "ADD_TO_CART", "2021-01-05T10:00:00.000000Z", "e-bad-3", "WEB", ""],
    ["s-bad", "CLICK", "2021-01-05T10:00:00.000000Z"],
]
BAD_ORDERS = [
    ["2021-01-05T10:00:00.000000Z", "1", "b-bad", "s-x", "[{'product_id': 1}]", "OVO",
     "Success", "0", "", "0", "", "", "", "100"],  # booking line without quantity
]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A small generated data set (click file not in time order) plus bad rows."""
    from pipelines.generate import generate

    out = tmp_path_factory.mktemp("pubdata")
    generate(out_dir=str(out), customers=40, products=30, days=20, seed=5)
    for name, bad in (("click_stream.csv", BAD_CLICKS), ("transactions.csv", BAD_ORDERS)):
        path = out / name
        lines = path.read_text().splitlines(keepends=True)
        rows = lines[1:]
        random.Random(1).shuffle(rows)  # make sure the file is not sorted
        with path.open("w", newline="") as fh:
            fh.write(lines[0])
            fh.writelines(rows[:3])
            csv.writer(fh, lineterminator="\n").writerows(bad)
            fh.writelines(rows[3:])
    return out


def _expected(dataset: Path, kind: str):
    """(time_us, id) of the valid records of one table, in event-time order."""
    out = []
    for rec in records.read_csv_records(str(dataset / f"{kind}.csv"), kind):
        if isinstance(rec, records.DeadLetter):
            continue
        out.append(pub._key(kind, rec))
    return sorted(out)


# --------------------------------------------------------------------------- no emulator
def test_external_sort_bounded_runs_matches_sorted(tmp_path):
    rng = random.Random(3)
    items = [(rng.randrange(10**9), f"id{i:04d}", "click_stream", {"n": i}) for i in range(2500)]
    items.append((items[0][0], "id0000", "transactions", {"n": -1}))  # a tie across kinds
    merged, total = pub.external_sort(iter(items), str(tmp_path), chunk=300)
    got = list(merged)
    assert total == len(items) == len(got)
    assert len(list(tmp_path.glob("run-*.tsv"))) == 9  # ceil(2501 / 300) sorted runs
    assert got == sorted(items, key=lambda it: (it[0], it[1], it[2]))


def test_in_memory_sort_when_one_chunk(tmp_path):
    items = [(3, "c", "click_stream", {}), (1, "a", "click_stream", {"x": "t\tab\nnl"})]
    merged, total = pub.external_sort(iter(items), str(tmp_path), chunk=10)
    assert total == 2 and [i[1] for i in merged] == ["a", "c"]
    assert not list(tmp_path.iterdir())


def test_shifted_row_moves_every_time_field():
    row = {"created_at": "2021-01-01T00:00:00.000000Z",
           "shipment_date_limit": "2021-01-03T00:00:00.000000Z", "booking_id": "b"}
    out = pub.shifted_row("transactions", row, 86_400 * 10**6)
    assert out["created_at"] == "2021-01-02T00:00:00.000000Z"
    assert out["shipment_date_limit"] == "2021-01-04T00:00:00.000000Z"
    assert row["created_at"] == "2021-01-01T00:00:00.000000Z"  # not modified in place


def test_bad_topic_is_a_usage_error(dataset, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["publish", "--input", str(dataset), "--topic", "clicks"])
    assert exc.value.code == 2
    assert "projects/P/topics/T" in capsys.readouterr().err


def test_publish_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["publish", "--help"])
    out = capsys.readouterr().out
    for flag in ("--input", "--topic", "--orders-topic", "--speedup", "--rebase-time",
                 "--limit", "--batch-size"):
        assert flag in out


# --------------------------------------------------------------------------- emulator
@pytest.fixture(scope="module")
def pubsub(tmp_path_factory):
    emu = PubSubEmulator(tmp_path_factory.mktemp("pubsub")).start()
    yield emu
    emu.stop()


@pytest.fixture
def topics(pubsub, request):
    """Fresh click and order topics, each with one subscription."""
    tag = request.node.name.replace("[", "_").replace("]", "_")[:40]
    clicks = pubsub.create_topic(f"clicks-{tag}")
    orders = pubsub.create_topic(f"orders-{tag}")
    return {
        "clicks": clicks, "orders": orders,
        "clicks_sub": pubsub.create_subscription(clicks, f"clicks-{tag}-sub"),
        "orders_sub": pubsub.create_subscription(orders, f"orders-{tag}-sub"),
    }


@pytest.mark.emulator
def test_publish_in_event_time_order_with_rebase(pubsub, topics, dataset, monkeypatch, capsys):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub.host)
    clicks = _expected(dataset, "click_stream")
    orders = _expected(dataset, "transactions")
    first = min(clicks[0][0], orders[0][0])

    before = time.time()
    rc = main(["publish", "--input", str(dataset), "--topic", topics["clicks"],
               "--orders-topic", topics["orders"], "--rebase-time", "--batch-size", "100",
               "--no-progress"])
    after = time.time()
    out = capsys.readouterr()
    assert rc == 0, out.err
    summary = out.out.strip().splitlines()[-1]
    assert f"published={len(clicks) + len(orders)} " in summary
    assert f"(clicks={len(clicks)} orders={len(orders)})" in summary
    assert f"skipped_bad={len(BAD_CLICKS) + len(BAD_ORDERS)} " in summary
    assert "failed=0" in summary
    assert "skipped bad click_stream row (unknown event_name 'TELEPORT')" in out.err

    got = pubsub.pull_all(topics["clicks_sub"], len(clicks))
    got_orders = pubsub.pull_all(topics["orders_sub"], len(orders))
    assert len(got) == len(clicks) and len(got_orders) == len(orders)

    # publish order = event-time order; the attribute is RFC 3339 with Z
    times = [m.attributes["event_time"] for m in got]
    assert all(t.endswith("Z") for t in times)
    us = [records.parse_time_us(t, "event_time") for t in times]
    assert us == sorted(us)
    assert [m.attributes["event_id"] for m in got] == [ident for _, ident in clicks]

    # rebased: the first event is "now", the gaps are the original ones
    all_us = sorted(us + [records.parse_time_us(m.attributes["event_time"], "t") for m in got_orders])
    assert before - 1 <= all_us[0] / 1e6 <= after + 1
    shift = all_us[0] - first
    assert [u - shift for u in us] == [t for t, _ in clicks]

    # payloads: JSON with the CSV field names that the pipeline's parser accepts, and
    # whose event_time agrees with the attribute
    for m in got[:50]:
        obj = json.loads(m.data)
        assert set(obj) == set(records.CLICK_COLUMNS)
        rec = records.parse_json("click_stream", m.data)
        assert rec.event_id == m.attributes["event_id"]
        assert records.format_time_us(rec.event_time_us) == m.attributes["event_time"]
    for m in got_orders:
        rec = records.parse_json("transactions", m.data)
        assert m.attributes["booking_id"] == m.attributes["event_id"] == rec.booking_id
        assert records.format_time_us(rec.created_at_us) == m.attributes["event_time"]
    assert [m.attributes["booking_id"] for m in got_orders] == [i for _, i in orders]

    # the attribute is what Beam's ReadFromPubSub(timestamp_attribute=...) parses
    from apache_beam.utils.timestamp import Timestamp
    assert Timestamp.from_rfc3339(times[0]).micros == us[0]


@pytest.mark.emulator
def test_publish_limit_without_rebase_keeps_original_times(pubsub, topics, dataset, monkeypatch,
                                                           capsys):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub.host)
    clicks = _expected(dataset, "click_stream")
    rc = main(["publish", "--input", str(dataset / "click_stream.csv"),
               "--topic", topics["clicks"], "--limit", "10", "--no-progress"])
    assert rc == 0
    assert "published=10 " in capsys.readouterr().out
    got = pubsub.pull_all(topics["clicks_sub"], 10, timeout=10)
    assert [(records.parse_time_us(m.attributes["event_time"], "t"), m.attributes["event_id"])
            for m in got] == clicks[:10]


@pytest.mark.emulator
def test_publish_speedup_paces_by_event_time_gaps(pubsub, topics, tmp_path, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub.host)
    with (tmp_path / "click_stream.csv").open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(records.CLICK_COLUMNS)
        for i, sec in enumerate((20, 0, 10)):  # unsorted; 20 s of event time in all
            w.writerow([f"s{i}", "HOMEPAGE", f"2021-03-01T00:00:{sec:02d}.000000Z", f"e{i}",
                        "MOBILE", ""])
    t0 = time.monotonic()
    summary = pub.publish(str(tmp_path), topics["clicks"], speedup=20.0, progress=False)
    elapsed = time.monotonic() - t0
    assert summary.published == 3 and summary.failed == 0
    assert elapsed >= 0.95  # 20 s of event time at 20× ≈ 1 s
    got = pubsub.pull_all(topics["clicks_sub"], 3, timeout=10)
    assert [m.attributes["event_id"] for m in got] == ["e1", "e2", "e0"]


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00Z", "0999-12-31T23:59:59.5Z",
                                  "1969-12-31T23:59:59.999999Z", "2019-09-06T15:54:32.821085Z",
                                  "2019-09-06T22:54:32.8+07:00"])
def test_the_event_time_attribute_is_always_rfc3339(when):
    """What `publish` stamps is what Pub/Sub readers parse for `timestamp_attribute`
    (RFC 3339; Beam's own parser here): a valid record never gets an unusable attribute."""
    from apache_beam.utils.timestamp import Timestamp

    from transforms.pubsub_source import message_event_time_us

    t_us = records.parse_time_us(when, "event_time")
    _, attrs = pub.message(pub.CLICKS, t_us, "e-1", {"event_time": when})
    assert len(attrs["event_time"].split("-")[0]) == 4  # a 4-digit year
    assert Timestamp.from_rfc3339(attrs["event_time"]).micros == t_us
    assert message_event_time_us(attrs, None) == t_us
