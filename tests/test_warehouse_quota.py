"""BigQuery quota of the live job, computed from the built graph: each write of an
all-time snapshot table is one load job (WRITE_TRUNCATE), BigQuery allows 1,500 load
jobs per table per day, and the target is a third of that."""
from __future__ import annotations

import math

import pytest

SNAPSHOT_TABLES = ("product_engagement", "top10_products", "top10_brands",
                   "top10_subcategories", "top10_products_by_season_gender")
DAY_MS = 86_400_000
LIMIT = 1500 // 3


def fires_per_day(trigger) -> float:
    """Panes per key per day of a trigger on the global window of an unbounded input
    (inf when it can fire per element or its rate is not bounded by processing time)."""
    kind = trigger.WhichOneof("trigger")
    if kind in ("default", "never", "after_end_of_window"):
        return 0.0  # the global window ends only when the job does
    if kind == "repeat":
        sub = trigger.repeat.subtrigger
        if sub.WhichOneof("trigger") == "after_processing_time":
            delay = sum(t.delay.delay_millis for t in sub.after_processing_time.timestamp_transforms
                        if t.WhichOneof("timestamp_transform") == "delay")
            return DAY_MS / delay if delay > 0 else math.inf
        if sub.WhichOneof("trigger") == "after_any":
            return sum(fires_per_day(_repeat(s)) for s in sub.after_any.subtriggers)
    return math.inf


def _repeat(sub):
    from apache_beam.portability.api import beam_runner_api_pb2

    t = beam_runner_api_pb2.Trigger()
    t.repeat.subtrigger.CopyFrom(sub)
    return t


def _main_input(t):
    """The main input PCollection of a leaf transform (not its side inputs)."""
    from apache_beam.portability.api import beam_runner_api_pb2

    side = set()
    if t.spec.urn == "beam:transform:pardo:v1":
        side = set(beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload).side_inputs)
    mains = [pc for tag, pc in sorted(t.inputs.items()) if tag not in side]
    return mains[0] if mains else None


def nearest_group_by_key(pipeline_proto, step: str):
    """Walking up the main inputs from ``step``: (GroupByKey transform, its input), or
    (None, None) when the chain reaches a source first."""
    c = pipeline_proto.components
    by_name = {t.unique_name: t for t in c.transforms.values()}
    producer = {pc: t for t in c.transforms.values() if not t.subtransforms
                for pc in t.outputs.values()}
    t = by_name[step]
    while True:
        pc = _main_input(t) if not t.subtransforms else next(iter(t.inputs.values()), None)
        if pc is None or pc not in producer:
            return None, None
        t = producer[pc]
        if t.spec.urn == "beam:transform:group_by_key:v1":
            return t, next(iter(t.inputs.values()))


def writes_per_day(pipeline_proto, write_step: str) -> float:
    """Writes per day of ``write_step`` (one per element): its nearest GroupByKey's
    input trigger bounds the panes per day, and that key is a constant (one element per
    pane). Without such a GroupByKey every upstream element is a write: unbounded."""
    c = pipeline_proto.components
    gbk, gbk_in = nearest_group_by_key(pipeline_proto, write_step)
    if gbk is None or "/EveryRefresh/" not in gbk.unique_name:
        return math.inf  # one write per upstream element (rate not bounded by the graph)
    ws = c.windowing_strategies[c.pcollections[gbk_in].windowing_strategy_id]
    return fires_per_day(ws.trigger)


def _live_graph(*extra):
    from pipelines.launch import build

    p = build("streaming", ["--runner=DirectRunner",
                            "--subscription=projects/my-project/subscriptions/clicks",
                            "--warehouse=bq://my-project.shopstream",
                            "--redis=redis://10.0.0.3:6379/0", *extra])
    return p.to_runner_api()


@pytest.fixture(scope="module")
def default_graph():
    return _live_graph()


@pytest.mark.parametrize("table", SNAPSHOT_TABLES)
def test_snapshot_table_load_jobs_per_day_at_default_settings(default_graph, table):
    step = "WriteEngagement" if table == "product_engagement" else f"Write_{table}"
    per_day = writes_per_day(default_graph, f"{step}/ReplaceTable")
    assert per_day <= LIMIT, f"{table}: {per_day:.0f} load jobs/day > {LIMIT}"
    assert per_day == DAY_MS / 900_000  # 96: one per 15 min


def test_warehouse_refresh_sets_the_rate():
    graph = _live_graph("--warehouse_refresh=60")
    assert writes_per_day(graph, "WriteEngagement/ReplaceTable") == 1440  # over the limit


def test_rate_model_counts_an_unthrottled_write_as_unbounded():
    """The rate model itself: a write with no GroupByKey above it writes per element."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from transforms import sinks

    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    (p | beam.io.ReadFromPubSub(subscription="projects/my-project/subscriptions/s")
     | "ReplaceTable" >> beam.ParDo(sinks._WriteSnapshotFn("bq://my-project.d", "top10_brands")))
    assert writes_per_day(p.to_runner_api(), "ReplaceTable") == math.inf


def upstream_steps(pipeline_proto, step: str) -> set:
    """Unique names of every leaf transform ``step`` depends on (all inputs)."""
    c = pipeline_proto.components
    by_name = {t.unique_name: t for t in c.transforms.values()}
    producer = {pc: t for t in c.transforms.values() if not t.subtransforms
                for pc in t.outputs.values()}
    seen, todo = set(), [by_name[step]]
    while todo:
        t = todo.pop()
        for pc in t.inputs.values():
            up = producer.get(pc)
            if up is not None and up.unique_name not in seen:
                seen.add(up.unique_name)
                todo.append(up)
    return seen


def test_redis_keeps_its_fast_refresh(default_graph):
    """The Redis write is not behind the warehouse throttle: no step upstream of it is
    part of EveryRefresh (while the warehouse snapshot writes are)."""
    redis_up = upstream_steps(default_graph, "WriteRedis/Write")
    assert any(name.startswith("Rankings/") for name in redis_up)  # the walk reached it
    assert not [n for n in redis_up if "EveryRefresh" in n]
    assert [n for n in upstream_steps(default_graph, "WriteEngagement/ReplaceTable")
            if "EveryRefresh" in n]


def test_every_refresh_writes_the_newest_snapshot_once_per_refresh():
    """TestStream in processing time: three snapshots within one refresh → one (the
    newest); one more after the next refresh → one more."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream
    from apache_beam.testing.util import assert_that, equal_to

    from transforms.sinks import EveryRefresh

    stream = (TestStream()
              .advance_watermark_to(0)
              .add_elements([["a1"]]).advance_processing_time(5)
              .add_elements([["a2"]]).advance_processing_time(5)
              .add_elements([["a3"]]).advance_processing_time(60)
              .add_elements([["b1"]]).advance_processing_time(60)
              .advance_watermark_to_infinity())
    opts = PipelineOptions(["--runner=BundleBasedDirectRunner"])
    opts.view_as(StandardOptions).streaming = True
    with beam.Pipeline(options=opts) as p:
        out = p | stream | EveryRefresh(30)
        assert_that(out, equal_to([["a3"], ["b1"]]))


def test_a_failing_snapshot_write_in_a_live_job_is_logged_not_retried_forever(tmp_path, caplog):
    """A live job's snapshot write that keeps failing gives up (the next refresh
    rewrites the table) instead of failing the bundle, which Dataflow would retry
    forever; a bounded run still fails loudly."""
    from transforms import sinks

    target = str(tmp_path)  # a folder: opening it as a DuckDB file fails
    live = sinks._WriteSnapshotFn(target, "top10_brands", attempts=1, give_up=True)
    assert list(live.process([{"rank": 1, "brand": "b", "popularity_score": 1.0}]) or []) == []
    assert "top10_brands failed 1 times" in caplog.text
    bounded = sinks._WriteSnapshotFn(target, "top10_brands", attempts=1)
    with pytest.raises(Exception):
        bounded.process([{"rank": 1, "brand": "b", "popularity_score": 1.0}])
