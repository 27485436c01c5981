"""Event-time sanity: events beyond --max-future are dead-lettered by every source."""
from __future__ import annotations

import json

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import records
from transforms.event_time import future_reason, now_us
from transforms.pubsub_source import ParseMessages, parse_message
from transforms.sources import DEAD, parse_lines

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


def test_a_far_future_line_keeps_its_own_raw_text_beside_a_line_with_a_control_character():
    bad = "s,CLICK,2020-01-01T00:00:00Z,e3,WEB,\x01"
    out = list(parse_lines("click_stream", "csv", [FAR, NOW, bad], max_future=86_400))
    dead = {d.raw: d.reason for d in out if isinstance(d, records.DeadLetter)}
    bad_raw = records.dead_letter("click_stream", bad, "").raw  # kept escaped
    assert set(dead) == {bad_raw, FAR}
    assert "control character" in dead[bad_raw] and "ahead of the wall clock" in dead[FAR]
    assert [r.event_id for r in out if isinstance(r, records.ClickEvent)] == ["e2"]


def test_pubsub_messages_beyond_max_future_are_dead_lettered_by_the_parser():
    wall = 1_700_000_000 * S
    ok = json.dumps({"session_id": "s", "event_name": "CLICK", "event_id": "a",
                     "event_time": "2023-11-14T22:13:20Z", "traffic_source": "WEB",
                     "event_metadata": ""}).encode()
    rec, t_us = parse_message("click_stream", ok, {"event_time": "2023-11-14T22:13:20Z"},
                              1_000_000, 60, wall)
    assert t_us == wall and rec.event_id == "a"
    far_attr = parse_message("click_stream", ok, {"event_time": "9999-12-31T23:59:59Z"},
                             1_000_000, 60, wall)
    assert isinstance(far_attr, records.DeadLetter) and far_attr.raw == ok.decode()
    assert far_attr.source == "click_stream:pubsub" and "ahead of the wall clock" in far_attr.reason
    far_record = ok.replace(b"2023-11-14T22:13:20Z", b"9999-12-31T23:59:59Z")
    dead = parse_message("click_stream", far_record, {"event_time": "2023-11-14T22:13:20Z"},
                         1_000_000, 60, wall)  # a sane attribute does not hide the field
    assert isinstance(dead, records.DeadLetter) and "9999-12-31" in dead.reason


def test_parse_messages_step_sends_far_future_messages_to_dead():
    from apache_beam.io.gcp.pubsub import PubsubMessage

    def msg(event_id, t):
        data = json.dumps({"session_id": "s", "event_name": "CLICK", "event_id": event_id,
                           "event_time": t, "traffic_source": "WEB",
                           "event_metadata": ""}).encode()
        return PubsubMessage(data, {"event_time": t})

    soon = records.format_time_us(now_us())
    p = TestPipeline(options=PipelineOptions(["--runner=DirectRunner"]))
    out = (p | beam.Create([msg("a", soon), msg("b", "9999-12-31T23:59:59Z")])
           | beam.ParDo(ParseMessages("click_stream", max_future=60)).with_outputs(
               DEAD, main="records"))
    assert_that(out.records | beam.Map(lambda r: r.event_id), equal_to(["a"]), label="Records")
    assert_that(out[DEAD] | beam.Map(lambda d: (d.source, "ahead" in d.reason)),
                equal_to([("click_stream:pubsub", True)]), label="Dead")
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
