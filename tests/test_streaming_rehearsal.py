"""`shopstream replay --streaming` runs the live graph (stateful Sessionize, sliced
sharded engagement, two-stage rankings) on files: on generated data with redeliveries,
re-sent orders, a far-future event and shuffled lines, its warehouse tables and Redis
rankings of every horizon (1h, 24h, all) equal the bounded `replay` and the SQL oracle
(tests/reference_sql.py)."""
from __future__ import annotations

import random
import shutil

import duckdb
import pytest

from pipelines import cli, direct_runner_fix, replay_source
from tests.reference_sql import (
    assert_engagement_matches_oracle,
    reference_engagement,
    reference_enriched,
    reference_horizon_engagement,
)
from transforms import redis_sink
from transforms.ranking_store import HORIZONS
from transforms.scoring import DEFAULT_WEIGHTS, score_products

FEATURES = ("click_count", "item_detail_count", "add_to_cart_count", "homepage_count",
            "total_dwell_seconds", "purchases")
TABLES = {
    "events_enriched": "SELECT event_id, session_id, visit_id, event_name, event_time, "
                       "product_id, product_id_inferred, dwell_seconds FROM events_enriched",
    "product_engagement": "SELECT * FROM product_engagement",
    "top10_products": "SELECT * FROM top10_products",
    "top10_brands": "SELECT * FROM top10_brands",
    "top10_subcategories": "SELECT * FROM top10_subcategories",
    "top10_products_by_season_gender": "SELECT * FROM top10_products_by_season_gender",
}
TOP_N = 50
CHUNK_RECORDS = 400
FUTURE = "s-future,ADD_TO_CART,9999-12-31T23:59:59Z,e-future,WEB,\"{'product_id': 1, 'quantity': 1, 'item_price': 5}\""


def _hostile_copy(src, dst):
    """Shuffled click lines with ~3% redelivered (same event_id), orders re-sent 3x,
    and one valid event stamped in year 9999."""
    shutil.copytree(src, dst)
    rng = random.Random(3)
    for name, share, copies in (("click_stream.csv", 0.03, 1), ("transactions.csv", 0.05, 2)):
        path = dst / name
        header, *lines = path.read_text().splitlines()
        extra = [ln for ln in lines if rng.random() < share for _ in range(copies)]
        lines += extra
        if name == "click_stream.csv":
            lines.append(FUTURE)
        rng.shuffle(lines)
        path.write_text("\n".join([header, *lines]) + "\n")


class _LoggedFileSystems:
    """``replay_source``'s FileSystems, noting each event-time chunk the source opens."""

    def __init__(self, events):
        from apache_beam.io.filesystems import FileSystems

        self._fs, self._events = FileSystems, events

    def open(self, path, *args, **kwargs):
        self._events.append(("chunk", path.rsplit("/", 1)[-1]))
        return self._fs.open(path, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._fs, name)


def _logging_flush(events):
    """``RedisRankingWriter.flush`` noting, after each write, the as-of of ``all`` in
    Redis (``shopstream:meta``)."""
    original = redis_sink.RedisRankingWriter.flush

    def flush(self):
        ok = original(self)
        events.append(("redis", self.client.hget("shopstream:meta", "all:current_to_us")))
        return ok
    return flush


@pytest.fixture(scope="module")
def runs(tmp_path_factory, redis_session):
    from pipelines.generate import generate

    root = tmp_path_factory.mktemp("rehearsal")
    clean = root / "clean"
    generate(out_dir=str(clean), customers=120, products=60, days=40, seed=23)
    data = root / "data"
    _hostile_copy(clean, data)
    out = {"data": data, "clean": clean}
    base = redis_session.url.rsplit("/", 1)[0]
    for name, db, extra in (("bounded", 1, []), ("streaming", 2, ["--streaming"])):
        url = f"{base}/{db}"
        redis_session.client().execute_command("SELECT", db)
        warehouse = root / f"{name}.duckdb"
        with pytest.MonkeyPatch.context() as mp:
            # small event-time chunks: the watermark steps many times on this tiny set
            mp.setattr(replay_source, "CHUNK_RECORDS", CHUNK_RECORDS)
            mp.setattr(direct_runner_fix, "EVENT_TIME_STATS",
                       {"released_early": 0, "held_peak": 0})
            mp.setattr(direct_runner_fix, "FLOW_STATS", {"early_bundles": 0})
            events: list = []  # the source's chunks and the Redis writes, in order
            mp.setattr(replay_source, "FileSystems", _LoggedFileSystems(events))
            mp.setattr(redis_sink.RedisRankingWriter, "flush", _logging_flush(events))
            assert cli.main(["replay", "--input", str(data), "--warehouse", str(warehouse),
                             "--redis", url, *extra]) == 0
            out[name] = {"warehouse": warehouse, "redis": url, "events": events,
                         "timers": dict(direct_runner_fix.EVENT_TIME_STATS),
                         "flow": dict(direct_runner_fix.FLOW_STATS)}
    return out


def _rows(path, sql):
    con = duckdb.connect(str(path), read_only=True)
    try:
        return sorted(con.execute(sql).fetchall(), key=repr)
    finally:
        con.close()


@pytest.mark.parametrize("table", sorted(TABLES))
def test_streaming_rehearsal_tables_equal_the_bounded_replay(runs, table):
    bounded = _rows(runs["bounded"]["warehouse"], TABLES[table])
    assert bounded, table
    assert _rows(runs["streaming"]["warehouse"], TABLES[table]) == bounded


def test_streaming_rehearsal_equals_the_sql_oracle(runs):
    data = runs["clean"]  # the oracle reads the clean files: duplicates must not count
    rows = _rows(runs["streaming"]["warehouse"],
                 f"SELECT product_id, {', '.join(FEATURES)} FROM product_engagement")
    assert_engagement_matches_oracle(rows, data)
    enriched = reference_enriched(str(data / "click_stream.csv"))
    ids = {r[0] for r in _rows(runs["streaming"]["warehouse"], "SELECT event_id FROM events_enriched")}
    assert ids == set(enriched)


def test_duplicates_and_far_future_events_are_handled_in_both(runs):
    for name in ("bounded", "streaming"):
        dead = _rows(runs[name]["warehouse"], "SELECT raw, reason FROM dead_letter")
        future = [r for raw, r in dead if "e-future" in raw]
        assert len(future) == 1 and "ahead of the wall clock" in future[0], name


def _clients(runs):
    import redis

    return {n: redis.Redis.from_url(runs[n]["redis"], decode_responses=True)
            for n in ("bounded", "streaming")}


@pytest.mark.parametrize("horizon", HORIZONS)
def test_redis_rankings_of_every_horizon_equal_the_bounded_replay(runs, horizon):
    clients = _clients(runs)
    keys = sorted(clients["bounded"].keys(f"shopstream:top:{horizon}:*"))
    assert f"shopstream:top:{horizon}:products" in keys and len(keys) > 5
    assert sorted(clients["streaming"].keys(f"shopstream:top:{horizon}:*")) == keys
    for key in keys:
        want = clients["bounded"].zrevrange(key, 0, -1, withscores=True)
        assert want, key
        assert clients["streaming"].zrevrange(key, 0, -1, withscores=True) == want, key
    meta = [c.hgetall("shopstream:meta") for c in clients.values()]
    for field in (f"{horizon}:current_to_us", f"{horizon}:records", f"{horizon}:window_end_us"):
        assert meta[0][field] == meta[1][field], field
    for m in meta:  # none is current to year 9999
        assert m[f"{horizon}:current_to"] < "9999", horizon


@pytest.mark.parametrize("horizon", HORIZONS)
def test_redis_product_rankings_equal_the_sql_oracle(runs, horizon):
    """Scores from the oracle's engagement of the horizon (1h / 24h: the 60 minutes /
    24 hours up to the end of the newest 1-minute slice of the data)."""
    data = runs["clean"]
    clicks, orders = f"{data}/click_stream.csv", f"{data}/transactions.csv"
    seconds = {"1h": 3600, "24h": 86400}.get(horizon)
    table = (reference_engagement(clicks, orders) if seconds is None
             else reference_horizon_engagement(clicks, orders, seconds))
    assert table, horizon
    names = ("click_count", "item_detail_count", "add_to_cart_count", "homepage_count",
             "total_dwell_seconds", "purchases")
    scores = score_products({pid: dict(zip(names, f)) for pid, f in table.items()},
                            DEFAULT_WEIGHTS)
    for name, c in _clients(runs).items():
        got = c.zrevrange(f"shopstream:top:{horizon}:products", 0, -1, withscores=True)
        assert got, (name, horizon)
        for member, value in got:
            assert value == pytest.approx(scores[int(member)], rel=1e-9, abs=1e-12), (name, member)
        # nothing left out scores above the lowest score kept
        kept = {int(m) for m, _ in got}
        lowest = min(v for _, v in got)
        assert all(v <= lowest + 1e-9 for pid, v in scores.items() if pid not in kept), name
        assert len(got) == min(len(scores), TOP_N), name  # the default --top-n


def test_streaming_rehearsal_fires_timers_while_the_input_is_read(runs):
    """The watermark advances with the data: session timers fire between event-time
    chunks, long before the input ends, and at no time are most sessions held (the
    rehearsal's tables above are still equal to the bounded replay's)."""
    timers = runs["streaming"]["timers"]
    sessions = _rows(runs["bounded"]["warehouse"],
                     "SELECT count(DISTINCT session_id) FROM events_enriched")[0][0]
    assert timers["released_early"] > sessions  # several firings per session on average
    assert 0 < timers["held_peak"] < sessions / 2
    assert runs["bounded"]["timers"] == {"released_early": 0, "held_peak": 0}


def test_streaming_rehearsal_writes_redis_while_the_input_is_read(runs):
    """Downstream of Sessionize the graph runs as the watermark advances: the rankings
    in Redis are written many times before the source opens its last click chunk, their
    as-of moving forward step by step (and the final rankings above are still equal to
    the bounded replay's)."""
    events = runs["streaming"]["events"]
    chunks = [i for i, e in enumerate(events) if e[0] == "chunk" and e[1].startswith("click")]
    assert len(chunks) >= 8  # 400-record chunks
    before = [int(e[1]) for e in events[:chunks[-1]] if e[0] == "redis" and e[1]]
    assert len(set(before)) >= 3, events
    assert before == sorted(before)  # never older
    final = [int(e[1]) for e in events if e[0] == "redis" and e[1]][-1]
    assert before[-1] < final
    # orders are read in event time too, chunk by chunk among the clicks
    orders = [i for i, e in enumerate(events) if e[0] == "chunk" and e[1].startswith("trans")]
    assert len(orders) >= 2 and chunks[0] < orders[-1] < chunks[-1]
    assert runs["streaming"]["flow"]["early_bundles"] > len(chunks)
    assert runs["bounded"]["flow"] == {"early_bundles": 0}
    assert not [e for e in runs["bounded"]["events"] if e[0] == "chunk"]
