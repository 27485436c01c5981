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

    def __init__(self, target: str, table: str, streaming: bool = False):
        super().__init__()
        self.target, self.table, self.streaming = target, table, streaming

    def expand(self, rows):
        kind, *parts = parse_target(self.target)
        mode = "upsert" if table_schema(self.table).get("key") else "append"
        if kind == "duckdb":
            rows | "WriteDuckDB" >> beam.ParDo(_WriteRowsFn(self.target, self.table, mode))
            return rows.pipeline | "NoFailedRows" >> beam.Create([])
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
