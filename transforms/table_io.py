"""Reading warehouse tables into Arrow, and loading staged Parquet into the warehouse.

``transforms.warehouse`` answers ``query()`` with a list of dicts; the model trainers
read large tables (a million churn rows), so they take the Arrow fast path of the
backend when there is one and fall back to dicts otherwise.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import pyarrow as pa

from transforms.warehouse import arrow_schema, column_names

log = logging.getLogger(__name__)


def dialect(wh) -> str:
    """"bigquery" or "duckdb" (the SQL dialect of a warehouse object)."""
    target = str(getattr(wh, "target", ""))
    return "bigquery" if target.startswith("bq://") else "duckdb"


def query_arrow(wh, sql: str) -> pa.Table:
    """Run ``sql`` and return an Arrow table (fast paths for DuckDB and BigQuery)."""
    con = getattr(wh, "con", None)
    if con is not None:
        cur = con.execute(sql)
        fetch = getattr(cur, "to_arrow_table", None) or cur.fetch_arrow_table
        return fetch()
    client = getattr(wh, "client", None)
    if client is not None and hasattr(client, "query"):
        try:
            return client.query(sql).result().to_arrow(create_bqstorage_client=False)
        except Exception as exc:  # noqa: BLE001 - older clients, emulators
            log.debug("to_arrow failed (%s); falling back to rows", exc)
    rows = wh.query(sql)
    if not rows:
        return pa.table({})
    return pa.Table.from_pylist(rows)


def table_exists(wh, table: str) -> bool:
    try:
        wh.query(f"SELECT 1 FROM {wh.ref(table)} LIMIT 1")
        return True
    except Exception:  # noqa: BLE001 - "no such table" differs per backend
        return False


def read_table(wh, table: str, where: Optional[str] = None) -> pa.Table:
    """The whole table (or ``WHERE where``) as Arrow; an empty table if it is missing."""
    if not table_exists(wh, table):
        return arrow_schema(table).empty_table()
    sql = f"SELECT * FROM {wh.ref(table)}" + (f" WHERE {where}" if where else "")
    return query_arrow(wh, sql)


def match_files(pattern: str) -> List[str]:
    from apache_beam.io.filesystems import FileSystems

    try:
        return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)
    except Exception:  # noqa: BLE001 - no match raises on some filesystems
        return []


def load_parquet_glob(wh, table: str, pattern: str, mode: str = "upsert") -> int:
    """Write staged Parquet files matching ``pattern`` (local or gs://) into ``table``;
    returns the rows written.

    A DuckDB target reads local files itself; otherwise the files are read with pyarrow
    through Beam's FileSystems and written with ``Warehouse.write``."""
    files = match_files(pattern)
    if hasattr(wh, "load_parquet") and "://" not in pattern and files:
        return wh.load_parquet(table, pattern, mode)
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    schema = arrow_schema(table)
    parts = []
    for f in files:
        with FileSystems.open(f) as fh:
            part = pq.read_table(pa.BufferReader(fh.read()))
        parts.append(part.select(schema.names).cast(schema))
    data = pa.concat_tables(parts) if parts else schema.empty_table()
    return wh.write(table, data, mode)


def load_staged_table(wh, table: str, pattern: str, mode: str, window=None) -> int:
    """Load staged Parquet files (local or gs://) into ``table``: ``mode`` append |
    upsert | replace, or ``window`` with ``window=(column, lo, hi)`` (the rows of that
    date range are replaced). Atomic on both warehouses; BigQuery loads the files with
    load jobs (no row passes through Python), DuckDB reads them itself."""
    if hasattr(wh, "load_files"):
        return wh.load_files(table, match_files(pattern), mode, window)
    if mode == "window":
        column, lo, hi = window
        return replace_window(wh, table, pattern, column, lo, hi)
    return load_parquet_glob(wh, table, pattern, mode)


def _sql_date(d) -> str:
    return f"DATE '{d.isoformat()}'"


def replace_window(wh, table: str, pattern: str, column: str, lo, hi) -> int:
    """Replace the rows of ``table`` whose ``column`` (a DATE) lies in [lo, hi] by the
    staged Parquet rows (which must all lie in that window); returns rows written.

    One DuckDB transaction (readers see the old or the new window, never a mix); a
    BigQuery warehouse uses ``load_files`` (see :func:`load_staged_table`)."""
    files = match_files(pattern)
    where = f'"{column}" BETWEEN {_sql_date(lo)} AND {_sql_date(hi)}'
    con = getattr(wh, "con", None)
    if con is not None and hasattr(wh, "ensure") and "://" not in pattern:
        names = ", ".join(f'"{c}"' for c in column_names(table))
        quoted = pattern.replace("'", "''")
        con.execute("BEGIN TRANSACTION")
        try:
            wh.ensure(table)
            con.execute(f'DELETE FROM "{table}" WHERE {where}')
            n = 0
            if files:
                n = con.execute(f"SELECT count(*) FROM read_parquet('{quoted}')").fetchone()[0]
                con.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM '
                            f"read_parquet('{quoted}', union_by_name=true)")
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
        return n
    if hasattr(wh, "load_files"):
        return wh.load_files(table, files, "window", (column, lo, hi))
    raise ValueError(f"cannot replace a window of {table} in {getattr(wh, 'target', wh)}: "
                     "needs a local DuckDB file or BigQuery")
