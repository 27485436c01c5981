"""batch/click_sessions.py: the click stream reduced per session while it is read.

Read in tiny byte ranges, so sessions (and a redelivered event) span several splits:
the merged partial accumulators must equal one pass over the valid events, and every
bad row must come out as a dead letter."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from batch.click_sessions import ReadClickTimes, click_time
from batch.combiners import SessionTimesFn
from tests.test_batch_pipeline import valid, write_dataset
from transforms.csv_splits import file_splits


def test_partials_from_small_byte_ranges_merge_to_one_pass(tmp_path):
    path = str(write_dataset(tmp_path / "data") / "click_stream.csv")
    assert len(file_splits(path, 64)) > 10  # about one record per split
    fn = SessionTimesFn()
    by_session = {}
    for e in valid(path, "click_stream"):
        acc = by_session.get(e.session_id, fn.create_accumulator())
        by_session[e.session_id] = fn.add_input(acc, click_time(e))
    expected = sorted((sid, fn.extract_output(acc)) for sid, acc in by_session.items())
    s1 = dict(expected)["s1"]
    assert s1.times == tuple(sorted(s1.times))
    assert len(s1.times) == 4 and s1.duplicates == 1  # e1..e4: the redelivered e3 counts once

    with TestPipeline(options=beam.options.pipeline_options.PipelineOptions(
            ["--runner=DirectRunner"])) as p:
        out = p | ReadClickTimes([path], chunk_bytes=64)
        merged = (out["records"]
                  | beam.GroupByKey()
                  | beam.MapTuple(lambda sid, parts: (
                      sid, fn.extract_output(fn.merge_accumulators(list(parts))))))
        assert_that(merged, equal_to(expected), label="SessionsEqualOnePass")
        reasons = out["dead"] | beam.Map(lambda d: (d.source, d.reason.split(":")[0]))
        assert_that(reasons, equal_to([
            ("click_stream", "unknown event_name 'DANCE'"),
            ("click_stream", "wrong field count")]), label="BadRowsDeadLettered")
