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

import gc
from typing import Iterable, Tuple

import apache_beam as beam
from apache_beam.metrics import Metrics

from batch import churn_features as cf
from batch.combiners import SessionTimesFn, event_key
from transforms import records
from transforms.csv_splits import CHUNK_BYTES, file_splits
from transforms.event_time import DEFAULT_MAX_FUTURE
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
    return (e.event_time_us, event_key(e.event_id), cf.event_kind(e.event_name))


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
        self.combine = SessionTimesFn()

    def process(self, split):
        path, start, end = split
        fmt = file_format(path)
        lines, header_dead = read_split_records(path, start, end, KIND, fmt)
        self.read.inc(len(lines) + len(header_dead))
        for d in header_dead:
            yield beam.pvalue.TaggedOutput(DEAD, d)
        create, add = self.combine.create_accumulator, self.combine.add_input
        accs: dict = {}
        dead, good = [], 0
        gc_on = gc.isenabled()
        gc.disable()  # no reference cycles are made here; collections only cost time
        try:
            for i in range(0, len(lines), PARSE_BATCH):
                for rec in parse_lines(KIND, fmt, lines[i:i + PARSE_BATCH], self.meta_cache,
                                       self.max_future):
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

