"""The live path end to end: the real Pub/Sub emulator → `shopstream stream` (DirectRunner,
streaming) → a real Redis, read back with `shopstream rankings`."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from pipelines import cli
from tests.emulators import PubSubEmulator

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

PRODUCTS = """id,gender,masterCategory,subCategory,articleType,baseColour,season,year,usage,productDisplayName
101,Men,Footwear,Shoes,Casual Shoes,Blue,Summer,2012,Casual,Puma Men Blue Shoes
202,Women,Apparel,Topwear,Tops,Red,Winter,2015,Casual,Vero Moda Women Red Top
303,Men,Accessories,Watches,Watches,Black,Fall,2016,Casual,Titan Men Black Watch
"""


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _session(start: dt.datetime, product: int, adds: int):
    """A visit: HOMEPAGE, CLICK, ITEM_DETAIL, then ``adds`` ADD_TO_CARTs of ``product``."""
    sid = str(uuid.uuid4())
    names = ["HOMEPAGE", "CLICK", "ITEM_DETAIL"] + ["ADD_TO_CART"] * adds
    out = []
    for i, name in enumerate(names):
        meta = (str({"product_id": product, "quantity": 1, "item_price": 100000})
                if name == "ADD_TO_CART" else "")
        out.append({"session_id": sid, "event_name": name,
                    "event_time": _iso(start + dt.timedelta(seconds=2 * i)),
                    "event_id": str(uuid.uuid4()), "traffic_source": "MOBILE",
                    "event_metadata": meta})
    return out


def _settled_scores(events, products_csv) -> dict:
    """The all-time product scores once every visit has settled: the SPEC §2 reference
    (whole sessions, no Beam) over the distinct events, default weights as the stream."""
    from transforms import engagement, records, scoring, session_rules, slices, top_n

    unique, _ = session_rules.drop_duplicates(records.parse_click(e) for e in events)
    table = engagement.compute_engagement(session_rules.enrich_session(unique, visit_gap=3))
    snap = top_n.make_snapshot("all", None, table, slices.load_products([str(products_csv)]),
                               scoring.DEFAULT_WEIGHTS)
    return dict(snap.rankings["products"]), snap.records


def _publish(emu: PubSubEmulator, topic: str, events) -> None:
    from google.cloud import pubsub_v1

    with emu.env():
        client = pubsub_v1.PublisherClient()
        futures = [client.publish(topic, json.dumps(e).encode(), event_time=e["event_time"],
                                  event_id=e["event_id"]) for e in events]
        for f in futures:
            f.result(timeout=30)


@pytest.fixture
def pubsub(tmp_path):
    emu = PubSubEmulator(tmp_path / "pubsub").start()
    yield emu
    emu.stop()


def test_published_events_show_up_in_rankings(pubsub, redis_server, tmp_path, capsys):
    topic = pubsub.create_topic("clicks")
    sub = pubsub.create_subscription(topic, "clicks-sub")
    products = tmp_path / "product.csv"
    products.write_text(PRODUCTS)
    env = {**os.environ, "PUBSUB_EMULATOR_HOST": pubsub.host}
    stream = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "stream", "--subscription", sub,
         "--products", str(products), "--redis", redis_server.url, "--visit-gap", "3",
         "--runner=DirectRunner"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(5)  # let the reader subscribe before publishing
        now = dt.datetime.now(dt.timezone.utc)
        events = (_session(now, 303, 3) + _session(now, 101, 1)
                  + [dict(e, event_id=e["event_id"]) for e in _session(now, 202, 2)])
        events.append(dict(events[-1]))  # a redelivered duplicate (same event_id)
        events.append({"session_id": "s", "event_name": "NOPE", "event_time": _iso(now),
                       "event_id": "bad-1", "traffic_source": "WEB", "event_metadata": ""})
        _publish(pubsub, topic, events)
        client = redis_server.client()
        # adds show up at once, inferred views and dwell once their visit has settled:
        # wait for the settled rankings (the reference's scores), not the first three
        settled, settled_records = _settled_scores(events[:-1], products)
        deadline = time.time() + 150
        scores = {}
        while time.time() < deadline and stream.poll() is None:
            scores = dict(client.zrevrange("shopstream:top:all:products", 0, -1,
                                           withscores=True))
            if scores == pytest.approx(settled, rel=1e-9):
                break
            time.sleep(1)
        assert stream.poll() is None, stream.stdout.read()[-3000:]
        assert scores == pytest.approx(settled, rel=1e-9)
        assert client.zrevrange("shopstream:top:all:products", 0, -1) == ["303", "202", "101"]
        # duplicates are not double counted: 202 has 2 adds + 3 inferred views, never 3
        # adds (15 records counted; the redelivered add would make 16)
        assert settled_records == 15
        assert client.hget("shopstream:meta", "all:records") == str(settled_records)
        assert client.zscore("shopstream:top:all:products", "202") < \
            client.zscore("shopstream:top:all:products", "303")
        assert client.zrevrange("shopstream:top:all:brands", 0, 0) == ["Titan"]
        capsys.readouterr()
        assert cli.main(["rankings", "products", "--json", "--redis", redis_server.url]) == 0
        items = json.loads(capsys.readouterr().out)
        assert [i["id"] for i in items] == [303, 202, 101]
        assert items[0]["name"] == "Titan Men Black Watch"
    finally:
        stream.terminate()
        try:
            stream.wait(timeout=20)
        except subprocess.TimeoutExpired:
            stream.kill()
