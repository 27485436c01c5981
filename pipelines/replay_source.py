"""`replay --streaming`'s click source: files read in event-time order with a watermark
that advances with the data.

Exported files are rarely in event-time order (the generator writes one customer's
year, then the next customer's), and the only sound watermark over an unordered file is
its earliest unread event time, which would stand still until the end. So a plan step
reads each file once, orders its records by event time and spills them in chunks of
:data:`CHUNK_RECORDS` to the run's spill folder; a splittable DoFn then emits one chunk
at a time and, after each, sets its watermark to just below the next chunk's earliest
event time (no record at or before it can follow) and checkpoints itself. A runner that
honours SDF watermarks (Dataflow; the local FnApiRunner with ``direct_runner_fix``'s
event-time timers) fires due event-time timers between chunks: sessions settle and
leave state while the input is read. Records keep their text and are parsed by the same
``sources.ParseLines`` as every file source (same dead letters and counters); a record
that does not parse goes first, to be dead-lettered there.
"""
from __future__ import annotations

import csv
import pickle
import zlib
from typing import List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider, WatermarkEstimatorProvider
from apache_beam.utils.timestamp import Timestamp

from transforms import records, sources
from transforms.csv_splits import file_splits
from transforms.event_time import DEFAULT_MAX_FUTURE

#: Click records per chunk: the watermark steps once per chunk.
CHUNK_RECORDS = 20_000
#: Click events per order in the Fashion Campus data (12.8 M / 852 k ≈ 15; the
#: generator's sets alike): orders are read in chunks this many times smaller than the
#: clicks', so both sources step through event time alike.
CLICKS_PER_ORDER = 16
_UNPARSED = -(2 ** 62)  # sorts first
#: Per table with a CSV fast path: its columns and the time field the parser reads.
_TIME_FIELDS = {"click_stream": (records.CLICK_COLUMNS, "event_time"),
                "transactions": (records.TRANSACTION_COLUMNS, "created_at")}


def _times(kind: str, fmt: str, lines: List[str]) -> List[int]:
    """Each line's event time (:data:`_UNPARSED` when it does not parse), in order. A
    CSV click (order) row's time is its ``event_time`` (``created_at``) field through
    ``records.parse_time_us``, as the parser reads it; a row that field does not fit is
    :data:`_UNPARSED` (it goes first: a record placed early is only ahead of the
    watermark, never behind it)."""
    if fmt == "csv" and kind in _TIME_FIELDS and records.text_problem("\n".join(lines)) is None:
        columns, name = _TIME_FIELDS[kind]
        at = columns.index(name)
        try:
            rows = list(csv.reader(lines))
        except csv.Error:
            rows = None
        if rows is not None and len(rows) == len(lines):
            out = []
            for fields in rows:
                try:
                    out.append(records.parse_time_us(fields[at], name)
                               if len(fields) == len(columns) else _UNPARSED)
                except records.InvalidRecord:
                    out.append(_UNPARSED)
            return out
    # the parser's own (line, record) pairs: equal lines parse alike, so a map serves
    times = {line: _UNPARSED if isinstance(r, records.DeadLetter) else sources.event_time_us(r)
             for line, r in sources.parse_pairs(kind, fmt, lines, {})}
    return [times[line] for line in lines]


def ordered_chunks(path: str, kind: str, chunk_records: int = CHUNK_RECORDS):
    """``(chunks, dead)``: the file's records (text; header and bad bytes handled by
    ``sources.read_split_records``) ordered by event time, in chunks of
    ``[(texts, watermark_after_us)]`` — the watermark that holds once the chunk and all
    before it are read (``None`` after the last) — and wrong-header dead letters."""
    fmt = sources.file_format(path)
    keyed, dead = [], []
    for _, start, end in file_splits(path):
        lines, bad = sources.read_split_records(path, start, end, kind, fmt)
        dead.extend(bad)
        for k in range(0, len(lines), sources.PARSE_BATCH):
            batch = lines[k:k + sources.PARSE_BATCH]
            keyed.extend(zip(_times(kind, fmt, batch), range(len(keyed), len(keyed) + len(batch)),
                             batch))
    keyed.sort()
    parts = [keyed[i:i + chunk_records] for i in range(0, len(keyed), chunk_records)]
    chunks = []
    for i, part in enumerate(parts):
        after = parts[i + 1][0][0] - 1 if i + 1 < len(parts) else None
        chunks.append(([line for _, _, line in part], after))
    return chunks, dead


class _PlanChunks(beam.DoFn):
    """A file → its chunks spilled in event-time order: ``[(chunk path, watermark
    after)]`` for the reader; wrong-header dead letters → ``dead``."""

    def __init__(self, kind: str, spill_dir: str, chunk_records: int):
        self.kind, self.spill_dir, self.chunk_records = kind, spill_dir, chunk_records
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, indexed_path):
        index, path = indexed_path
        chunks, dead = ordered_chunks(path, self.kind, self.chunk_records)
        for d in dead:
            self.read.inc()
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(sources.DEAD, d)
        plan = []
        for i, (texts, after) in enumerate(chunks):
            name = f"{self.spill_dir}/ordered/{self.kind}-{index}-{i:06d}.bin"
            with FileSystems.create(name) as fh:
                fh.write(zlib.compress(pickle.dumps(texts, protocol=pickle.HIGHEST_PROTOCOL), 1))
            plan.append((name, after))
        yield plan


class _Chunks(RestrictionProvider):
    def initial_restriction(self, plan):
        return OffsetRange(0, len(plan))

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, plan, restriction):
        return restriction.size()

    def split(self, plan, restriction):
        yield restriction  # in order: the watermarks of the plan assume it


class _Watermark(WatermarkEstimatorProvider):
    def initial_estimator_state(self, plan, restriction):
        return None

    def create_watermark_estimator(self, state):
        return ManualWatermarkEstimator(state)


class _ReadChunksInOrder(beam.DoFn):
    """A plan → its records' text, chunk by chunk, the watermark after each."""

    def __init__(self, kind: str):
        self.kind = kind
        self.chunks = Metrics.counter("shopstream", f"{kind}_event_time_chunks")
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, plan, tracker=beam.DoFn.RestrictionParam(_Chunks()),
                watermark=beam.DoFn.WatermarkEstimatorParam(_Watermark())):
        i = tracker.current_restriction().start
        if not tracker.try_claim(i):
            return
        name, after = plan[i]
        with FileSystems.open(name) as fh:
            texts = pickle.loads(zlib.decompress(fh.read()))
        self.chunks.inc()
        if records.text_problem("\n".join(texts)) is not None:
            # undecodable bytes must not cross a Beam boundary (as sources._ReadSplits)
            good = []
            for text in texts:
                reason = records.text_problem(text)
                if reason:
                    self.read.inc()
                    self.dead.inc()
                    yield beam.pvalue.TaggedOutput(sources.DEAD,
                                                   records.dead_letter(self.kind, text, reason))
                else:
                    good.append(text)
            texts = good
        for k in range(0, len(texts), sources.PARSE_BATCH):
            yield texts[k:k + sources.PARSE_BATCH]
        if after is not None:
            watermark.set_watermark(Timestamp(micros=after))
            tracker.defer_remainder()


class ReadFilesInEventTime(beam.PTransform):
    """Like ``sources.ReadTableFiles`` (``{"records", "dead"}``, the same parser and
    counters), each file read in event-time order with an advancing watermark.
    Labels: ``Paths``, ``Plan``, ``Read``, ``Parse``, ``FlattenRecords``,
    ``FlattenDead``."""

    def __init__(self, paths, kind: str, spill_dir: str, max_future: float = DEFAULT_MAX_FUTURE,
                 chunk_records: Optional[int] = None):
        super().__init__()
        self.paths, self.kind, self.spill_dir = list(paths), kind, spill_dir
        self.max_future = max_future
        self.chunk_records = chunk_records or (
            max(1, CHUNK_RECORDS // CLICKS_PER_ORDER) if kind == "transactions" else CHUNK_RECORDS)

    def expand(self, pbegin):
        if not self.paths:
            raise ValueError(f"no {self.kind} files found")
        sources.warn_headerless(self.paths, self.kind)
        parsed, dead = [], []
        for i, path in enumerate(self.paths):
            plan = (pbegin
                    | f"Paths{i}" >> beam.Create([(i, path)])
                    | f"Plan{i}" >> beam.ParDo(_PlanChunks(
                        self.kind, self.spill_dir, self.chunk_records)).with_outputs(
                            sources.DEAD, main="plan"))
            read = plan.plan | f"Read{i}" >> beam.ParDo(_ReadChunksInOrder(self.kind)).with_outputs(
                sources.DEAD, main="lines")
            out = read.lines | f"Parse{i}" >> beam.ParDo(sources.ParseLines(
                self.kind, sources.file_format(path), True, self.max_future)).with_outputs(
                    sources.DEAD, main="records")
            parsed.append(out.records)
            dead.extend([plan[sources.DEAD], read[sources.DEAD], out[sources.DEAD]])
        return {"records": parsed | "FlattenRecords" >> beam.Flatten(),
                "dead": dead | "FlattenDead" >> beam.Flatten()}
