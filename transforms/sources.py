"""Sources: historical files (local or gs://, CSV or JSONL) and Pub/Sub, parsed into
typed records with event-time timestamps. Bad input leaves on the ``dead`` output."""
from __future__ import annotations

import csv
from typing import Iterable, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import TimestampedValue

from transforms import records

DEAD = "dead"
#: How many lines one parse call handles; csv.reader over a batch is ~2× faster per line.
PARSE_BATCH = 2000


def event_time_us(rec) -> int:
    return rec.event_time_us if isinstance(rec, records.ClickEvent) else rec.created_at_us


def find_table_files(root: str, kind: str) -> List[str]:
    """The files holding table ``kind`` under folder ``root`` (local or gs://):
    ``kind.csv``, ``kind.jsonl``, ``kind-*.csv``, ``kind/*.csv`` (optionally gzipped)."""
    base = root.rstrip("/")
    found: List[str] = []
    for ext in ("csv", "jsonl", "json", "csv.gz", "jsonl.gz"):
        for pattern in (f"{base}/{kind}.{ext}", f"{base}/{kind}-*.{ext}", f"{base}/{kind}/*.{ext}"):
            result = FileSystems.match([pattern])[0]
            found.extend(m.path for m in result.metadata_list)
    return sorted(set(found))


def file_format(path: str) -> str:
    name = path[:-3] if path.endswith(".gz") else path
    return "json" if name.endswith((".jsonl", ".json")) else "csv"


class ParseLines(beam.DoFn):
    """Lines (batched) → records with event-time timestamps; bad lines → ``dead``."""

    def __init__(self, kind: str, fmt: str, timestamped: bool = True):
        self.kind, self.fmt, self.timestamped = kind, fmt, timestamped
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.valid = Metrics.counter("shopstream", f"{kind}_valid")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, lines: List[str]):
        kind, parse_fields = self.kind, records.parse_fields
        self.read.inc(len(lines))
        good = bad = 0
        if self.fmt == "csv":
            try:
                rows = list(csv.reader(lines))
            except csv.Error:  # fall back to one line at a time to isolate the bad one
                rows = None
            pairs = zip(lines, rows) if rows is not None and len(rows) == len(lines) else (
                (ln, None) for ln in lines)
            for line, fields in pairs:
                try:
                    rec = (parse_fields(kind, fields) if fields is not None
                           else records.parse_csv_line(kind, line))
                except records.InvalidRecord as exc:
                    bad += 1
                    yield beam.pvalue.TaggedOutput(DEAD, records.dead_letter(kind, line, str(exc)))
                    continue
                good += 1
                yield self._out(rec)
        else:
            for line in lines:
                rec = records.parse_or_dead(kind, line, "json")
                if isinstance(rec, records.DeadLetter):
                    bad += 1
                    yield beam.pvalue.TaggedOutput(DEAD, rec)
                else:
                    good += 1
                    yield self._out(rec)
        self.valid.inc(good)
        self.dead.inc(bad)

    def _out(self, rec):
        if self.timestamped and self.kind in ("click_stream", "transactions"):
            return TimestampedValue(rec, event_time_us(rec) / 1e6)
        return rec


class ParseMessages(beam.DoFn):
    """Pub/Sub payloads (JSON objects) → records; bad payloads → ``dead``."""

    def __init__(self, kind: str):
        self.kind = kind
        self.read = Metrics.counter("shopstream", f"{kind}_read")
        self.dead = Metrics.counter("shopstream", f"{kind}_dead_lettered")

    def process(self, payload: bytes):
        self.read.inc()
        rec = records.parse_or_dead(self.kind, payload, "json")
        if isinstance(rec, records.DeadLetter):
            self.dead.inc()
            yield beam.pvalue.TaggedOutput(DEAD, rec._replace(source=f"{self.kind}:pubsub"))
        else:
            yield rec  # the element's timestamp is the message's event_time attribute


class ReadTableFiles(beam.PTransform):
    """Read one Fashion Campus table from files; returns {"records", "dead"}."""

    def __init__(self, paths: Iterable[str], kind: str, timestamped: bool = True):
        super().__init__()
        self.paths, self.kind, self.timestamped = list(paths), kind, timestamped

    def expand(self, pbegin):
        parsed_records, dead = [], []
        if not self.paths:
            raise ValueError(f"no {self.kind} files found")
        for i, path in enumerate(self.paths):
            fmt = file_format(path)
            lines = (pbegin
                     | f"Read{i}" >> beam.io.ReadFromText(path, skip_header_lines=1 if fmt == "csv" else 0)
                     | f"Batch{i}" >> beam.BatchElements(min_batch_size=PARSE_BATCH,
                                                         max_batch_size=PARSE_BATCH))
            out = lines | f"Parse{i}" >> beam.ParDo(
                ParseLines(self.kind, fmt, self.timestamped)).with_outputs(DEAD, main="records")
            parsed_records.append(out.records)
            dead.append(out[DEAD])
        return {
            "records": parsed_records | "FlattenRecords" >> beam.Flatten(),
            "dead": dead | "FlattenDead" >> beam.Flatten(),
        }


class _ReadWholeFile(beam.DoFn):
    """One small table file → its records; bad rows → ``dead``."""

    def __init__(self, kind: str):
        self.kind = kind

    def process(self, path: str):
        for rec in records.read_csv_records(path, self.kind):
            if isinstance(rec, records.DeadLetter):
                yield beam.pvalue.TaggedOutput(DEAD, rec)
            else:
                yield rec


class ReadSmallTable(beam.PTransform):
    """A small dimension table (products, customers) read whole by one DoFn per file.

    Unlike ReadFromText this also runs inside a streaming job on the DirectRunner, and
    the table is read by the workers, not by the launcher."""

    def __init__(self, paths: Iterable[str], kind: str):
        super().__init__()
        self.paths, self.kind = list(paths), kind

    def expand(self, pbegin):
        out = (pbegin
               | "Paths" >> beam.Create(self.paths)
               | "ReadFiles" >> beam.ParDo(_ReadWholeFile(self.kind)).with_outputs(
                   DEAD, main="records"))
        return {"records": out.records, "dead": out[DEAD]}


class ReadPubSubRecords(beam.PTransform):
    """Read JSON records from a Pub/Sub subscription with event-time timestamps."""

    def __init__(self, subscription: str, kind: str, id_label: Optional[str] = None):
        super().__init__()
        self.subscription, self.kind, self.id_label = subscription, kind, id_label

    def expand(self, pbegin):
        kwargs = {"id_label": self.id_label} if self.id_label else {}
        out = (pbegin
               | "ReadPubSub" >> beam.io.ReadFromPubSub(
                   subscription=self.subscription, timestamp_attribute="event_time", **kwargs)
               | "ParseMessages" >> beam.ParDo(ParseMessages(self.kind)).with_outputs(
                   DEAD, main="records"))
        return {"records": out.records, "dead": out[DEAD]}
