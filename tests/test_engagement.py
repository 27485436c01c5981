"""Engagement per product (SPEC §2): pure functions, the CombineFn, and the windowed
ProductEngagement transform on the DirectRunner (batch and TestStream streaming)."""
from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.test_stream import TestStream as BeamTestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.engagement import (
    Engagement,
    EngagementCombineFn,
    ProductEngagement,
    compute_engagement,
    engagement_as_of_us,
    event_contribution,
    horizon_windowing,
    merge_engagements,
    tail_window_end_us,
    transaction_contribution,
)
from transforms.records import BookingLine, ClickEvent, Transaction
from transforms.session_rules import EnrichedEvent

S = 1_000_000
T0 = 1_567_785_600 * S  # 2019-09-06T16:00:00Z, on a 1 h boundary


def ev(i, name, t_us, pid=None, dwell=None, inferred=False):
    return EnrichedEvent("s1", f"e{i}", name, t_us, "WEB", pid, None, None, None, None, None,
                         None, visit_id="v1", product_id_inferred=inferred, dwell_seconds=dwell)


def txn(i, t_us, lines, status="Success"):
    return Transaction(t_us, 7, f"b{i}", "s1", tuple(BookingLine(p, q, 1000) for p, q in lines),
                       "OVO", status, 0, "", 0, None, None, None, 1000)


EVENTS = [
    ev(1, "HOMEPAGE", T0 + 10 * S, 5, 4.5, inferred=True),
    ev(2, "CLICK", T0 + 20 * S, 5, 2.25, inferred=True),
    ev(3, "ITEM_DETAIL", T0 + 30 * S, 5, 10.0, inferred=True),
    ev(4, "ADD_TO_CART", T0 + 40 * S, 5, None),               # last of its visit
    ev(5, "SCROLL", T0 + 50 * S, None, 3.0),                  # no product: ignored
    ev(6, "CLICK", T0 + 4000 * S, 9, 1.1, inferred=True),      # second hour
    ev(7, "ADD_TO_CART", T0 + 4010 * S, 9, 0.7),
    ev(8, "SEARCH", T0 + 4020 * S, None, 5.0),
]
TXNS = [
    txn(1, T0 + 45 * S, [(5, 2), (9, 1), (5, 1)]),
    txn(2, T0 + 4030 * S, [(9, 4)], status="Failed"),          # failed: no purchases
]
EXPECTED = {
    5: Engagement(1, 1, 1, 1, 16.75, 3, T0 + 45 * S),
    9: Engagement(1, 0, 1, 0, 1.8, 1, T0 + 4010 * S),
}


# --------------------------------------------------------------------------- pure
def test_event_contribution_counts_by_type_and_dwell():
    assert event_contribution(ev(1, "SCROLL", T0, None, 9.0)) == []
    (pid, acc), = event_contribution(ev(1, "ITEM_DETAIL", T0, 42, 1.5, inferred=True))
    assert pid == 42 and acc == [0, 1, 0, 0, 1_500_000, 0, T0]
    # another event type carrying the product adds dwell only; null dwell counts 0
    (_, acc), = event_contribution(ev(2, "SCROLL", T0, 42, 2.0))
    assert acc[:6] == [0, 0, 0, 0, 2_000_000, 0]
    (_, acc), = event_contribution(ev(3, "ADD_TO_CART", T0, 42, None))
    assert acc[:6] == [0, 0, 1, 0, 0, 0]
    # a plain ClickEvent (no dwell field) works too
    (_, acc), = event_contribution(ClickEvent("s", "e", "CLICK", T0, "WEB", 3))
    assert acc[:6] == [1, 0, 0, 0, 0, 0]


def test_transaction_contribution_only_success_units():
    parts = transaction_contribution(txn(1, T0, [(5, 2), (9, 1)]))
    assert [(p, a[5]) for p, a in parts] == [(5, 2), (9, 1)]
    assert transaction_contribution(txn(2, T0, [(5, 2)], status="Failed")) == []


def test_compute_engagement_matches_spec_example():
    assert compute_engagement(EVENTS, TXNS) == EXPECTED
    assert engagement_as_of_us(EXPECTED) == T0 + 4010 * S


def test_engagement_is_order_independent_bit_for_bit():
    rng = random.Random(3)
    events = [ev(i, rng.choice(["CLICK", "HOMEPAGE", "ITEM_DETAIL"]), T0 + i * S,
                 rng.randint(1, 4), rng.random() * 100) for i in range(300)]
    first = compute_engagement(events)
    for _ in range(3):
        rng.shuffle(events)
        assert compute_engagement(events) == first  # floats equal exactly, not approximately


def test_combine_fn_merges_like_the_pure_function():
    fn = EngagementCombineFn()
    parts = [kv for e in EVENTS for kv in event_contribution(e)]
    parts += [kv for t in TXNS for kv in transaction_contribution(t)]
    accs = []
    for chunk in (parts[:3], parts[3:5], parts[5:]):
        acc = fn.create_accumulator()
        for kv in chunk:
            acc = fn.add_input(acc, kv)
        accs.append(acc)
    assert fn.extract_output(fn.merge_accumulators(accs)) == EXPECTED
    # Engagement values are accepted as inputs too (re-combining tables)
    acc = fn.create_accumulator()
    for pid, e in EXPECTED.items():
        acc = fn.add_input(acc, (pid, e))
        acc = fn.add_input(acc, (pid, e))
    assert fn.extract_output(acc) == {pid: merge_engagements(e, e) for pid, e in EXPECTED.items()}


def test_merge_engagements_adds_counts_and_keeps_latest_time():
    a = Engagement(1, 2, 3, 4, 1.25, 5, 10)
    b = Engagement(1, 0, 0, 0, 0.5, 1, None)
    assert merge_engagements(a, b) == Engagement(2, 2, 3, 4, 1.75, 6, 10)
    assert a.records == 15 and a.features() == (1, 2, 3, 4, 1.25, 5)


def test_bad_horizons_and_periods_are_refused():
    with pytest.raises(ValueError, match="unknown horizon"):
        horizon_windowing("7d")
    with pytest.raises(ValueError, match="must divide"):
        ProductEngagement(["1h"], periods={"1h": 700})
    with pytest.raises(ValueError, match="unknown horizon"):
        ProductEngagement(["1h", "week"])


def test_tail_window_end_is_the_first_window_end_after_the_last_event():
    assert tail_window_end_us(T0 + 4010 * S, 300 * S) == T0 + 4200 * S
    assert tail_window_end_us(T0, 300 * S) == T0 + 300 * S


# --------------------------------------------------------------------------- Beam
def _stamp(records, time_field):
    return [TimestampedValue(r, getattr(r, time_field) / S) for r in records]


def _batch_pipeline():
    return BeamTestPipeline(runner="DirectRunner", options=PipelineOptions(["--runner=DirectRunner"]))


def _summary(element):
    """(horizon, end, {pid: (clicks, purchases)}) — small enough for equal_to()."""
    h, end, table = element
    return (h, end, tuple(sorted((p, e.click_count, e.purchases) for p, e in table.items())))


def test_product_engagement_batch_windows_and_all():
    with _batch_pipeline() as p:
        events = p | "E" >> beam.Create(_stamp(EVENTS, "event_time_us"))
        orders = p | "T" >> beam.Create(_stamp(TXNS, "created_at_us"))
        out = (events, orders) | ProductEngagement(periods={"1h": 1800, "24h": 43200})
        alls = out | "All" >> beam.Filter(lambda e: e[0] == "all")
        assert_that(alls, equal_to([("all", None, EXPECTED)]), label="AllTime")
        hours = out | "Hours" >> beam.Filter(lambda e: e[0] == "1h") | "S1" >> beam.Map(_summary)
        # 1 h windows every 30 min: [T0-30m,T0+30m), [T0,T0+1h) hold the first hour
        # (with the unit of product 9 bought at T0+45 s); [T0+30m, T0+1h30m) and
        # [T0+1h, T0+2h) hold product 9's events at T0+4000 s.
        assert_that(hours, equal_to([
            ("1h", T0 + 1800 * S, ((5, 1, 3), (9, 0, 1))),
            ("1h", T0 + 3600 * S, ((5, 1, 3), (9, 0, 1))),
            ("1h", T0 + 5400 * S, ((9, 1, 0),)),
            ("1h", T0 + 7200 * S, ((9, 1, 0),)),
        ]), label="Hours")
        days = out | "Days" >> beam.Filter(lambda e: e[0] == "24h") | "S2" >> beam.Map(_summary)
        # 24 h windows every 12 h are aligned to the epoch (00:00 and 12:00 UTC); T0 is
        # 16:00, so the two windows holding everything end at 00:00 and 12:00 next day.
        assert_that(days, equal_to([("24h", T0 + 28800 * S, ((5, 1, 3), (9, 1, 1))),
                                    ("24h", T0 + 72000 * S, ((5, 1, 3), (9, 1, 1)))]),
                    label="Days")


def test_product_engagement_replay_tail_keeps_only_the_last_window():
    with _batch_pipeline() as p:
        events = p | "E" >> beam.Create(_stamp(EVENTS, "event_time_us"))
        orders = p | "T" >> beam.Create(_stamp(TXNS, "created_at_us"))
        out = {"events": events, "transactions": orders} | ProductEngagement(replay_tail=True)
        assert_that(out | beam.Map(_summary), equal_to([
            ("all", None, ((5, 1, 3), (9, 1, 1))),
            # last record counted: the CLICK/ADD_TO_CART at T0+4010 s → 1 h window ends at
            # the next 5-minute boundary and covers the final hour of data
            ("1h", T0 + 4200 * S, ((9, 1, 0),)),
            ("24h", T0 + 7200 * S, ((5, 1, 3), (9, 1, 1))),
        ]))


def test_replay_tail_is_refused_in_streaming():
    p = beam.Pipeline(runner="DirectRunner", options=PipelineOptions(streaming=True))
    events = p | beam.Create([])
    with pytest.raises(ValueError, match="replay_tail"):
        events | ProductEngagement(replay_tail=True)


def test_product_engagement_streaming_all_time_moves_then_is_final():
    """TestStream on the streaming DirectRunner: the all-time table fires early as events
    arrive (processing time advances), and its last pane is the complete table."""
    stream = BeamTestStream()
    steps = [EVENTS[:3], EVENTS[3:5], EVENTS[5:]]
    for chunk in steps:
        stream = (stream.add_elements(_stamp(chunk, "event_time_us"))
                  .advance_processing_time(30)
                  .advance_watermark_to(chunk[-1].event_time_us / S))
    stream = stream.advance_watermark_to_infinity()
    opts = PipelineOptions(["--runner=DirectRunner"])
    opts.view_as(StandardOptions).streaming = True
    with BeamTestPipeline(runner="DirectRunner", options=opts) as p:
        out = p | stream | ProductEngagement(["all", "1h"], early_seconds=10)
        alls = (out | "All" >> beam.Filter(lambda e: e[0] == "all")
                | "Clicks" >> beam.Map(lambda e: sum(x.click_count + x.homepage_count
                                                     + x.item_detail_count for x in e[2].values())))

        def check(counts):
            counts = sorted(counts)
            assert len(counts) >= 3, counts            # moved while streaming
            assert counts[0] < counts[-1] == 4, counts  # and the final pane is complete

        assert_that(alls, check, label="AllMoves")
        hours = (out | "Hours" >> beam.Filter(lambda e: e[0] == "1h")
                 | "Last" >> beam.Map(lambda e: (e[1], tuple(sorted(e[2])))))

        def check_hours(items):
            assert (T0 + 3600 * S, (5,)) in items and (T0 + 5400 * S, (9,)) in items, items

        assert_that(hours, check_hours, label="Hours")
