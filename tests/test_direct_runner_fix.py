"""pipelines.direct_runner_fix: the memoised specs are the runner's own, per class; the
indexed timer scan fires every timer once, in order."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import TimerSpec, on_timer
from apache_beam.transforms.window import TimestampedValue
from apache_beam.typehints import KV
from apache_beam.utils.timestamp import Timestamp

from pipelines import direct_runner_fix
from transforms.sessionize import SessionizeFn
from transforms.slices import _MergeFn


def test_memoised_specs_equal_the_runners_and_are_per_class():
    before = userstate.get_dofn_specs(SessionizeFn())
    direct_runner_fix.apply()
    direct_runner_fix.apply()  # idempotent
    from apache_beam.runners.direct import transform_evaluator
    from apache_beam.runners.portability.fn_api_runner import worker_handlers

    assert userstate.get_dofn_specs(SessionizeFn()) == before
    assert transform_evaluator.is_stateful_dofn(SessionizeFn())
    merge = userstate.get_dofn_specs(_MergeFn({}, 10, {}))
    assert {s.name for s in merge[0]} == {"parts", "incoming", "armed", "finals"}
    assert {t.name for t in merge[1]} == {"ts-ranked_final", "ts-rank"}
    assert worker_handlers.STATE_CACHE_SIZE_MB == 0


class _ChainFn(beam.DoFn):
    """Per key a timer at 10 s × key, re-armed 30 s later until 60 s: (key, time) out."""

    T = TimerSpec("t", TimeDomain.WATERMARK)

    def process(self, kv, timer=beam.DoFn.TimerParam(T)):
        timer.set(Timestamp(seconds=10 * kv[0]))

    @on_timer(T)
    def fire(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam,
             timer=beam.DoFn.TimerParam(T)):
        yield key, int(ts.micros // 1_000_000)
        if ts.micros < 60_000_000:
            timer.set(Timestamp(micros=ts.micros + 30_000_000))


def test_indexed_timer_scan_fires_every_timer_once_in_order():
    direct_runner_fix.apply()
    stream = (TestStream().add_elements([TimestampedValue((k, 0), 0) for k in range(8)])
              .advance_watermark_to(5).advance_watermark_to(25).advance_watermark_to(55)
              .advance_watermark_to(100).advance_watermark_to_infinity())
    want = []
    for k in range(8):
        t = 10 * k
        want.append((k, t))
        while t < 60:
            t += 30
            want.append((k, t))
    opts = PipelineOptions(["--runner=BundleBasedDirectRunner", "--streaming"])
    with TestPipeline(runner="BundleBasedDirectRunner", options=opts) as p:
        out = (p | stream | beam.Map(lambda kv: kv).with_output_types(KV[int, int])
               | beam.ParDo(_ChainFn()))
        assert_that(out, equal_to(want))
