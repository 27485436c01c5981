"""The click stream reduced to per-session partial statistics as it is read.

The batch job needs of each click event only what :class:`batch.combiners.SessionTimesFn`
accumulates (``click_time``), so one DoFn call reads a byte range of the file (the same
reader and record rules as the bounded replay: ``transforms.sources``), parses and
validates its records and adds each valid event to its session's accumulator. Only one
``(session_id, accumulator)`` per session and split crosses into the shuffle, not one
element per event; ``SessionActivity`` merges them with the session's owners
(:func:`batch.steps.owned_session_stat`).
"""
from __future__ import annotations

import csv
import gc
from typing import Dict, Iterable, List, Optional, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.metrics import Metrics

from batch import churn_features as cf
from batch.combiners import SessionTimesFn, event_key, event_keys
from transforms import records
from transforms.csv_splits import CHUNK_BYTES, file_splits
from transforms.event_time import DEFAULT_MAX_FUTURE, now_us
from transforms.sources import (
    DEAD,
    PARSE_BATCH,
    file_format,
    parse_lines,
    read_split_records,
    warn_headerless,
)

KIND = "click_stream"


def click_time(e: records.ClickEvent) -> Tuple[int, int, int]:
    """What one valid click event adds to its session (a SessionTimesFn input)."""
    return click_time_of(e.event_time_us, e.event_id, e.event_name)


def click_time_of(event_time_us: int, event_id: str, event_name: str) -> Tuple[int, int, int]:
    return (event_time_us, event_key(event_id), cf.event_kind(event_name))


#: Fields the fast path takes as they are (nothing to strip; anything else, e.g. an id
#: with a space or another time format, is left to ``records.click_event``).
_PLAIN_ID = r"^[0-9A-Za-z_-]+$"
_PLAIN_TIME = r"^[1-9]\d{3}-\d{2}-\d{2}T(?:[01]\d|2[0-3]):[0-5]\d:[0-5]\d\.\d{6}Z$"
_NAMES = pa.array(sorted(records.EVENT_NAMES))
_PROBE = ("s", None, "2020-01-01T00:00:00Z", "e", "", None)
_META_OK_MAX = 200_000
_NCOLS = len(records.CLICK_COLUMNS)
_INT64_MAX = 2 ** 63 - 1  # Arrow compares int64 times: a huge --max-future is "no limit"
_KIND = {n: cf.event_kind(n) for n in records.EVENT_NAMES}


def fast_click_times(lines: List[str], meta_ok: Dict[tuple, bool], limit_us: int
                     ) -> Optional[Tuple[List[tuple], List[str]]]:
    """A screen in front of ``records.click_event`` for a batch of CSV click lines:
    ``(runs, rest)``. ``runs`` holds ``(session_id, times, keys, kinds)`` (what
    ``click_time`` gives, per run of lines of one session) of the lines that rule
    certainly accepts unchanged; ``rest`` are the other lines, for the full parser
    (``transforms.sources.parse_lines``) to accept or dead-letter. None: all of them
    (a bad character, or the csv module does not read one record per line).

    A line is screened valid when its ids are plain ``[0-9A-Za-z_-]+``, its name is an
    event name, its time ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (converted by Arrow, in C) is
    not past ``limit_us`` (the --max-future limit), and ``records.click_event`` itself
    accepts its (event_name, metadata), empty metadata included: metadata is checked
    last and alone, so it is probed once per distinct (event_name, metadata) text."""
    if not lines or records.text_problem("\n".join(lines)) is not None:
        return None
    try:
        rows = list(csv.reader(lines))
    except csv.Error:
        return None
    if len(rows) != len(lines):
        return None
    rest: List[str] = []
    if any(len(r) != _NCOLS for r in rows):
        rest = [line for line, r in zip(lines, rows) if len(r) != _NCOLS]
        keep = [(line, r) for line, r in zip(lines, rows) if len(r) == _NCOLS]
        if not keep:
            return [], rest
        lines, rows = [k[0] for k in keep], [k[1] for k in keep]
    sids, names, times, eids, _sources, metas = (pa.array(c, pa.string()) for c in zip(*rows))
    ok = [_meta_ok(meta_ok, n, m) for n, m in zip(names.to_pylist(), metas.to_pylist())]
    regex = pc.match_substring_regex
    mask = pc.and_(pc.and_(regex(sids, _PLAIN_ID), regex(eids, _PLAIN_ID)),
                   pc.and_(pc.is_in(names, value_set=_NAMES), regex(times, _PLAIN_TIME)))
    idx = pc.indices_nonzero(pc.and_(mask, pa.array(ok, pa.bool_())))
    try:
        us = pc.take(times, idx).cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    except pa.ArrowInvalid:   # e.g. 2021-02-30: leave the whole batch to the parser
        return None
    in_time = pc.less_equal(us, limit_us)
    idx, us = pc.filter(idx, in_time), pc.filter(us, in_time)
    if len(idx) < len(lines):
        taken = set(idx.to_pylist())
        rest.extend(line for i, line in enumerate(lines) if i not in taken)
    if not len(idx):
        return [], rest
    sid_l = pc.take(sids, idx).to_pylist()
    us_l = us.to_pylist()
    keys = event_keys(pc.take(eids, idx).to_pylist())
    kinds = [_KIND[n] for n in pc.take(names, idx).to_pylist()]
    starts = [0, *[i + 1 for i, (a, b) in enumerate(zip(sid_l, sid_l[1:])) if a != b]]
    ends = [*starts[1:], len(sid_l)]
    return [(sid_l[a], us_l[a:b], keys[a:b], kinds[a:b]) for a, b in zip(starts, ends)], rest


def _meta_ok(cache: Dict[tuple, bool], name: str, meta: str) -> bool:
    key = (name, meta)
    ok = cache.get(key)
    if ok is None:
        if len(cache) >= _META_OK_MAX:
            cache.clear()
        probe = list(_PROBE)
        probe[1], probe[5] = name, meta
        try:
            records.click_event(*probe)
            ok = True
        except records.InvalidRecord:
            ok = False
        cache[key] = ok
    return ok


class ClickTimesFn(beam.DoFn):
    """A file split → ``(session_id, SessionTimesFn accumulator)`` per session in it; bad
    records → ``dead``. Counts read / valid / dead_lettered like the other sources."""

    def __init__(self, max_future: float = DEFAULT_MAX_FUTURE):
        self.max_future = max_future
        self.read = Metrics.counter("shopstream", f"{KIND}_read")
        self.valid = Metrics.counter("shopstream", f"{KIND}_valid")
        self.dead = Metrics.counter("shopstream", f"{KIND}_dead_lettered")

    def setup(self):
        self.meta_cache: dict = {}
        self.meta_ok: dict = {}
        self.combine = SessionTimesFn()

    def process(self, split):
        path, start, end = split
        fmt = file_format(path)
        lines, header_dead = read_split_records(path, start, end, KIND, fmt)
        self.read.inc(len(lines) + len(header_dead))
        for d in header_dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)
        create, add = self.combine.create_accumulator, self.combine.add_input
        add_many = self.combine.add_inputs
        accs: dict = {}
        dead, good = [], 0
        gc_on = gc.isenabled()
        gc.disable()  # no reference cycles are made here; collections only cost time
        try:
            for i in range(0, len(lines), PARSE_BATCH):
                batch = lines[i:i + PARSE_BATCH]
                limit = min(now_us() + int(float(self.max_future) * 1_000_000), _INT64_MAX)
                screened = (fast_click_times(batch, self.meta_ok, limit) if fmt == "csv"
                            else None)
                if screened is not None:
                    runs, batch = screened
                    for sid, times, keys, kinds in runs:
                        good += len(times)
                        acc = accs.get(sid)
                        accs[sid] = add_many(create() if acc is None else acc, times, keys,
                                             kinds)
                if not batch:
                    continue
                for rec in parse_lines(KIND, fmt, batch, self.meta_cache, self.max_future):
                    if isinstance(rec, records.DeadLetter):
                        dead.append(rec)
                        continue
                    good += 1
                    sid = rec.session_id
                    acc = accs.get(sid)
                    accs[sid] = add(create() if acc is None else acc, click_time(rec))
        finally:
            if gc_on:
                gc.enable()
        self.valid.inc(good)
        self.dead.inc(len(dead) + len(header_dead))
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)
        compact = self.combine.compact
        for sid, acc in accs.items():
            yield sid, compact(acc)


class ReadClickTimes(beam.PTransform):
    """Click stream files → {"records": (session_id, partial accumulator), "dead"}."""

    def __init__(self, paths: Iterable[str], max_future: float = DEFAULT_MAX_FUTURE,
                 chunk_bytes: int = CHUNK_BYTES):
        super().__init__()
        self.paths, self.max_future, self.chunk_bytes = list(paths), max_future, chunk_bytes

    def expand(self, pbegin):
        if not self.paths:
            raise ValueError(f"no {KIND} files found")
        warn_headerless(self.paths, KIND)
        splits = [s for path in self.paths for s in file_splits(path, self.chunk_bytes)]
        out = (pbegin
               | "Splits" >> beam.Create(splits)  # reshuffled: spread over workers
               | "ClickTimes" >> beam.ParDo(ClickTimesFn(self.max_future)).with_outputs(
                   DEAD, main="records"))
        return {"records": out.records, "dead": out[DEAD]}

