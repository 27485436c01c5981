"""The rankings HTTP API against a real redis-server (FastAPI TestClient)."""
from __future__ import annotations

import time
import warnings

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2; httpx is what is pinned
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from pipelines import serve

PRODUCTS = {15315: ("Puma Men Blue Shoes", 9.5), 54728: ("Nike Women Red Tshirt", 8.25),
            20001: ("Adidas Unisex Cap", 7.0), 20002: ("Fabindia Women Kurta", 6.5)}
PRODUCTS.update({30000 + i: (f"Roadster Men Item {i}", 5.0 - i / 10) for i in range(20)})
WRITTEN_AGO = 5.0


def fill_redis(client, now: float | None = None) -> None:
    """Rankings in the SPEC §4 key layout, as a writer would leave them."""
    now = time.time() if now is None else now
    p = client.pipeline()
    p.hset("shopstream:names:products", mapping={str(k): v[0] for k, v in PRODUCTS.items()})
    for horizon in ("1h", "24h", "all"):
        scale = {"1h": 0.1, "24h": 0.5, "all": 1.0}[horizon]
        p.zadd(f"shopstream:top:{horizon}:products",
               {str(k): v[1] * scale for k, v in PRODUCTS.items()})
        p.zadd(f"shopstream:top:{horizon}:brands", {"Puma": 30 * scale, "Nike": 20 * scale,
                                                    "Adidas": 10 * scale})
        p.zadd(f"shopstream:top:{horizon}:subcategories", {"Shoes": 40 * scale, "Topwear": 35 * scale})
    p.zadd("shopstream:top:all:products:gender:Men", {"15315": 9.5, "30001": 4.9})
    p.zadd("shopstream:top:all:products:season:Summer", {"54728": 8.25})
    p.zadd("shopstream:top:24h:products:season:Summer:gender:Women", {"54728": 4.0, "20002": 3.0})
    p.hset("shopstream:meta", mapping=meta_fields(now))
    p.execute()


def _us(t: float) -> int:
    return int(t * 1_000_000)


def _iso(us: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(us // 1_000_000)) + f".{us % 1_000_000:06d}Z"


def meta_fields(now: float) -> dict:
    """`shopstream:meta` as transforms.redis_sink writes it: per horizon and overall."""
    current = {"1h": 1648721700.0, "24h": 1648721700.0, "all": 1648721700.0}  # 2022-03-31 10:15Z
    current["1h"] -= 60  # the 1h ranking was written a little earlier
    written = {"1h": now - 65, "24h": now - WRITTEN_AGO, "all": now - WRITTEN_AGO}
    fields = {}
    for h in current:
        c, w = _us(current[h]), _us(written[h])
        fields.update({f"{h}:current_to_us": c, f"{h}:current_to": _iso(c),
                       f"{h}:written_at_us": w, f"{h}:written_at": _iso(w),
                       f"{h}:records": 1000, f"{h}:window_end_us": ""})
    c, w = _us(max(current.values())), _us(now - WRITTEN_AGO)
    fields.update({"current_to_us": c, "current_to": _iso(c), "written_at_us": w,
                   "written_at": _iso(w)})
    return fields


@pytest.fixture
def api(redis_server):
    fill_redis(redis_server.client())
    with TestClient(serve.create_app(redis_server.url)) as client:
        yield client


def test_products_ranking_shape_and_order(api):
    r = api.get("/api/rankings/products")
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("dimension", "horizon", "gender", "season")} == {
        "dimension": "products", "horizon": "all", "gender": None, "season": None}
    items = body["items"]
    assert len(items) == 10
    assert items[0] == {"rank": 1, "id": 15315, "name": "Puma Men Blue Shoes", "score": 9.5}
    assert [i["rank"] for i in items] == list(range(1, 11))
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)
    assert set(items[0]) == {"rank", "id", "name", "score"}
    assert r.headers["cache-control"] == "no-store"


def test_meta_freshness_per_horizon(api):
    meta = api.get("/api/rankings/brands?horizon=24h").json()["meta"]
    assert meta["current_to"] == "2022-03-31T10:15:00Z" and meta["horizon"] == "24h"
    assert WRITTEN_AGO - 1 <= meta["age_seconds"] <= WRITTEN_AGO + 30
    assert meta["written_at"].endswith("Z") and meta["records"] == 1000
    hour = api.get("/api/rankings/products?horizon=1h").json()["meta"]
    assert hour["current_to"] == "2022-03-31T10:14:00Z" and 64 <= hour["age_seconds"] <= 95


def test_filters_pick_the_spec_keys(api):
    men = api.get("/api/rankings/products?gender=men&limit=50").json()  # case-insensitive
    assert men["gender"] == "Men" and [i["id"] for i in men["items"]] == [15315, 30001]
    summer = api.get("/api/rankings/products?season=Summer").json()["items"]
    assert [i["id"] for i in summer] == [54728]
    both = api.get("/api/rankings/products?season=summer&gender=Women&horizon=24h").json()
    assert (both["season"], both["gender"]) == ("Summer", "Women")
    assert [(i["rank"], i["id"], i["name"]) for i in both["items"]] == [
        (1, 54728, "Nike Women Red Tshirt"), (2, 20002, "Fabindia Women Kurta")]
    hour = api.get("/api/rankings/products?horizon=1h&limit=3").json()["items"]
    assert len(hour) == 3 and hour[0]["score"] == pytest.approx(0.95)
    any_gender = api.get("/api/rankings/products?gender=&season=any").json()
    assert any_gender["gender"] is None and len(any_gender["items"]) == 10


def test_brands_and_subcategories(api):
    brands = api.get("/api/rankings/brands").json()["items"]
    assert brands == [{"rank": 1, "id": "Puma", "name": "Puma", "score": 30.0},
                      {"rank": 2, "id": "Nike", "name": "Nike", "score": 20.0},
                      {"rank": 3, "id": "Adidas", "name": "Adidas", "score": 10.0}]
    subs = api.get("/api/rankings/subcategories?horizon=24h&limit=1").json()["items"]
    assert subs == [{"rank": 1, "id": "Shoes", "name": "Shoes", "score": 20.0}]


def test_empty_ranking_is_an_empty_list(api):
    r = api.get("/api/rankings/products?gender=Girls&season=Winter&horizon=1h")
    assert r.status_code == 200 and r.json()["items"] == []


@pytest.mark.parametrize("url, words", [
    ("/api/rankings/shoes", ["products", "brands", "subcategories"]),
    ("/api/rankings/products?horizon=7d", ["1h", "24h", "all"]),
    ("/api/rankings/products?limit=0", ["greater than or equal to 1"]),
    ("/api/rankings/products?limit=51", ["less than or equal to 50"]),
    ("/api/rankings/products?limit=ten", ["integer"]),
    ("/api/rankings/products?gender=Robots", ["unknown gender", "Men", "Women"]),
    ("/api/rankings/products?season=Monsoon", ["unknown season", "Summer"]),
    ("/api/rankings/brands?gender=Men", ["only to the products ranking"]),
    ("/api/rankings/subcategories?season=Summer", ["only to the products ranking"]),
])
def test_bad_parameters_are_4xx_with_a_clear_message(api, url, words):
    r = api.get(url)
    assert r.status_code == 422, r.text
    for w in words:
        assert w in r.text


def test_only_get(api):
    assert api.post("/api/rankings/products").status_code == 405
    assert api.delete("/api/rankings/products").status_code == 405


def test_nothing_writes_to_redis(api, redis_server):
    c = redis_server.client()
    before = {k: c.type(k) for k in c.keys("*")}
    c.config_resetstat()
    for url in ("/api/rankings/products", "/api/rankings/products?gender=Men&season=Summer",
                "/api/rankings/brands?horizon=1h", "/api/rankings/subcategories", "/healthz",
                "/api/rankings/products?limit=99"):
        api.get(url)
    stats = c.info("commandstats")
    assert stats, "no command reached Redis"
    for name in stats:
        base = name.removeprefix("cmdstat_").split("|")[0]
        flags = set(c.execute_command("COMMAND", "INFO", base)[base]["flags"])
        assert "write" not in flags, f"the API ran a write command: {name}"
    assert {k: c.type(k) for k in c.keys("*")} == before


def test_healthz_ok_then_503_when_redis_stops(api, redis_server):
    r = api.get("/healthz")
    assert r.status_code == 200
    h = r.json()
    assert h["status"] == "ok" and h["redis"] == "ok" and h["rankings"] == "present"
    assert h["current_to"] == "2022-03-31T10:15:00Z"
    assert set(h["horizons"]) == {"1h", "24h", "all"}
    assert h["horizons"]["1h"]["current_to"] == "2022-03-31T10:14:00Z"
    assert WRITTEN_AGO - 1 <= h["rankings_age_seconds"] <= WRITTEN_AGO + 30

    redis_server.stop()
    t0 = time.monotonic()
    r = api.get("/healthz")
    assert r.status_code == 503
    assert r.json()["redis"] == "unreachable"
    r = api.get("/api/rankings/products")
    assert r.status_code == 503 and "Redis is unreachable" in r.json()["detail"]
    assert time.monotonic() - t0 < 5  # fails fast, no long retry loop


def test_healthz_without_rankings(redis_server):
    with TestClient(serve.create_app(redis_server.url)) as client:
        h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["rankings"] == "none written yet"
    assert h["rankings_age_seconds"] is None


def test_openapi_page_and_static(api):
    spec = api.get("/openapi.json").json()
    assert {"/api/rankings/{dimension}", "/healthz"} <= set(spec["paths"])
    assert not any(m != "get" for p in spec["paths"].values() for m in p)
    assert api.get("/docs").status_code == 200
    page = api.get("/")
    assert page.status_code == 200 and 'src="/static/app.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text
    assert api.get("/static/app.js").status_code == 200
    assert api.get("/static/style.css").status_code == 200
    assert api.get("/static/nope.js").status_code == 404
    assert api.get("/static/..%2Fserve.py").status_code == 404


def test_report_endpoint(redis_server, tmp_path):
    from tests.test_report import fill_warehouse

    with TestClient(serve.create_app(redis_server.url)) as client:
        assert client.get("/report").status_code == 404
    wh = fill_warehouse(tmp_path / "wh.duckdb", tables={"daily_sales", "top10_brands"})
    with TestClient(serve.create_app(redis_server.url, warehouse=str(wh))) as client:
        r = client.get("/report")
        assert r.status_code == 200 and 'id="chart-sales-daily"' in r.text
        assert client.get("/healthz").json()["warehouse"] == str(wh)
    missing = str(tmp_path / "missing.duckdb")
    with TestClient(serve.create_app(redis_server.url, warehouse=missing)) as client:
        assert client.get("/report").status_code == 404


def test_freshness_parsing():
    now = 1_700_000_100.0
    f = serve.freshness({"current_to": "2022-03-31T10:15:00.123456Z",
                         "written_at": str(int((now - 40) * 1000))}, now=now)  # epoch ms
    assert f["current_to"] == "2022-03-31T10:15:00.123456Z" and f["age_seconds"] == 40.0
    meta = {"current_to": "x", "written_at_us": int((now - 7) * 1e6),
            "horizons": {"1h": {"current_to_us": 1648721700 * 10**6,
                                "written_at": "2023-11-14T22:14:20+00:00", "records": 3}}}
    f = serve.freshness(meta, "1h", now=now)
    assert f == {"horizon": "1h", "current_to": "2022-03-31T10:15:00Z",
                 "written_at": "2023-11-14T22:14:20Z", "age_seconds": 40.0, "records": 3}
    f = serve.freshness(meta, "24h", now=now)  # no per-horizon fields: the overall ones
    assert f["horizon"] is None and f["age_seconds"] == 7.0 and f["current_to"] == "x"
    assert serve.freshness({}, now=now)["age_seconds"] is None


def test_cli_registers_serve(redis_server):
    from pipelines.cli import build_parser

    argv = ["serve", "--redis", redis_server.url, "--port", "9", "--warehouse", "w.duckdb"]
    args = build_parser(argv).parse_args(argv)
    assert args.func is serve.run and args.port == 9 and args.host == "127.0.0.1"


# --------------------------------------------------------------------------- issue 11
@pytest.mark.parametrize("path", ["/healthz", "/api/rankings/products", "/api/rankings/brands",
                                  "/", "/openapi.json", "/static/app.js"])
def test_head_is_answered_on_every_get_route(api, path):
    get, head = api.get(path), api.head(path)
    assert get.status_code == 200, (path, get.text[:200])
    assert head.status_code == 200, path
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_a_non_finite_score_is_never_served(api, redis_server):
    client = redis_server.client()
    client.zadd("shopstream:top:all:products", {"15315": float("inf")})
    r = api.get("/api/rankings/products")
    assert r.status_code == 503
    assert "non-finite score (inf) for '15315'" in r.json()["detail"]
    assert api.head("/api/rankings/products").status_code == 503
    # other rankings are still served
    assert api.get("/api/rankings/brands").status_code == 200


def test_product_names_are_read_again_when_the_ranking_is_rewritten(api, redis_server):
    client = redis_server.client()
    first = api.get("/api/rankings/products").json()["items"][0]
    assert first["name"] == "Puma Men Blue Shoes"
    client.hset("shopstream:names:products", "15315", "Puma Men Blue Shoes v2")
    assert api.get("/api/rankings/products").json()["items"][0]["name"] == "Puma Men Blue Shoes"
    client.hset("shopstream:meta", "all:written_at_us", int(time.time() * 1e6))
    assert api.get("/api/rankings/products").json()["items"][0]["name"] == \
        "Puma Men Blue Shoes v2"


# --------------------------------------------------------------------------- answering fast
def _body_without_age(r):
    body = r.json()
    body["meta"].pop("age_seconds", None)
    return body


@pytest.mark.parametrize("query", ["", "?horizon=24h", "?horizon=1h&limit=3",
                                   "?gender=men&season=SUMMER&limit=50", "?gender=&season=any",
                                   "?horizon=24h&season=Summer&gender=Women"])
def test_plain_answers_equal_the_routes_answers(api, query):
    """Well-formed requests are answered before FastAPI's route; an unknown parameter
    sends the same request through the route: both answers are the same."""
    plain = f"/api/rankings/products{query}"
    routed = plain + ("&" if query else "?") + "unknown=1"
    assert serve.plain_ranking_query("/api/rankings/products", query[1:].encode()) is not None
    assert serve.plain_ranking_query("/api/rankings/products", routed.split("?")[1].encode()) is None
    a, b = api.get(plain), api.get(routed)
    assert a.status_code == b.status_code == 200
    assert _body_without_age(a) == _body_without_age(b)
    for h in ("content-type", "cache-control"):
        assert a.headers[h] == b.headers[h]
    head = api.head(plain)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"] == a.headers["content-type"]
    # the GET's length, give or take the digits of age_seconds (it moves between requests)
    assert abs(int(head.headers["content-length"]) - len(a.content)) <= 6


@pytest.mark.parametrize("path, query", [
    ("/api/rankings/shoes", ""), ("/api/rankings/products/", ""),
    ("/api/rankings/products", "limit=0"), ("/api/rankings/products", "limit=51"),
    ("/api/rankings/products", "limit=+5"), ("/api/rankings/products", "limit=%205"),
    ("/api/rankings/products", "horizon=7d"), ("/api/rankings/products", "horizon=1h&horizon=24h"),
    ("/api/rankings/products", "gender=Robots"), ("/api/rankings/brands", "gender=Men"),
])
def test_anything_unusual_is_left_to_the_route(path, query):
    assert serve.plain_ranking_query(path, query.encode()) is None


def test_a_repeated_request_reads_only_the_version_fields(api, redis_server):
    c = redis_server.client()
    api.get("/api/rankings/products?horizon=24h")
    c.config_resetstat()
    for _ in range(5):
        assert api.get("/api/rankings/products?horizon=24h").status_code == 200
    stats = {k.removeprefix("cmdstat_"): v["calls"] for k, v in c.info("commandstats").items()}
    stats.pop("info", None), stats.pop("config|resetstat", None)
    assert stats == {"hmget": 5}
    # a writer's new version (ranking + meta in one MULTI/EXEC) is served at once
    p = c.pipeline(transaction=True)
    p.zadd("shopstream:top:24h:products", {"20002": 99.0})
    p.hset("shopstream:meta", "24h:written_at_us", int(time.time() * 1e6))
    p.execute()
    first = api.get("/api/rankings/products?horizon=24h").json()["items"][0]
    assert first == {"rank": 1, "id": 20002, "name": "Fabindia Women Kurta", "score": 99.0}


def test_requests_together_share_a_version_read_but_never_an_earlier_one(redis_server):
    """Concurrent requests share one HMGET of the version fields; a request that starts
    after a version read was sent gets its own, so it sees every write before it."""
    import asyncio

    fill_redis(redis_server.client())

    async def scenario():
        client = serve.make_client(redis_server.url)
        reader = serve.RankingsReader(client, "test")
        sent = asyncio.Event()
        hmget = client.hmget

        async def counting_hmget(*args):
            calls.append(args[0])
            sent.set()
            return await hmget(*args)

        calls = []
        client.hmget = counting_hmget
        try:
            answers = await asyncio.gather(*(reader.answer("brands", "all", None, None, 10)
                                             for _ in range(16)))
            assert {status for status, _ in answers} == {200}
            assert calls.count("shopstream:meta") == 1  # one version read for all 16
            sent.clear()
            early = asyncio.ensure_future(reader.answer("brands", "all", None, None, 10))
            await sent.wait()  # its version read is on its way: now a writer commits
            p = redis_server.client().pipeline(transaction=True)
            p.zadd("shopstream:top:all:brands", {"Adidas": 50.0})
            p.hset("shopstream:meta", "all:written_at_us", int(time.time() * 1e6))
            p.execute()
            status, body = await reader.answer("brands", "all", None, None, 10)
            await early
            import orjson
            assert status == 200 and orjson.loads(body)["items"][0]["id"] == "Adidas"
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_every_write_of_the_real_writer_is_served_at_once(redis_server):
    """The API trusts the version fields; the writer (transforms.redis_sink) changes them
    with every ranking it writes, for that horizon only, so each write is served next."""
    from tests.test_redis_sink import snap, writer

    w = writer(redis_server.url)
    with TestClient(serve.create_app(redis_server.url)) as api:
        for i, scores in enumerate(({1: 5.0, 2: 4.0}, {2: 6.0, 1: 5.0}, {3: 1.0})):
            assert w.write(snap("all", 60 * (i + 1), scores)) is True
            w.write(snap("1h", 60 * (i + 1), {9: 1.0}))
            items = api.get("/api/rankings/products").json()["items"]
            assert [(x["id"], x["score"]) for x in items] == sorted(
                scores.items(), key=lambda kv: -kv[1])
            assert items[0]["name"] == f"Product {items[0]['id']}"
        before = redis_server.client().hmget("shopstream:meta", "all:written_at_us")
        w.write(snap("1h", 600, {8: 2.0}))  # another horizon: the all-time version stays
        assert redis_server.client().hmget("shopstream:meta", "all:written_at_us") == before
        assert api.get("/api/rankings/products?horizon=1h").json()["items"][0]["id"] == 8
