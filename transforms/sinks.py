"""Warehouse sinks: the same PTransforms write to an embedded DuckDB file or BigQuery.

Two shapes of output:
* row streams (``events_enriched``, ``dead_letter``): rows keyed as in the table schema,
  written in bundles; a rerun replaces rows with the same key (no duplicates).
* snapshots (``product_engagement``, top-10 tables): each element is a whole table; the
  newest pane replaces the table.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from functools import lru_cache
from typing import Any, Dict, List

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms import records
from transforms.warehouse import open_warehouse, parse_target, table_schema

log = logging.getLogger(__name__)

#: Rows buffered per DuckDB write; large enough to amortise the Arrow conversion.
FLUSH_ROWS = 100_000


def enriched_row(e) -> Dict[str, Any]:
    """An EnrichedEvent → an ``events_enriched`` row."""
    return {
        "event_id": e.event_id, "session_id": e.session_id, "visit_id": e.visit_id,
        "event_name": e.event_name, "event_time": e.event_time_us,
        "traffic_source": e.traffic_source, "product_id": e.product_id,
        "product_id_inferred": e.product_id_inferred, "dwell_seconds": e.dwell_seconds,
        "quantity": e.quantity, "item_price": e.item_price, "payment_status": e.payment_status,
    }


#: EnrichedEvent field → events_enriched column (the rest of the columns are null).
_ENRICHED_COLUMNS = {
    "event_id": "event_id", "session_id": "session_id", "visit_id": "visit_id",
    "event_name": "event_name", "event_time_us": "event_time",
    "traffic_source": "traffic_source", "product_id": "product_id",
    "product_id_inferred": "product_id_inferred", "dwell_seconds": "dwell_seconds",
    "quantity": "quantity", "item_price": "item_price", "payment_status": "payment_status",
}


def enriched_table(batch) -> pa.Table:
    """A list of EnrichedEvents → an ``events_enriched`` Arrow table (same values as
    :func:`enriched_row`, built column by column)."""
    from transforms.sessionize import EnrichedEvent
    from transforms.warehouse import arrow_schema

    schema = arrow_schema("events_enriched")
    columns = list(zip(*batch)) if batch else [()] * len(EnrichedEvent._fields)
    data = {}
    for i, field in enumerate(EnrichedEvent._fields):
        name = _ENRICHED_COLUMNS.get(field)
        if name is not None:
            data[name] = pa.array(columns[i], type=schema.field(name).type)
    n = len(batch)
    return pa.table({f.name: data.get(f.name, pa.nulls(n, f.type)) for f in schema},
                    schema=schema)


def dead_row(d: records.DeadLetter) -> Dict[str, Any]:
    return {"source": d.source, "raw": d.raw, "reason": d.reason, "seen_at": d.seen_at}


@lru_cache(maxsize=None)
def _duckdb_lock(path: str) -> threading.Lock:
    """One lock per DuckDB file in this process: DuckDB allows one writer at a time."""
    return threading.Lock()


class _WriteRowsFn(beam.DoFn):
    """Buffer rows and upsert them into a DuckDB file (one transaction per flush)."""

    def __init__(self, target: str, table: str, mode: str):
        self.target, self.table, self.mode = target, table, mode
        self.written = Metrics.counter("shopstream", f"warehouse_rows_{table}")

    def setup(self):
        self.buffer: List[dict] = []
        with _duckdb_lock(self.target):  # the table exists even when no row comes
            with open_warehouse(self.target) as wh:
                wh.ensure(self.table)

    def start_bundle(self):
        self.buffer = []

    def process(self, row):
        self.buffer.append(row)
        if len(self.buffer) >= FLUSH_ROWS:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        if not self.buffer:
            return
        rows, self.buffer = self.buffer, []
        with _duckdb_lock(self.target):
            wh = open_warehouse(self.target)
            try:
                wh.write(self.table, rows, self.mode)
            finally:
                wh.close()
        self.written.inc(len(rows))


class _WriteTablesFn(_WriteRowsFn):
    """Like :class:`_WriteRowsFn` for elements that are lists of rows turned into one
    Arrow table by ``to_table`` (no per-row dicts)."""

    def __init__(self, target: str, table: str, mode: str, to_table, flush_rows: int):
        super().__init__(target, table, mode)
        self.to_table, self.flush_rows = to_table, flush_rows

    def start_bundle(self):
        self.buffer, self.rows = [], 0

    def process(self, batch):
        part = self.to_table(batch)
        self.buffer.append(part)
        self.rows += part.num_rows
        if self.rows >= self.flush_rows:
            self._flush()

    def _flush(self):
        import pyarrow as pa

        if not self.buffer:
            return
        data = pa.concat_tables(self.buffer)
        self.buffer, self.rows = [], 0
        with _duckdb_lock(self.target):
            wh = open_warehouse(self.target)
            try:
                wh.write(self.table, data, self.mode)
            finally:
                wh.close()
        self.written.inc(data.num_rows)


class _WriteSnapshotFn(beam.DoFn):
    """Replace a whole (small) table with each snapshot element; retried on failure."""

    def __init__(self, target: str, table: str, attempts: int = 5):
        self.target, self.table, self.attempts = target, table, attempts
        self.written = Metrics.counter("shopstream", f"warehouse_snapshots_{table}")

    def process(self, rows):
        rows = list(rows)
        for attempt in range(1, self.attempts + 1):
            try:
                with _duckdb_lock(self.target):
                    with open_warehouse(self.target) as wh:
                        wh.write(self.table, rows, "replace")
                break
            except Exception as exc:  # a warehouse outage must not kill a streaming job
                if attempt == self.attempts:
                    raise
                log.warning("writing %s failed (%s); retrying", self.table, exc)
                time.sleep(min(2 ** attempt, 30))
        self.written.inc()


def _bq_json(row: Dict[str, Any], table: str) -> Dict[str, Any]:
    out = {}
    for f in table_schema(table)["fields"]:
        v = row.get(f["name"])
        if v is not None and f["type"] == "TIMESTAMP" and isinstance(v, int):
            v = records.format_time_us(v)
        elif isinstance(v, (dt.datetime, dt.date)):
            v = v.isoformat()
        out[f["name"]] = v
    return out


class WriteRows(beam.PTransform):
    """Write a PCollection of row dicts to ``table`` of the TARGET warehouse.

    BigQuery rows that the service rejects come back as ``dead_letter`` rows (returned)."""

    def __init__(self, target: str, table: str, streaming: bool = False, batched=None,
                 flush_rows: int = 1_000_000):
        super().__init__()
        self.target, self.table, self.streaming = target, table, streaming
        #: ``batched``: elements are lists of records and this turns one into an Arrow
        #: table (e.g. :func:`enriched_table`); ``None``: elements are row dicts.
        self.batched, self.flush_rows = batched, flush_rows

    def expand(self, rows):
        kind, *parts = parse_target(self.target)
        mode = "upsert" if table_schema(self.table).get("key") else "append"
        if kind == "duckdb":
            fn = (_WriteRowsFn(self.target, self.table, mode) if self.batched is None else
                  _WriteTablesFn(self.target, self.table, mode, self.batched, self.flush_rows))
            rows | "WriteDuckDB" >> beam.ParDo(fn)
            return rows.pipeline | "NoFailedRows" >> beam.Create([])
        if self.batched is not None:
            rows = rows | "Unbatch" >> beam.FlatMap(
                lambda b, f=self.batched: f(b).to_pylist())
        from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery

        project, dataset = parts
        schema = {"fields": table_schema(self.table)["fields"]}
        method = (WriteToBigQuery.Method.STREAMING_INSERTS if self.streaming
                  else WriteToBigQuery.Method.FILE_LOADS)
        result = (rows
                  | "ToJson" >> beam.Map(_bq_json, self.table)
                  | "WriteBigQuery" >> WriteToBigQuery(
                      table=f"{project}:{dataset}.{self.table}", schema=schema, method=method,
                      create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                      write_disposition=BigQueryDisposition.WRITE_APPEND))
        if not self.streaming:
            return rows.pipeline | "NoFailedRows" >> beam.Create([])
        return (result.failed_rows_with_errors
                | "FailedToDead" >> beam.Map(
                    lambda f, t=self.table: dead_row(records.dead_letter(
                        f"bigquery:{t}", str(f[1]), f"BigQuery rejected the row: {f[2]}"))))


class WriteSnapshots(beam.PTransform):
    """Each element (a list of row dicts) replaces ``table`` in the TARGET warehouse."""

    def __init__(self, target: str, table: str):
        super().__init__()
        self.target, self.table = target, table

    def expand(self, snapshots):
        return snapshots | "ReplaceTable" >> beam.ParDo(_WriteSnapshotFn(self.target, self.table))


# --------------------------------------------------------------------------- staged (replay)
class _StageRowsFn(beam.DoFn):
    """Bounded replay into DuckDB: write rows as Parquet files under ``folder/table/``
    (one file per flush), loaded into the warehouse once after the run
    (:func:`load_staged`) — so several worker processes never open the DuckDB file.

    Elements are row dicts, or lists of records when ``to_table`` turns one into an
    Arrow table."""

    def __init__(self, folder: str, table: str, to_table=None, flush_rows: int = 250_000):
        self.folder, self.table, self.to_table = folder, table, to_table
        self.flush_rows = flush_rows
        self.written = Metrics.counter("shopstream", f"warehouse_rows_{table}")

    def start_bundle(self):
        self.parts, self.rows, self.dicts = [], 0, []

    def process(self, element):
        if self.to_table is None:
            self.dicts.append(element)
            self.rows += 1
        else:
            part = self.to_table(element)
            self.parts.append(part)
            self.rows += part.num_rows
        if self.rows >= self.flush_rows:
            self._flush()

    def finish_bundle(self):
        self._flush()

    def _flush(self):
        import uuid

        import pyarrow as pa
        import pyarrow.parquet as pq
        from transforms.warehouse import to_arrow

        if self.dicts:
            self.parts.append(to_arrow(self.table, self.dicts))
        if not self.parts:
            return
        data = pa.concat_tables(self.parts)
        self.parts, self.rows, self.dicts = [], 0, []
        path = f"{self.folder.rstrip('/')}/{self.table}/part-{uuid.uuid4().hex}.parquet"
        with FileSystems.create(path) as fh:
            pq.write_table(data, fh)
        self.written.inc(data.num_rows)


class _StageSnapshotFn(beam.DoFn):
    """Bounded replay: each snapshot (a whole small table) replaces the staged file."""

    def __init__(self, folder: str, table: str):
        self.folder, self.table = folder, table
        self.written = Metrics.counter("shopstream", f"warehouse_snapshots_{table}")

    def process(self, rows):
        import pyarrow.parquet as pq
        from transforms.warehouse import to_arrow

        path = f"{self.folder.rstrip('/')}/{self.table}/snapshot.parquet"
        with FileSystems.create(path) as fh:
            pq.write_table(to_arrow(self.table, list(rows)), fh)
        self.written.inc()


class StageRows(beam.PTransform):
    """``WriteRows`` for a bounded replay into DuckDB: stage Parquet, load after the run."""

    def __init__(self, folder: str, table: str, batched=None, flush_rows: int = 250_000):
        super().__init__()
        self.folder, self.table, self.batched, self.flush_rows = folder, table, batched, flush_rows

    def expand(self, rows):
        rows | "StageParquet" >> beam.ParDo(
            _StageRowsFn(self.folder, self.table, self.batched, self.flush_rows))
        return rows.pipeline | "NoFailedRows" >> beam.Create([])


class StageSnapshots(beam.PTransform):
    def __init__(self, folder: str, table: str):
        super().__init__()
        self.folder, self.table = folder, table

    def expand(self, snapshots):
        return snapshots | "StageSnapshot" >> beam.ParDo(_StageSnapshotFn(self.folder, self.table))


def staged_mode(table: str) -> str:
    return "upsert" if table_schema(table).get("key") else "append"


def load_staged(target: str, folder: str, tables) -> Dict[str, int]:
    """Load what :class:`StageRows` / :class:`StageSnapshots` wrote: ``tables`` is
    ``[(table, mode)]`` (rows: upsert by key, snapshots: replace). Every table is
    created even when nothing was staged for it. Returns rows loaded per table."""
    from transforms.table_io import load_parquet_glob, match_files

    loaded = {}
    with _duckdb_lock(target):
        with open_warehouse(target) as wh:
            for table, mode in tables:
                wh.ensure(table)
                base = f"{folder.rstrip('/')}/{table}"
                files = match_files(f"{base}/*.parquet")
                # A few files per write: an upsert stages and de-duplicates its whole
                # input in memory (12 M rows at once took 5.5 GB; one 250 k-row file per
                # write is slow, each write scans the table).
                n = 0
                for g in range(0, len(files), LOAD_FILES):
                    group = files[g:g + LOAD_FILES]
                    sub = f"{base}/load-{g // LOAD_FILES:05d}"
                    try:
                        FileSystems.mkdirs(sub)
                    except OSError:  # exists (a rerun of the load), or no folders (gs://)
                        pass
                    FileSystems.rename(group, [f"{sub}/{f.rsplit('/', 1)[-1]}" for f in group])
                    n += load_parquet_glob(wh, table, f"{sub}/*.parquet", mode)
                loaded[table] = n
    return loaded


#: Staged files loaded per warehouse write (each holds a flush: >= 250 k rows).
LOAD_FILES = 8
