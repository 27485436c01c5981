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


HOSTILE_LINES = [
    'a1,CLICK,2021-06-22T10:26:25.387346Z,e1,MOBILE,',
    'a1,ADD_TO_CART,2021-06-22T10:27:25.000001Z,e2,MOBILE,'
    '"{\'product_id\': 5, \'quantity\': 1, \'item_price\': 100}"',
    'a1,ADD_TO_CART,2021-06-22T10:28:25.000001Z,e3,MOBILE,'
    '"{\'product_id\': 0, \'quantity\': 1, \'item_price\': 100}"',
    'a1,ADD_TO_CART,2021-06-22T10:29:25.000001Z,e4,MOBILE,',
    'a1,SEARCH,2021-06-22T10:30:25.000001Z,e5,MOBILE,"{\'search_keywords\': \'Tas, hitam\'}"',
    'a1,BOOKING,2021-06-22T10:31:25.000001Z,e6,MOBILE,"{\'payment_status\': \'Success\'}"',
    'a1,BOOKING,2021-06-22T10:32:25.000001Z,e7,MOBILE,"{not a literal"',
    'a1,CLICK,2021-06-22T10:26:25.387346Z,e1,MOBILE,',          # redelivered e1
    ' a2 ,CLICK,2021-06-22T10:33:25.000001Z, e8 ,WEB,',          # stripped ids
    ',CLICK,2021-06-22T10:33:25.000001Z,e9,WEB,',
    'a2,CLICK,2021-06-22T10:33:25.000001Z,,WEB,',
    'a2,click,2021-06-22T10:33:25.000001Z,e10,WEB,',
    'a2, CLICK,2021-06-22T10:33:25.000001Z,e11,WEB,',
    'a2,CLICK,2021-06-22T10:33:25Z,e12,WEB,',                    # no fraction: valid
    'a2,CLICK,2021-06-22 10:33:25.000001,e13,WEB,',
    'a2,CLICK,2021-06-22T10:33:25.000001+07:00,e14,WEB,',
    'a2,CLICK,2999-06-22T10:33:25.000001Z,e15,WEB,',             # too far ahead
    'a2,CLICK,2021-06-22T10:33:25.000001Z,e16,WEB',              # 5 fields
    'a2,CLICK,2021-06-22T10:33:25.000001Z,e17,WEB,,extra',       # 7 fields
    'a2,SEARCH,2021-06-22T10:34:25.000001Z,e19,WEB,"{\'search_keywords\': \'two\nlines\'}"',
    'a3,HOMEPAGE,2021-06-22T10:35:25.000001Z,e20,WEB,',
]
BAD_DATE = 'a4,CLICK,2021-02-30T10:35:25.000001Z,e21,WEB,'           # passes the screen's regex
CONTROL = 'a2,CLICK,2021-06-22T10:33:25.000001Z,e18,WEB\x07,'          # control character


def _read_partials(path, monkeypatch=None):
    from batch.click_sessions import ClickTimesFn

    fn = ClickTimesFn()
    fn.setup()
    times, dead = {}, []
    combine = SessionTimesFn()
    for split in file_splits(path):
        for out in fn.process(split):
            if isinstance(out, beam.pvalue.TaggedOutput):
                # the reason of a too-early event names the wall clock: cut it off
                dead.append((out.value.raw, out.value.reason.split(" (")[0]))
            else:
                times.setdefault(out[0], []).append(out[1])
    merged = {sid: combine.extract_output(combine.merge_accumulators(parts))
              for sid, parts in times.items()}
    return merged, sorted(dead)


def test_the_screen_accepts_and_refuses_what_the_full_parser_does(tmp_path, monkeypatch):
    """fast_click_times in front of the full parser changes no session and no dead
    letter, and it does take the plain lines."""
    import batch.click_sessions as cs

    screen = cs.fast_click_times
    taken = []

    def counting(*args):
        out = screen(*args)
        taken.append(0 if out is None else sum(len(r[1]) for r in out[0]))
        return out

    for name, extra in (("mixed", []), ("bad_date", [BAD_DATE]), ("control", [CONTROL])):
        path = tmp_path / f"{name}.csv"
        path.write_text("session_id,event_name,event_time,event_id,traffic_source,"
                        "event_metadata\n" + "\n".join(HOSTILE_LINES + extra) + "\n")
        taken.clear()
        with monkeypatch.context() as m:
            m.setattr(cs, "fast_click_times", counting)
            screened = _read_partials(str(path))
        # e1 (twice), e2, e5, e6, e20; a bad date or character: the parser takes all
        assert sum(taken) == (6 if name == "mixed" else 0)
        with monkeypatch.context() as m:
            m.setattr(cs, "fast_click_times", lambda *a: None)
            full = _read_partials(str(path))
        assert screened == full
        sessions, dead = screened
        assert set(sessions) == {"a1", "a2", "a3"}
        assert sessions["a1"].duplicates == 1 and len(sessions["a1"].times) == 4
        assert len(sessions["a2"].times) == 5  # e8, e11 (stripped), e12-e14 (other time forms)
        assert len(dead) == 10 + (name != "mixed")
        if name == "mixed":
            assert {raw.split(",")[3] for raw, _ in dead} == {
                "e3", "e4", "e7", "e9", "", "e10", "e15", "e16", "e17", "e19"}


def test_a_batch_of_only_wrong_field_counts_is_dead_lettered(tmp_path):
    path = tmp_path / "tabs.csv"
    path.write_text("session_id,event_name,event_time,event_id,traffic_source,event_metadata\n"
                    "a\tCLICK\t2021-06-22T10:26:25.387346Z\te1\tWEB\t\nx,y\n")
    sessions, dead = _read_partials(str(path))
    assert sessions == {}
    assert [reason for _, reason in dead] == [
        "wrong field count: expected 6 click_stream fields, got 1",
        "wrong field count: expected 6 click_stream fields, got 2"]
