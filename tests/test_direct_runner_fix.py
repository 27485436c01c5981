"""pipelines.direct_runner_fix: the memoised specs are the runner's own, per class; the
indexed timer scan fires every timer once, in order; on the FnApiRunner, event-time
timers fire only up to the watermark a splittable source reports, between its chunks."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
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


# --------------------------------------------------------------------------- FnApiRunner
class _Chunks(beam.transforms.core.RestrictionProvider):
    def initial_restriction(self, element):
        from apache_beam.io.restriction_trackers import OffsetRange

        return OffsetRange(0, 5)

    def create_tracker(self, restriction):
        from apache_beam.io.restriction_trackers import OffsetRestrictionTracker

        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()

    def split(self, element, restriction):
        yield restriction


class _Manual(beam.transforms.core.WatermarkEstimatorProvider):
    def initial_estimator_state(self, element, restriction):
        return None

    def create_watermark_estimator(self, state):
        from apache_beam.io.watermark_estimators import ManualWatermarkEstimator

        return ManualWatermarkEstimator(state)


def _log(path, *entry):
    with open(path, "a") as f:
        f.write(repr(entry) + "\n")


class _ChunkedSource(beam.DoFn):
    """Chunk i: keys a, b at 100 s·i and 100 s·i + 1; the watermark then 100 s·i + 99."""

    def __init__(self, log):
        self.log = log

    def process(self, element, tracker=beam.DoFn.RestrictionParam(_Chunks()),
                watermark=beam.DoFn.WatermarkEstimatorParam(_Manual())):
        i = tracker.current_restriction().start
        if not tracker.try_claim(i):
            return
        _log(self.log, "chunk", i)
        for k, key in enumerate("ab"):
            yield TimestampedValue((key, 100 * i + k), 100 * i + k)
        if i < 4:
            watermark.set_watermark(Timestamp(100 * i + 99))
            tracker.defer_remainder()


class _TimerAheadFn(beam.DoFn):
    """Per element a timer 250 s ahead (re-set later by later elements of the key)."""

    T = TimerSpec("ahead", TimeDomain.WATERMARK)

    def __init__(self, log):
        self.log = log

    def process(self, kv, t=beam.DoFn.TimerParam(T)):
        t.set(Timestamp(kv[1] + 250))

    @on_timer(T)
    def fire(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam):
        _log(self.log, "timer", key, int(ts.micros // 1_000_000))
        yield key, int(ts.micros // 1_000_000)


def test_fn_api_runner_fires_timers_only_up_to_the_sources_watermark(tmp_path):
    """Beam's FnApiRunner would fire the 250 s timers right after chunk 0 (its stage
    counts as +inf and the SDF's watermark is ignored), before elements at 100 and 200
    s arrive. With the fix a timer fires once the source's watermark has passed it —
    between chunks, not all at the end — and each key's timer, re-set by every later
    element, fires once at the end (650 s / 651 s)."""
    direct_runner_fix.apply()
    log = str(tmp_path / "order.log")
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    fired = (p | beam.Impulse() | beam.ParDo(_ChunkedSource(log))
             | beam.ParDo(_TimerAheadFn(log)).with_input_types(KV[str, int]))
    assert_that(fired, equal_to([("a", 650), ("b", 651)]))
    p.run().wait_until_finish()
    order = [eval(line) for line in open(log)]
    assert order == [("chunk", i) for i in range(5)] + [("timer", "a", 650), ("timer", "b", 651)]


class _OneTimerFn(beam.DoFn):
    """A timer 150 s after the first element of each key, never moved."""

    T = TimerSpec("once", TimeDomain.WATERMARK)
    SEEN = ReadModifyWriteStateSpec("seen", beam.coders.VarIntCoder())

    def __init__(self, log):
        self.log = log

    def process(self, kv, t=beam.DoFn.TimerParam(T), seen=beam.DoFn.StateParam(SEEN)):
        _log(self.log, "element", kv[0], kv[1])
        if seen.read() is None:
            seen.write(1)
            t.set(Timestamp(kv[1] + 150))

    @on_timer(T)
    def fire(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam):
        _log(self.log, "timer", key, int(ts.micros // 1_000_000))
        yield key, int(ts.micros // 1_000_000)


def test_fn_api_runner_timers_fire_between_chunks_once_due(tmp_path):
    """Timers at 150 s / 151 s: due once chunk 1 is read (watermark 199 s), so they fire
    after chunk 1 and before chunk 2 (elements at 200 s) — not at the end, and never
    before an element at or before their time could still arrive."""
    direct_runner_fix.apply()
    log = str(tmp_path / "order.log")
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    fired = (p | beam.Impulse() | beam.ParDo(_ChunkedSource(log))
             | beam.ParDo(_OneTimerFn(log)).with_input_types(KV[str, int]))
    assert_that(fired, equal_to([("a", 150), ("b", 151)]))
    p.run().wait_until_finish()
    order = [eval(line) for line in open(log)]
    timers = [i for i, e in enumerate(order) if e[0] == "timer"]
    chunk2 = order.index(("chunk", 2))
    assert len(timers) == 2 and order.index(("chunk", 1)) < min(timers) and max(timers) < chunk2
    late = [e for e in order[max(timers):] if e[0] == "element" and e[2] <= 151]
    assert late == []


class _LoggedTimerFn(beam.DoFn):
    """Per element a timer ``delay`` s after its timestamp; each firing out at its time.
    Every element and firing is logged with the step's name."""

    T = TimerSpec("t", TimeDomain.WATERMARK)

    def __init__(self, log, name, delay):
        self.log, self.name, self.delay = log, name, delay

    def process(self, kv, ts=beam.DoFn.TimestampParam, t=beam.DoFn.TimerParam(T)):
        self._element(kv, ts, t)

    @on_timer(T)
    def fire(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam):
        yield self._fired(key, ts)

    def _element(self, kv, ts, timer):
        _log(self.log, "element", self.name, kv[0], int(ts.micros // 1_000_000))
        timer.set(Timestamp(micros=ts.micros + self.delay * 1_000_000))

    def _fired(self, key, ts):
        _log(self.log, "timer", self.name, key, int(ts.micros // 1_000_000))
        return key, int(ts.micros // 1_000_000)


class _OtherLoggedTimerFn(_LoggedTimerFn):
    """The same with a timer of its own: two steps of one class fused in one stage share
    the class's TimerSpec, and Beam 2.77's SDK then fires one step's timers in the other."""

    T2 = TimerSpec("t2", TimeDomain.WATERMARK)

    def process(self, kv, ts=beam.DoFn.TimestampParam, t=beam.DoFn.TimerParam(T2)):
        self._element(kv, ts, t)

    @on_timer(T2)
    def fire2(self, key=beam.DoFn.KeyParam, ts=beam.DoFn.TimestampParam):
        yield self._fired(key, ts)


def test_fn_api_runner_runs_downstream_stages_as_the_watermark_advances(tmp_path):
    """Fix 8: a stateful stage (s2, then s3 fused after it) fed by the source's stateful
    step (s1) through a stage boundary fires its timers between the source's chunks, not
    once the input is read; no step sees an element at or before a timer of its own that
    already fired; a GroupByKey still waits for the whole input."""
    direct_runner_fix.apply()
    log = str(tmp_path / "order.log")
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    read = p | beam.Impulse() | beam.ParDo(_ChunkedSource(log))
    s1 = read | "s1" >> beam.ParDo(_LoggedTimerFn(log, "s1", 1)).with_input_types(KV[str, int])
    empty = p | beam.Create([]).with_output_types(KV[str, int])
    s2 = ((s1, empty) | beam.Flatten()  # a stage boundary, as the graph's AllContributions
          | "s2" >> beam.ParDo(_LoggedTimerFn(log, "s2", 50)).with_input_types(KV[str, int]))
    s3 = s2 | "s3" >> beam.ParDo(_OtherLoggedTimerFn(log, "s3", 5)).with_input_types(KV[str, int])
    grouped = (read | beam.GroupByKey()
               | beam.Map(lambda kv, path=log: _log(path, "group", kv[0]) or kv[0]))
    assert_that(s3, equal_to([(k, 100 * i + j + 56) for i in range(5) for j, k in enumerate("ab")]))
    assert_that(grouped, equal_to(["a", "b"]), label="groups")
    p.run().wait_until_finish()
    order = [eval(line) for line in open(log)]
    last_chunk = order.index(("chunk", 4))
    early = [e for e in order[:last_chunk] if e[0] == "timer" and e[1] in ("s2", "s3")]
    assert ("timer", "s2", "a", 51) in early and ("timer", "s3", "b", 57) in early
    assert all(order.index(e) > last_chunk for e in order if e[0] == "group")
    for name in ("s1", "s2", "s3"):
        fired = float("-inf")
        for e in order:
            if e[1] != name:
                continue
            if e[0] == "timer":
                fired = max(fired, e[3])
            else:
                assert e[3] > fired, (name, e, fired)
    assert len([e for e in order if e[0] == "timer"]) == 30
