"""pipelines.replay_source: records ordered by event time in chunks whose watermarks
no later record undercuts, whatever the file order; bad lines go first."""
from __future__ import annotations

import random

from pipelines.replay_source import ordered_chunks
from transforms.records import format_time_us

T0 = 1_600_000_000_000_000
HEADER = "session_id,event_name,event_time,event_id,traffic_source,event_metadata"


def _line(k, t_us):
    return f"s{k % 7},CLICK,{format_time_us(t_us)},e{k},WEB,"


def test_chunks_are_in_event_time_order_and_watermarks_are_sound(tmp_path):
    rng = random.Random(4)
    times = [T0 + rng.randint(0, 10 ** 9) for _ in range(103)]
    path = tmp_path / "click_stream.csv"
    path.write_text("\n".join([HEADER, *(_line(k, t) for k, t in enumerate(times)),
                               "not,a,valid,row"]) + "\n")
    chunks, dead = ordered_chunks(str(path), "click_stream", chunk_records=10)
    assert dead == []
    assert [len(texts) for texts, _ in chunks] == [10] * 10 + [4]
    assert chunks[0][0][0] == "not,a,valid,row"  # unparseable: first
    flat = [t for texts, _ in chunks for t in texts][1:]
    assert flat == [_line(k, t) for t, k in sorted((t, k) for k, t in enumerate(times))]
    order = sorted(times)
    seen = 0
    for i, (texts, after) in enumerate(chunks):
        seen += len(texts) - (1 if i == 0 else 0)
        if i + 1 < len(chunks):  # just below the next chunk's earliest record
            assert after == order[seen] - 1 and all(t > after for t in order[seen:])
        else:
            assert after is None


def test_a_row_the_time_field_does_not_fit_goes_first_and_valid_times_are_the_parsers():
    from pipelines.replay_source import _UNPARSED, _times
    from transforms import sources

    lines = [_line(1, T0 + 5), "s,CLICK,not-a-time,e2,WEB,", "a,b", _line(3, T0 + 1),
             'q,SEARCH,2021-01-01T00:00:00Z,e4,WEB,"{\'search_keywords\': \'x\'}"']
    parsed = [sources.event_time_us(r) for r in sources.parse_lines("click_stream", "csv", lines, {})
              if not hasattr(r, "reason")]
    times = _times("click_stream", "csv", lines)
    assert times[1] == times[2] == _UNPARSED
    assert [t for t in times if t != _UNPARSED] == parsed


def test_order_times_are_the_parsers_and_a_row_created_at_does_not_fit_goes_first():
    from pipelines.replay_source import _UNPARSED, _times
    from tests.test_records import TXN_LINE
    from transforms import sources

    later = TXN_LINE.replace("2018-07-29T15:22:01", "2018-07-30T01:00:00", 1)
    bad_time = TXN_LINE.replace("2018-07-29T15:22:01.458193Z", "yesterday", 1)
    lines = [later, bad_time, "a,b", TXN_LINE]
    parsed = [sources.event_time_us(r) for r in sources.parse_lines("transactions", "csv", lines, {})
              if not hasattr(r, "reason")]
    times = _times("transactions", "csv", lines)
    assert times[1] == times[2] == _UNPARSED
    assert [t for t in times if t != _UNPARSED] == parsed and parsed[0] > parsed[1]
