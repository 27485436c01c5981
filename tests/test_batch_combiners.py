"""The batch job's per-session combine: distinct events and how many repeats."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from batch.combiners import SessionTimes, SessionTimesFn, event_key
from batch.steps import CountDuplicateEventsFn


def _combine(values):
    fn = SessionTimesFn()
    halves = [fn.create_accumulator(), fn.create_accumulator()]
    for i, v in enumerate(values):  # split over two accumulators, as a runner may
        halves[i % 2] = fn.add_input(halves[i % 2], v)
    return fn.extract_output(fn.merge_accumulators(halves))


def test_a_repeated_event_id_counts_once_at_its_earliest_time():
    e1, e2, e3 = (event_key(e) for e in ("e1", "e2", "e3"))
    got = _combine([(30, e3), (10, e1), (20, e2), (25, e1), (30, e3), (30, e3)])
    assert got == SessionTimes(times=(10, 20, 30), duplicates=3)
    assert _combine([(5, e1)]) == SessionTimes((5,), 0)


def test_the_duplicates_step_passes_the_times_on():
    with TestPipeline(runner="DirectRunner") as p:
        out = (p | beam.Create([("s1", SessionTimes((1, 2), 1)), ("s2", SessionTimes((3,), 0))])
               | beam.ParDo(CountDuplicateEventsFn()))
        assert_that(out, equal_to([("s1", (1, 2)), ("s2", (3,))]))
