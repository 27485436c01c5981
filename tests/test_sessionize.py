"""The Beam sessionisation step: TestStream (streaming, BundleBasedDirectRunner) and batch
(FnApiRunner) runs must equal the pure reference ``enrich_session`` on the sorted events.

LOCAL_STACK traps honoured: metrics are asserted only in batch runs (3); every stream
advances the watermark past the last timer (visit end + dedup ttl) before infinity (4).
"""
from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.metrics import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms.records import ClickEvent, parse_json
from transforms.session_rules import drop_duplicates, enrich_session
from transforms.sessionize import DUPLICATES, ENRICHED, LATE, METRICS_NAMESPACE, Sessionize, event_to_json

T0 = 1_567_784_072_821_085
S = 1_000_000
GAP_S = 1800
TTL_S = 3600
GAP = GAP_S * S


def _events(out, label="Events"):
    """The enriched events of Sessionize's SessionBatch output."""
    return out[ENRICHED] | label >> beam.FlatMap(lambda b: b.enriched)


def _tv(e):
    return TimestampedValue(e, Timestamp(micros=e.event_time_us))


def _wm(us):
    """A watermark at or before `us` (TestStream watermarks are whole milliseconds)."""
    return Timestamp(micros=us // 1000 * 1000)


def _session(rng, sid, n, start):
    names = ["HOMEPAGE", "CLICK", "SCROLL", "ITEM_DETAIL", "SEARCH", "ADD_TO_CART",
             "PROMO_PAGE", "ADD_PROMO", "BOOKING"]
    t, out = start, []
    for k in range(n):
        r = rng.random()
        t += (GAP + rng.choice([0, 1]) if r < 0.12 else 0 if r < 0.2
              else rng.randint(2, 3) * 86_400 * S if r < 0.25 else rng.randint(1, 900) * S)
        name = rng.choice(names)
        out.append(ClickEvent(sid, f"{sid}-{k:03d}", name, t, "WEB",
                              rng.randint(1, 50) if name == "ADD_TO_CART" else None))
    return out


def _fixture_events():
    rng = random.Random(42)
    events = []
    for i in range(3):
        events += _session(rng, f"sess{i}", 6 + 3 * i, T0 + i * 77 * S)
    # the inference cases of SPEC §2 in one visit, with a tie on event time
    events += [
        ClickEvent("rules", "r1", "HOMEPAGE", T0, "MOBILE"),
        ClickEvent("rules", "r2", "CLICK", T0 + 1 * S, "MOBILE"),
        ClickEvent("rules", "r3", "ADD_TO_CART", T0 + 2 * S, "MOBILE", 11, 1, 1000),
        ClickEvent("rules", "r4", "SCROLL", T0 + 2 * S, "MOBILE"),
        ClickEvent("rules", "r5", "ITEM_DETAIL", T0 + 3 * S, "MOBILE"),
        ClickEvent("rules", "r6", "ADD_TO_CART", T0 + 4 * S, "MOBILE", 12, 2, 2000),
        ClickEvent("rules", "r7", "BOOKING", T0 + 5 * S, "MOBILE", payment_status="Success"),
    ]
    return events


EVENTS = _fixture_events()
EXPECTED = enrich_session(EVENTS)
END = max(e.event_time_us for e in EVENTS) + GAP + TTL_S * S + 2 * S  # past the last timer
END = END // 1000 * 1000


def _streaming_pipeline():
    opts = PipelineOptions(["--runner=DirectRunner"])
    opts.view_as(StandardOptions).streaming = True
    return TestPipeline(options=opts)


def _stream(order, rng, *, step="one", processing_time=False):
    """A TestStream delivering `order`; the watermark never passes an unarrived event."""
    ts = TestStream()
    i, wm = 0, None
    while i < len(order):
        size = {"one": 1, "all": len(order), "chunks": rng.randint(1, 6)}[step]
        chunk = order[i:i + size]
        ts = ts.add_elements([_tv(e) for e in chunk])
        i += size
        rest = [e.event_time_us for e in order[i:]]
        if rest and (wm is None or _wm(min(rest)) > wm):  # watermarks strictly advance
            wm = _wm(min(rest))
            ts = ts.advance_watermark_to(wm)
        if processing_time:
            ts = ts.advance_processing_time(rng.choice([1, 30, 600]))
    return ts.advance_watermark_to(_wm(END)).advance_watermark_to_infinity()


def _arrival(kind, rng, events):
    order = list(events)
    if kind == "sorted":
        order.sort(key=lambda e: (e.event_time_us, e.event_id))
    elif kind == "reversed":
        order.sort(key=lambda e: (e.event_time_us, e.event_id), reverse=True)
    elif kind == "shuffled":
        rng.shuffle(order)
    elif kind == "jittered":      # mostly in order, up to 20 minutes out of order
        order.sort(key=lambda e: e.event_time_us + rng.randint(0, 1200 * S))
    return order


SCENARIOS = [
    ("shuffled", "all", False),     # everything in one step, then the watermark jumps
    ("sorted", "one", False),       # one event per step, watermark right behind
    ("shuffled", "one", True),      # one per step, out of order, processing time moves
    ("reversed", "chunks", False),  # newest first: nothing settles until the end
    ("jittered", "chunks", True),   # realistic: mostly ordered, small bundles
]


@pytest.mark.parametrize("arrival,step,processing_time", SCENARIOS)
def test_stream_output_equals_reference_whatever_the_arrival(arrival, step, processing_time):
    rng = random.Random(f"{arrival}-{step}-{processing_time}")  # stable across runs
    order = _arrival(arrival, rng, EVENTS)
    # Pub/Sub redelivers: a few copies, some long after the original was emitted
    copies = [order[3], order[10], order[-1], EVENTS[-3]]
    for c in copies:
        order.insert(rng.randint(order.index(c) + 1, len(order)), c)
    with _streaming_pipeline() as p:
        out = p | _stream(order, rng, step=step, processing_time=processing_time) | Sessionize()
        assert_that(_events(out), equal_to(EXPECTED), label="Enriched")
        assert_that(out[DUPLICATES], equal_to(copies), label="Duplicates")
        assert_that(out[LATE], equal_to([]), label="Late")


def test_stream_batches_are_stamped_after_their_events():
    """A batch leaves at a timer firing: stamped at or after every event it holds."""
    rng = random.Random(1)
    events = [e for e in EVENTS if e.session_id == "rules"]
    with _streaming_pipeline() as p:
        out = p | _stream(_arrival("shuffled", rng, events), rng) | Sessionize()
        stamped = out[ENRICHED] | beam.FlatMap(
            lambda b, ts=beam.DoFn.TimestampParam: [
                (e.event_id, e.event_time_us <= ts.micros) for e in b.enriched])
        assert_that(stamped, equal_to([(e.event_id, True) for e in events]))


def test_stream_adds_leave_before_their_visit_settles():
    """An ADD_TO_CART is emitted (in ``adds``) at the first firing after it arrives —
    long before its dwell or the inference it drives are settled; a redelivered copy
    is not counted again."""
    a = ClickEvent("q", "q1", "CLICK", T0, "WEB")
    b = ClickEvent("q", "q2", "ADD_TO_CART", T0 + 5 * S, "WEB", 9, 1, 100)
    ts = (TestStream().add_elements([_tv(a), _tv(b)])
          .advance_watermark_to(_wm(T0 + 6 * S))          # b's dwell is not known yet
          .add_elements([_tv(b)])                         # a redelivery
          .advance_watermark_to(_wm(T0 + 20 * S))
          .advance_watermark_to(_wm(T0 + (GAP_S + TTL_S + 20) * S))  # trap 4
          .advance_watermark_to_infinity())
    with _streaming_pipeline() as p:
        out = p | ts | Sessionize()
        first = out[ENRICHED] | beam.Map(
            lambda batch, ts=beam.DoFn.TimestampParam: (batch.adds, [e.event_id for e in batch.enriched],
                                                        ts.micros < T0 + 10 * S))
        assert_that(first, equal_to([(((9, T0 + 5 * S),), [], True), ((), ["q1"], True),
                                     ((), ["q2"], False)]), label="Batches")


def test_stream_two_visits_arriving_in_one_step_are_split():
    """LOCAL_STACK trap 1: the gap lies inside one TestStream step."""
    v = [ClickEvent("g", "g1", "CLICK", T0, "WEB"),
         ClickEvent("g", "g2", "ADD_TO_CART", T0 + 10 * S, "WEB", 5),
         ClickEvent("g", "g3", "CLICK", T0 + 10 * S + GAP + 1, "WEB"),
         ClickEvent("g", "g4", "ADD_TO_CART", T0 + 20 * S + GAP, "WEB", 6)]
    ts = (TestStream().add_elements([_tv(e) for e in reversed(v)])
          .advance_watermark_to(_wm(END)).advance_watermark_to_infinity())
    with _streaming_pipeline() as p:
        out = p | ts | Sessionize()
        visits = _events(out) | beam.Map(lambda e: (e.event_id, e.visit_id, e.product_id))
        assert_that(visits, equal_to([("g1", f"g:{T0}", 5), ("g2", f"g:{T0}", 5),
                                      ("g3", f"g:{T0 + 10 * S + GAP + 1}", 6),
                                      ("g4", f"g:{T0 + 10 * S + GAP + 1}", 6)]))


def test_stream_emits_at_the_watermark_late_data_is_dead_lettered_state_is_cleared():
    """Events are emitted when the watermark passes their visit end, not at the end of the
    stream: an arrival that would change them afterwards is dead-lettered as late. After
    the gap (and the dedup ttl) the session starts over with a new visit_id."""
    a = ClickEvent("L", "a", "CLICK", T0, "WEB")
    b = ClickEvent("L", "b", "ADD_TO_CART", T0 + 10 * S, "WEB", 4, 1, 500)
    c = ClickEvent("L", "c", "ITEM_DETAIL", T0 + 5 * S, "WEB")          # late: between a, b
    d = ClickEvent("L", "d", "SCROLL", T0 + 10 * S + GAP + 1, "WEB")    # behind W, harmless
    e = ClickEvent("L", "e", "CLICK", T0 + 5 * 3600 * S, "WEB")         # after state GC
    closed = T0 + 10 * S + GAP
    ts = (TestStream()
          .add_elements([_tv(b), _tv(a)])
          .advance_watermark_to(_wm(closed + 5 * S))           # visit settles: a, b emitted
          .add_elements([_tv(c), _tv(d), _tv(a)])              # late, harmless, duplicate
          .advance_watermark_to(_wm(closed + (TTL_S + 100) * S))  # ids expire, state cleared
          .add_elements([_tv(e)])
          .advance_watermark_to(_wm(e.event_time_us + (GAP_S + TTL_S + 2) * S))
          .advance_watermark_to_infinity())
    with _streaming_pipeline() as p:
        out = p | ts | Sessionize(dedup_ttl=TTL_S)
        assert_that(_events(out), equal_to(enrich_session([a, b, d, e])), label="Enriched")
        assert_that(out[DUPLICATES], equal_to([a]), label="Duplicates")
        late = out[LATE] | beam.Map(
            lambda dl: (dl.source, parse_json("click_stream", dl.raw),
                        dl.reason.startswith("late event")))
        assert_that(late, equal_to([("sessions", c, True)]), label="Late")


def test_stream_emits_settled_events_before_the_visit_closes():
    """The flush timer emits events whose dwell/inference are settled while the visit is
    still open: an arrival that would change them afterwards is then late."""
    names = ["CLICK", "SCROLL", "SCROLL", "SCROLL", "SCROLL"]
    v = [ClickEvent("o", f"o{i}", n, T0 + i * S, "WEB") for i, n in enumerate(names)]
    x = ClickEvent("o", "x", "ADD_TO_CART", T0 + 2 * S + S // 2, "WEB", 8)  # between o2, o3
    f = ClickEvent("o", "f", "HOMEPAGE", T0 + 5 * 3600 * S, "WEB")  # a later visit, early
    ts = (TestStream()
          .add_elements([_tv(f)])
          .add_elements([_tv(e) for e in reversed(v)])
          .advance_watermark_to(_wm(T0 + 10 * S))   # o0..o3 settled; visit open until o4+gap
          .add_elements([_tv(x)])
          .advance_watermark_to(_wm(f.event_time_us + (GAP_S + TTL_S + 2) * S))
          .advance_watermark_to_infinity())
    with _streaming_pipeline() as p:
        out = p | ts | Sessionize()
        assert_that(_events(out), equal_to(enrich_session(v + [f])), label="Enriched")
        assert_that(out[LATE] | beam.Map(lambda dl: parse_json("click_stream", dl.raw)),
                    equal_to([x]), label="Late")


# --------------------------------------------------------------------------- batch
def _batch_events():
    rng = random.Random(9)
    events = []
    for i in range(40):
        events += _session(rng, f"b{i:02d}", rng.randint(1, 14), T0 + i * 1000 * S)
    dups = rng.sample(events, 12)
    return events + dups, dups


@pytest.mark.parametrize("mode", ["auto", "stateful"])
def test_batch_on_direct_runner_equals_reference(mode):
    stream, dups = _batch_events()
    unique, _ = drop_duplicates(stream)
    expected = enrich_session(unique)
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    out = (p | beam.Create(stream) | "Stamp" >> beam.Map(_tv)
           | Sessionize(mode=mode))
    assert_that(_events(out), equal_to(expected), label="Enriched")
    assert_that(out[DUPLICATES], equal_to(dups), label="Duplicates")
    assert_that(out[LATE], equal_to([]), label="Late")
    result = p.run()
    result.wait_until_finish()
    counters = {c.key.metric.name: c.committed for c in result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]}
    visits = len({e.visit_id for e in expected})
    inferred = sum(e.product_id_inferred for e in expected)
    assert counters["valid"] == len(expected) and counters["duplicate"] == len(dups)
    assert counters["visits_closed"] == visits and counters["inferred"] == inferred > 0


def test_a_bundles_firings_leave_in_batches_of_at_most_the_limit(monkeypatch):
    """Full bundle batches leave from the firing that fills them, the rest at the end of
    the bundle: every settled event exactly once, each batch within the limit plus one
    firing (a session here has at most 14 events and as many adds)
    and stamped at or after its events."""
    from transforms import sessionize

    monkeypatch.setattr(sessionize._BundleBatch, "LIMIT", 5)
    stream, _ = _batch_events()
    unique, _ = drop_duplicates(stream)
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    out = (p | beam.Create(stream) | "Stamp" >> beam.Map(_tv) | Sessionize(mode="stateful"))
    assert_that(_events(out), equal_to(enrich_session(unique)), label="Enriched")
    checks = out[ENRICHED] | beam.Map(
        lambda b, ts=beam.DoFn.TimestampParam: len(b.enriched) + len(b.adds) <= 5 + 2 * 14
        and all(e.event_time_us <= ts.micros for e in b.enriched))
    assert_that(checks | beam.Filter(lambda ok: not ok), equal_to([]), label="Limits")
    p.run().wait_until_finish()


# --------------------------------------------------------------------------- wiring
def _labels(p):
    return {t.unique_name for t in p.to_runner_api().components.transforms.values()}


def test_step_labels_are_stable_and_key_coder_is_deterministic():
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    out = p | TestStream().advance_watermark_to_infinity() | "Sessionize" >> Sessionize()
    labels = _labels(p)
    assert {"Sessionize/KeyBySession", "Sessionize/SessionState"} <= labels
    assert "Sessionize/GlobalWindow" not in labels     # input already in the global window
    keyed = out[ENRICHED].producer.inputs[0]
    coder = beam.coders.registry.get_coder(keyed.element_type)
    assert coder.key_coder().is_deterministic()

    w = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    _ = (w | TestStream().advance_watermark_to_infinity()
         | beam.WindowInto(FixedWindows(60)) | "Sessionize" >> Sessionize())
    assert "Sessionize/GlobalWindow" in _labels(w)     # sessions must not be cut by windows

    b = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    _ = b | beam.Create([]) | "Sessionize" >> Sessionize()
    assert {"Sessionize/KeyBySession", "Sessionize/GroupBySession",
            "Sessionize/EnrichSessions"} <= _labels(b)


def test_grouped_mode_refuses_unbounded_input_and_bad_arguments():
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    with pytest.raises(ValueError, match="bounded"):
        _ = p | TestStream() | Sessionize(mode="grouped")
    with pytest.raises(ValueError):
        Sessionize(lookback=-1)
    with pytest.raises(ValueError):
        Sessionize(mode="nope")


def test_event_to_json_round_trips_through_the_json_parser():
    for e in EVENTS[-7:]:
        assert parse_json("click_stream", event_to_json(tuple(e))) == e


# --------------------------------------------------------------------------- bundling
def test_a_bundles_events_are_grouped_per_session_in_arrival_order():
    from transforms.sessionize import arrival_events, group_by_session

    order = _arrival("shuffled", random.Random(7), EVENTS)
    groups = group_by_session(order)
    assert set(groups) == {e.session_id for e in EVENTS}
    for sid, group in groups.items():
        assert group == [e for e in order if e.session_id == sid]
    one = tuple(EVENTS[0])
    assert arrival_events(one) == [one]            # the element form before bundling
    assert arrival_events([one, one]) == [one, one]


def test_key_by_session_leaves_each_sessions_events_stamped_at_the_earliest():
    from transforms.sessionize import KeySessionsInBundle

    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    keyed = (p | beam.Create(EVENTS) | "Stamp" >> beam.Map(_tv)
             | beam.ParDo(KeySessionsInBundle()))
    ok = keyed | beam.Map(
        lambda kv, ts=beam.DoFn.TimestampParam: type(kv[1]) is list
        and all(e[0] == kv[0] and type(e) is tuple for e in kv[1])
        and ts.micros == min(e[3] for e in kv[1]))
    assert_that(ok | beam.Filter(lambda good: not good), equal_to([]), label="Stamps")
    events = keyed | beam.FlatMap(lambda kv: [ClickEvent._make(e) for e in kv[1]])
    assert_that(events, equal_to(EVENTS), label="Events")
    p.run().wait_until_finish()


def test_a_bag_of_single_and_bundled_arrivals_reads_as_one_arrival_list():
    """The bag as an older run (one record per event) and this one (a list per bundle)
    write it: both read alike, so a streaming --update keeps its sessions."""
    from transforms.session_rules import EMPTY_CTX
    from transforms.sessionize import SessionizeFn

    e = [tuple(x) for x in EVENTS[:4]]
    ctx = EMPTY_CTX._replace(flush_at=5_000, close_at=9_000)
    got_ctx, arrivals, armed = SessionizeFn()._split(
        [(0, e[0]), (2, [e[1], e[2]]), (1, tuple(ctx)), (0, e[3])])
    assert got_ctx == ctx and arrivals == e
    assert armed == [min([5_000] + [-(-(x[3] + 1) // 1000) * 1000 for x in e]), 9_000]


def test_session_batches_cross_stages_with_their_own_coder_field_for_field():
    from transforms.session_rules import EnrichedEvent, SessionBatch
    from transforms.sessionize import SessionBatchCoder

    events = [e for e in EXPECTED if e.dwell_seconds is not None][:3] + [
        e for e in EXPECTED if e.product_id_inferred][:2] + [EnrichedEvent(
            "s", "e", "BOOKING", -5, "", None, 2, 300, "Failed", "kw", "P1", 7, "s:-5",
            False, None)]
    batch = SessionBatch(tuple(events), ((11, T0), (12, T0 + 1)))
    coder = beam.coders.registry.get_coder(SessionBatch)
    assert isinstance(coder, SessionBatchCoder)
    for b in (batch, SessionBatch((), ()), SessionBatch((), ((3, 4),))):
        back = coder.decode(coder.encode(b))
        assert back == b and type(back) is SessionBatch
        assert all(type(e) is EnrichedEvent for e in back.enriched)
        assert [tuple(map(type, e)) for e in back.enriched] == [tuple(map(type, e))
                                                                for e in b.enriched]
    p = beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner", "--streaming"]))
    out = p | TestStream().advance_watermark_to_infinity() | "Sessionize" >> Sessionize()
    assert isinstance(beam.coders.registry.get_coder(out[ENRICHED].element_type),
                      SessionBatchCoder)
