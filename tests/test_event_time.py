"""Event-time sanity: events beyond --max-future are dead-lettered by every source."""
from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import records
from transforms.event_time import RejectFuture, future_reason, now_us
from transforms.sources import parse_lines

S = 1_000_000
FAR = "s,CLICK,9999-12-31T23:59:59Z,e1,WEB,"
NOW = "s,CLICK,2020-01-01T00:00:00Z,e2,WEB,"


def test_future_reason_names_the_limit():
    wall = 1_700_000_000 * S
    assert future_reason(wall + 86_400 * S, wall) is None
    reason = future_reason(wall + 86_400 * S + 1, wall)
    assert "ahead of the wall clock" in reason and "86400" in reason
    assert "9999-12-31" in future_reason(253402300799 * S, wall)


def test_file_lines_beyond_max_future_are_dead_lettered():
    out = list(parse_lines("click_stream", "csv", [FAR, NOW], max_future=86_400))
    assert isinstance(out[0], records.DeadLetter) and out[0].raw == FAR
    assert "ahead of the wall clock" in out[0].reason
    assert isinstance(out[1], records.ClickEvent)


def test_reject_future_step_for_streams():
    soon = records.ClickEvent("s", "a", "CLICK", now_us(), "WEB")
    far = soon._replace(event_id="b", event_time_us=253402300799 * S)
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    out = p | beam.Create([soon, far]) | RejectFuture("click_stream", 60)
    assert_that(out["records"], equal_to([soon]), label="Records")
    assert_that(out["dead"] | beam.Map(lambda d: (d.source, "ahead" in d.reason)),
                equal_to([("click_stream", True)]), label="Dead")
    p.run().wait_until_finish()


def test_publish_rebase_time_dead_letters_a_far_future_row(tmp_path):
    from pipelines.publish import publish

    class Done:
        def result(self, timeout=None):
            return "id"

    class Publisher:
        def __init__(self):
            self.sent = []

        def publish(self, topic, data, **attrs):
            self.sent.append(attrs["event_time"])
            return Done()

    (tmp_path / "click_stream.csv").write_text(
        "session_id,event_name,event_time,event_id,traffic_source,event_metadata\n"
        f"{NOW}\n{FAR}\n")
    pub = Publisher()
    summary = publish(str(tmp_path), "projects/p/topics/t", rebase_time=True, publisher=pub,
                      progress=False)
    assert summary.published == 1 and summary.skipped_bad == 1 and len(pub.sent) == 1
