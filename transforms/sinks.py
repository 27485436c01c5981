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
from transforms.session_rules import EnrichedEvent
from transforms.table_io import load_parquet_glob, match_files
from transforms.warehouse import arrow_schema, open_warehouse, parse_target, table_schema, to_arrow

log = logging.getLogger(__name__)

#: Rows buffered per DuckDB write; large enough to amortise the Arrow conversion.
FLUSH_ROWS = 100_000
#: Seconds between rewrites of a snapshot table by an unbounded (live) pipeline. Each
#: rewrite is one BigQuery load job; BigQuery allows 1,500 per table per day.
DEFAULT_WAREHOUSE_REFRESH = 900.0
#: Column used as the BigQuery streaming insert id (best-effort dedup of retries).
INSERT_ID_COLUMNS = {"events_enriched": "event_id"}


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
    """Buffer rows and upsert them into a DuckDB file (one transaction per flush).

    The connection is kept from the first flush to ``teardown``: opening and closing
    the file at every bundle's flush made DuckDB checkpoint each time (py-spy: ~10 % of
    a ``replay --streaming`` run). A committed flush is in DuckDB's write-ahead log, so
    it is as durable as before; the process holds the file for the run (DuckDB allows
    one writing process anyway)."""

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
            self._warehouse().write(self.table, rows, self.mode)
        self.written.inc(len(rows))

    def _warehouse(self):
        if getattr(self, "_wh", None) is None:
            self._wh = open_warehouse(self.target)
        return self._wh

    def teardown(self):
        wh, self._wh = getattr(self, "_wh", None), None
        if wh is not None:
            with _duckdb_lock(self.target):
                wh.close()


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
            self._warehouse().write(self.table, data, self.mode)
        self.written.inc(data.num_rows)


class _WriteSnapshotFn(beam.DoFn):
    """Replace a whole (small) table with each snapshot element; retried on failure.

    ``give_up``: after the last attempt, log the failure and count it instead of
    failing the bundle (a live job: the next refresh rewrites the whole table, and a
    bundle retried forever would stall the stage)."""

    def __init__(self, target: str, table: str, attempts: int = 5, give_up: bool = False):
        self.target, self.table, self.attempts, self.give_up = target, table, attempts, give_up
        self.written = Metrics.counter("shopstream", f"warehouse_snapshots_{table}")
        self.failed = Metrics.counter("shopstream", f"warehouse_snapshot_failures_{table}")

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
                    if not self.give_up:
                        raise
                    log.error("writing snapshot table %s failed %d times (%s); the next "
                              "refresh rewrites it", self.table, attempt, exc)
                    self.failed.inc()
                    return
                log.warning("writing %s failed (%s); retrying", self.table, exc)
                time.sleep(min(2 ** attempt, 30))
        self.written.inc()


def _arrival(rows) -> tuple:
    """(processing time, rows): the newest snapshot of a refresh is the last to arrive
    (the all-time panes of one pipeline fire in sequence)."""
    return (time.time(), rows)


class LatestSnapshotFn(beam.CombineFn):
    """Of the ``(arrival, rows)`` snapshots of one refresh, the rows of the newest."""

    def create_accumulator(self):
        return None

    def add_input(self, acc, value):
        return value if acc is None or value[0] >= acc[0] else acc

    def merge_accumulators(self, accs):
        best = None
        for a in accs:
            if a is not None and (best is None or a[0] >= best[0]):
                best = a
        return best

    def extract_output(self, acc):
        return acc


class EveryRefresh(beam.PTransform):
    """Unbounded snapshots → at most one (the newest) per ``refresh_seconds`` of
    processing time: a global window with a repeated processing-time trigger, then the
    newest of each pane. The shuffle also puts the warehouse write in a stage of its
    own, so a slow warehouse never holds up the Redis rankings."""

    def __init__(self, refresh_seconds: float):
        super().__init__()
        if refresh_seconds <= 0:
            raise ValueError(f"warehouse refresh must be positive, got {refresh_seconds}")
        self.refresh_seconds = refresh_seconds

    def expand(self, snapshots):
        from apache_beam.transforms import trigger, window

        return (snapshots
                | "Arrival" >> beam.Map(_arrival)
                | "KeyByTable" >> beam.Map(lambda v: (0, v)).with_output_types(
                    beam.typehints.KV[int, beam.typehints.Any])
                | "Refresh" >> beam.WindowInto(
                    window.GlobalWindows(),
                    trigger=trigger.Repeatedly(trigger.AfterProcessingTime(
                        max(1, int(round(self.refresh_seconds))))),
                    accumulation_mode=trigger.AccumulationMode.DISCARDING)
                | "Newest" >> beam.CombinePerKey(LatestSnapshotFn())
                | "Rows" >> beam.Map(lambda kv: kv[1][1]))


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
        json_rows = rows | "ToJson" >> beam.Map(_bq_json, self.table)
        if self.streaming:
            failed = json_rows | "WriteBigQuery" >> StreamRowsToBigQuery(
                f"{project}:{dataset}.{self.table}", schema, INSERT_ID_COLUMNS.get(self.table))
            return failed | "FailedToDead" >> beam.Map(bigquery_dead_row, self.table)
        json_rows | "WriteBigQuery" >> WriteToBigQuery(
            table=f"{project}:{dataset}.{self.table}", schema=schema,
            method=WriteToBigQuery.Method.FILE_LOADS,
            create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
            write_disposition=BigQueryDisposition.WRITE_APPEND)
        return rows.pipeline | "NoFailedRows" >> beam.Create([])


def bigquery_dead_row(failed, table: str) -> Dict[str, Any]:
    """A row BigQuery refused, ``(destination, row, errors)`` → a dead_letter row whose
    reason is BigQuery's error."""
    _dest, row, errors = failed
    import json

    reasons = "; ".join(
        f"{e.get('reason', '?')}: {e.get('message', '')}".strip() for e in (errors or [])
        if isinstance(e, dict)) or str(errors)
    return dead_row(records.dead_letter(f"bigquery:{table}", json.dumps(row, default=str),
                                        f"BigQuery rejected the row: {reasons}"))


def _with_insert_id(row: Dict[str, Any], destination: str, id_column):
    import uuid

    insert_id = row.get(id_column) if id_column else None
    return destination, (row, str(insert_id) if insert_id is not None else uuid.uuid4().hex)


class StreamRowsToBigQuery(beam.PTransform):
    """BigQuery streaming inserts of JSON rows into ``table`` (PROJECT:DATASET.TABLE);
    returns the rows BigQuery refused as ``(destination, row, errors)``.

    Beam's ``WriteToBigQuery`` streaming path with two differences: the insert id of a
    row is its ``id_column`` value (``event_id``: a redelivered or re-emitted event is
    deduplicated by BigQuery, best effort, for about a minute) instead of a random id,
    and only transient errors are retried (``RETRY_ON_TRANSIENT_ERROR``): a row that
    violates the schema comes back at once instead of being retried for hours."""

    def __init__(self, table: str, schema: dict, id_column=None, batch_size: int = 500):
        super().__init__()
        self.table, self.schema, self.id_column = table, schema, id_column
        self.batch_size = batch_size

    def expand(self, rows):
        from apache_beam.io.gcp.bigquery import BigQueryDisposition, BigQueryWriteFn
        from apache_beam.io.gcp.bigquery_tools import RetryStrategy

        out = (rows
               | "AddInsertIds" >> beam.Map(_with_insert_id, self.table, self.id_column)
               | "Insert" >> beam.ParDo(BigQueryWriteFn(
                   batch_size=self.batch_size, schema=self.schema,
                   create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                   write_disposition=BigQueryDisposition.WRITE_APPEND,
                   retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR)).with_outputs(
                       BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS, BigQueryWriteFn.FAILED_ROWS,
                       main="written"))
        return out[BigQueryWriteFn.FAILED_ROWS_WITH_ERRORS]


class WriteSnapshots(beam.PTransform):
    """Each element (a list of row dicts) replaces ``table`` in the TARGET warehouse.

    From an unbounded PCollection (the live job) at most one snapshot per
    ``refresh_seconds`` is written — the newest (:class:`EveryRefresh`) — so a table
    gets 86,400 / refresh load jobs a day (96 at the default 15 min) whatever the
    ranking refresh rate."""

    def __init__(self, target: str, table: str,
                 refresh_seconds: float = DEFAULT_WAREHOUSE_REFRESH):
        super().__init__()
        self.target, self.table, self.refresh_seconds = target, table, refresh_seconds

    def expand(self, snapshots):
        live = not snapshots.is_bounded
        if live:
            snapshots = snapshots | "EveryRefresh" >> EveryRefresh(self.refresh_seconds)
        return snapshots | "ReplaceTable" >> beam.ParDo(
            _WriteSnapshotFn(self.target, self.table, give_up=live))


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
