"""The batch job's per-session combine: distinct events and how many repeats."""
from __future__ import annotations

import datetime as dt

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from batch import churn_features as cf
from batch.combiners import SessionTimes, SessionTimesFn, event_key
from batch.steps import SessionActivityFn


def _combine(values):
    fn = SessionTimesFn()
    halves = [fn.create_accumulator(), fn.create_accumulator()]
    for i, v in enumerate(values):  # split over two accumulators, as a runner may
        halves[i % 2] = fn.add_input(halves[i % 2], v)
    return fn.extract_output(fn.merge_accumulators(halves))


def test_a_repeated_event_id_counts_once_at_its_earliest_time():
    e1, e2, e3 = (event_key(e) for e in ("e1", "e2", "e3"))
    cart, other = cf.ADD_TO_CART, cf.OTHER
    got = _combine([(30, e3, cart), (10, e1, other), (20, e2, other), (25, e1, other),
                    (30, e3, cart), (30, e3, cart)])
    assert got == SessionTimes(times=(10, 20, 30), kinds=bytes([other, other, cart]),
                               duplicates=3)
    assert _combine([(5, e1, other)]) == SessionTimes((5,), bytes([other]), 0)


def _partials(*events):
    fn = SessionTimesFn()
    acc = fn.create_accumulator()
    for t, e in events:
        acc = fn.add_input(acc, (t, event_key(e), cf.OTHER))
    return acc


def test_repeats_are_counted_in_every_session_and_only_owned_sessions_give_a_row():
    # s1 is owned (a booking names customer 7) and holds one repeat, split over two reads;
    # s2 has no owner and two repeats of e9: counted, but no row
    s1 = {"times": [_partials((10, "e1")), _partials((20, "e2"), (25, "e1"))], "owner": [7]}
    s2 = {"times": [_partials((5, "e9"), (6, "e9"), (7, "e9"))], "owner": []}
    with TestPipeline(runner="DirectRunner") as p:
        out = (p | beam.Create([("s1", s1), ("s2", s2)])
               | beam.ParDo(SessionActivityFn(1800), dt.date(2021, 1, 1)))
        assert_that(out | beam.Map(lambda kv: (kv[0], cf.SessionStat._make(kv[1]).n_events)),
                    equal_to([(7, 2)]))
    counters = p.result.metrics().query()["counters"]
    assert {c.key.metric.name: c.committed for c in counters} == {"click_stream_duplicate": 3}
