"""The warehouse behind a TARGET string: an embedded DuckDB file or a BigQuery dataset.

Both sides use the same table names and the JSON schemas in ``transforms/schemas/`` (the
BigQuery schema format, plus ``key`` — the columns that identify a row, so that a rerun
replaces rows instead of duplicating them).
"""
from __future__ import annotations

import abc
import datetime as dt
import json
import logging
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, List, Mapping, Optional, Sequence, Union

import pyarrow as pa

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).with_name("schemas")
TABLES = tuple(sorted(p.stem for p in SCHEMA_DIR.glob("*.json")))

_ARROW_TYPES = {
    "STRING": pa.string(), "INTEGER": pa.int64(), "FLOAT": pa.float64(),
    "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us", tz="UTC"), "DATE": pa.date32(),
}
_ORD = "_shopstream_ord"  # write order of staged rows (the last row for a key wins)
_DUCK_TYPES = {
    "STRING": "VARCHAR", "INTEGER": "BIGINT", "FLOAT": "DOUBLE", "BOOLEAN": "BOOLEAN",
    "TIMESTAMP": "TIMESTAMPTZ", "DATE": "DATE",
}

_BQ_DDL_TYPES = {
    "STRING": "STRING", "INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL",
    "TIMESTAMP": "TIMESTAMP", "DATE": "DATE",
}


@lru_cache(maxsize=None)
def table_schema(table: str) -> dict:
    """The JSON schema of a SPEC §4 table: ``fields``, ``key`` and partitioning hints."""
    path = SCHEMA_DIR / f"{table}.json"
    if not path.exists():
        raise KeyError(f"unknown warehouse table {table!r}; known: {', '.join(TABLES)}")
    return json.loads(path.read_text())


def column_names(table: str) -> List[str]:
    return [f["name"] for f in table_schema(table)["fields"]]


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(f["name"], _ARROW_TYPES[f["type"]], f["mode"] != "REQUIRED")
                      for f in table_schema(table)["fields"]])


def missing_fields(table: str, existing: Iterable[str]) -> List[dict]:
    """The schema's fields an existing table lacks (a warehouse made by an older
    shopstream): added as NULLABLE columns, their old rows NULL. A missing REQUIRED
    field cannot be filled for old rows, so it is refused with what to do."""
    have = set(existing)
    missing = [f for f in table_schema(table)["fields"] if f["name"] not in have]
    required = [f["name"] for f in missing if f["mode"] == "REQUIRED"]
    if required:
        raise ValueError(
            f"warehouse table {table!r} lacks required column(s) {', '.join(required)}: "
            "it was made by an incompatible version; rename or drop it and run again")
    return [dict(f, mode="NULLABLE") for f in missing]


def _coerce(value: Any, typ: str) -> Any:
    if value is None:
        return None
    if typ == "TIMESTAMP":
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        elif isinstance(value, (int, float)):  # microseconds since the epoch
            value = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return value
    if typ == "DATE" and isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    if typ == "DATE" and isinstance(value, dt.datetime):
        return value.date()
    return value


def to_arrow(table: str, rows: Union[pa.Table, Iterable[Mapping[str, Any]]]) -> pa.Table:
    """Rows (dicts, extra keys ignored) or an Arrow table → an Arrow table of the schema."""
    schema = arrow_schema(table)
    if isinstance(rows, pa.Table):
        return rows.select(schema.names).cast(schema)
    fields = table_schema(table)["fields"]
    cols = {f["name"]: [] for f in fields}
    for row in rows:
        for f in fields:
            cols[f["name"]].append(_coerce(row.get(f["name"]), f["type"]))
    return pa.table(cols, schema=schema)


def dedupe_last(data: pa.Table, key: Sequence[str]) -> pa.Table:
    """Keep the last row for each key (NULL keys compare equal), in first-seen order."""
    if not key or data.num_rows < 2:
        return data
    idx = pa.array(range(data.num_rows), pa.int64())
    last = (data.select(list(key)).append_column(_ORD, idx)
            .group_by(list(key), use_threads=False).aggregate([(_ORD, "max")]))
    keep = last[f"{_ORD}_max"].to_pylist()
    return data if len(keep) == data.num_rows else data.take(sorted(keep))


class Warehouse(abc.ABC):
    """Write and read SPEC §4 tables. Modes: ``replace`` (the whole table), ``upsert``
    (rows replace rows with the same key), ``append``."""

    target: str

    @abc.abstractmethod
    def write(self, table: str, rows, mode: str = "upsert") -> int:
        """Write rows; returns how many were written."""

    @abc.abstractmethod
    def query(self, sql: str) -> List[dict]:
        """Run SQL and return the rows as dicts."""

    def ref(self, table: str) -> str:
        """The table's name as written in SQL for this warehouse."""
        return table

    def close(self) -> None:  # noqa: B027 - a backend without resources needs no close
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DuckDBWarehouse(Warehouse):
    def __init__(self, path: str):
        import duckdb

        self.target = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.con = duckdb.connect(path)
        self.con.execute("SET TimeZone='UTC'")

    def ensure(self, table: str) -> None:
        # No PRIMARY KEY: DuckDB makes key columns NOT NULL, but some keys are nullable
        # (daily_sales' dimensions); upsert matches keys with IS NOT DISTINCT FROM instead.
        schema = table_schema(table)
        cols = ", ".join(
            f'"{f["name"]}" {_DUCK_TYPES[f["type"]]}'
            + (" NOT NULL" if f["mode"] == "REQUIRED" else "") for f in schema["fields"])
        self.con.execute(f'CREATE TABLE IF NOT EXISTS "{table}" ({cols})')
        have = {r[0] for r in self.con.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = current_schema()", [table]).fetchall()}
        for f in missing_fields(table, have):
            self.con.execute(
                f'ALTER TABLE "{table}" ADD COLUMN "{f["name"]}" {_DUCK_TYPES[f["type"]]}')

    def write(self, table: str, rows, mode: str = "upsert") -> int:
        data = to_arrow(table, rows)
        data = data.append_column(_ORD, pa.array(range(data.num_rows), pa.int64()))
        return self._write_relation(table, data, "data", mode, data.num_rows, [_ORD])

    def load_parquet(self, table: str, pattern: str, mode: str = "upsert") -> int:
        """Load Parquet files written by a pipeline (fast path for large tables)."""
        names = ", ".join(f'"{c}"' for c in column_names(table))
        quoted = pattern.replace("'", "''")
        rel = (f"(SELECT {names}, filename AS {_ORD}_f, file_row_number AS {_ORD} FROM "
               f"read_parquet('{quoted}', union_by_name=true, filename=true, file_row_number=true))")
        n = self.con.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]
        return self._write_relation(table, None, rel, mode, n, [f"{_ORD}_f", _ORD])

    def _write_relation(self, table: str, data, rel: str, mode: str, n: int,
                        order: Sequence[str]) -> int:
        """Write ``rel`` in one transaction. Upsert: rows replace rows whose key is not
        distinct (NULL matches NULL); within one write the last row for a key wins."""
        if mode not in ("replace", "upsert", "append"):
            raise ValueError(f"unknown write mode {mode!r}")
        key = table_schema(table).get("key") or []
        names = ", ".join(f'"{c}"' for c in column_names(table))
        self.con.execute("BEGIN TRANSACTION")
        try:
            if data is not None:
                self.con.register("data", data)
            if mode == "replace":
                self.con.execute(f'DROP TABLE IF EXISTS "{table}"')
            self.ensure(table)
            if mode == "upsert" and key:
                part = ", ".join(f'"{k}"' for k in key)
                last = ", ".join(f'"{c}" DESC' for c in order)
                stage = f"_upsert_{uuid.uuid4().hex[:12]}"
                self.con.execute(
                    f'CREATE TEMP TABLE "{stage}" AS SELECT {names} FROM {rel} '
                    f"QUALIFY row_number() OVER (PARTITION BY {part} ORDER BY {last}) = 1")
                match = " AND ".join(f'T."{k}" IS NOT DISTINCT FROM S."{k}"' for k in key)
                self.con.execute(f'DELETE FROM "{table}" T WHERE EXISTS '
                                 f'(SELECT 1 FROM "{stage}" S WHERE {match})')
                self.con.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM "{stage}"')
                self.con.execute(f'DROP TABLE "{stage}"')
            else:
                self.con.execute(f'INSERT INTO "{table}" ({names}) SELECT {names} FROM {rel}')
            self.con.execute("COMMIT")
        except Exception:
            self.con.execute("ROLLBACK")
            raise
        finally:
            if data is not None:
                self.con.unregister("data")
        return n

    def query(self, sql: str) -> List[dict]:
        cur = self.con.execute(sql)
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]

    def close(self) -> None:
        self.con.close()


class BigQueryWarehouse(Warehouse):
    """``bq://PROJECT.DATASET``: load jobs for writes (idempotent via MERGE on the key)."""

    def __init__(self, project: str, dataset: str, client=None):
        from google.cloud import bigquery

        self.bigquery = bigquery
        self.project, self.dataset = project, dataset
        self.target = f"bq://{project}.{dataset}"
        self.client = client or bigquery.Client(project=project)
        self.client.create_dataset(f"{project}.{dataset}", exists_ok=True)

    def ref(self, table: str) -> str:
        return f"`{self.project}.{self.dataset}.{table}`"

    def _table(self, table: str, name: Optional[str] = None):
        bq = self.bigquery
        schema = table_schema(table)
        t = bq.Table(f"{self.project}.{self.dataset}.{name or table}",
                     schema=[bq.SchemaField.from_api_repr(f) for f in schema["fields"]])
        part = schema.get("timePartitioning")
        if part and name is None:
            t.time_partitioning = bq.TimePartitioning(type_=part["type"], field=part["field"])
        if schema.get("clustering") and name is None:
            t.clustering_fields = schema["clustering"][:4]
        return t

    def ensure(self, table: str) -> None:
        current = self.client.create_table(self._table(table), exists_ok=True)
        added = missing_fields(table, {f.name for f in current.schema})
        for f in added:  # one column a statement (the emulator takes no more); a rerun
            # after a partial failure adds the rest, IF NOT EXISTS makes it idempotent
            self.client.query(f"ALTER TABLE {self.ref(table)} ADD COLUMN IF NOT EXISTS "
                              f"`{f['name']}` {_BQ_DDL_TYPES[f['type']]}").result()

    def write(self, table: str, rows, mode: str = "upsert") -> int:
        bq = self.bigquery
        data = to_arrow(table, rows)
        key = table_schema(table).get("key") or []
        if mode == "upsert" and key:
            data = dedupe_last(data, key)  # MERGE fails if a target row matches 2 source rows
            self.ensure(table)
            staging = f"_staging_{table}_{uuid.uuid4().hex[:8]}"
            self._load(self._table(table, staging), data, bq.WriteDisposition.WRITE_TRUNCATE)
            try:
                names = column_names(table)
                on = " AND ".join(f"T.`{k}` IS NOT DISTINCT FROM S.`{k}`" for k in key)
                sets = ", ".join(f"`{c}` = S.`{c}`" for c in names if c not in key)
                cols = ", ".join(f"`{c}`" for c in names)
                self.client.query(
                    f"MERGE {self.ref(table)} T USING {self.ref(staging)} S ON {on} "
                    f"WHEN MATCHED THEN UPDATE SET {sets or ', '.join(f'`{k}` = S.`{k}`' for k in key)} "
                    f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({cols})").result()
            finally:
                self.client.delete_table(f"{self.project}.{self.dataset}.{staging}", not_found_ok=True)
        else:
            disposition = (bq.WriteDisposition.WRITE_TRUNCATE if mode == "replace"
                           else bq.WriteDisposition.WRITE_APPEND)
            self.ensure(table)
            self._load(self._table(table), data, disposition)
        return data.num_rows

    def _load(self, table_obj, data: pa.Table, disposition) -> None:
        bq = self.bigquery
        rows = [{k: _jsonable(v) for k, v in r.items()} for r in data.to_pylist()]
        cfg = bq.LoadJobConfig(schema=table_obj.schema, write_disposition=disposition,
                               source_format=bq.SourceFormat.NEWLINE_DELIMITED_JSON)
        self.client.load_table_from_json(rows, table_obj, job_config=cfg).result()

    def query(self, sql: str) -> List[dict]:
        return [dict(r.items()) for r in self.client.query(sql).result()]

    def load_files(self, table: str, files: Sequence[str], mode: str = "upsert",
                   window: Optional[tuple] = None) -> int:
        """Load Parquet files (gs:// URIs or local paths) into ``table`` without reading
        a row in Python: load jobs into a staging table, then ONE atomic statement —
        ``append``: INSERT; ``upsert``: MERGE on the key (the last staged row of a key
        wins arbitrarily); ``replace``: the whole table; ``window`` with
        ``window=(column, lo, hi)``: the rows whose DATE ``column`` lies in [lo, hi]
        are replaced (readers see the old rows or the new ones, never a mix)."""
        bq = self.bigquery
        if mode not in ("append", "upsert", "replace", "window"):
            raise ValueError(f"unknown write mode {mode!r}")
        self.ensure(table)
        stage = self._table(table, f"_staging_{table}_{uuid.uuid4().hex[:8]}")
        self.client.create_table(stage, exists_ok=True)
        stage_id = f"{self.project}.{self.dataset}.{stage.table_id}"
        cfg = bq.LoadJobConfig(schema=stage.schema, source_format=bq.SourceFormat.PARQUET,
                               write_disposition=bq.WriteDisposition.WRITE_APPEND)
        try:
            uris = [f for f in files if f.startswith("gs://")]
            if uris:
                self.client.load_table_from_uri(uris, stage_id, job_config=cfg).result()
            for path in (f for f in files if not f.startswith("gs://")):
                with open(path, "rb") as fh:
                    self.client.load_table_from_file(fh, stage_id, job_config=cfg).result()
            n = int(self.query(f"SELECT COUNT(*) AS n FROM {self.ref(stage.table_id)}")[0]["n"])
            self.client.query(self._apply_staged_sql(table, stage.table_id, mode, window)).result()
        finally:
            self.client.delete_table(stage_id, not_found_ok=True)
        return n

    def _apply_staged_sql(self, table: str, staging: str, mode: str,
                          window: Optional[tuple]) -> str:
        """The one DML statement that applies a staging table to ``table``."""
        names = column_names(table)
        cols = ", ".join(f"`{c}`" for c in names)
        target, source = self.ref(table), self.ref(staging)
        if mode == "append":
            return f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {source}"
        key = table_schema(table).get("key") or []
        if mode == "upsert" and key:
            part = ", ".join(f"`{k}`" for k in key)
            dedup = (f"(SELECT {cols} FROM {source} "
                     f"WHERE TRUE QUALIFY ROW_NUMBER() OVER (PARTITION BY {part}) = 1)")
            on = " AND ".join(f"T.`{k}` IS NOT DISTINCT FROM S.`{k}`" for k in key)
            sets = ", ".join(f"`{c}` = S.`{c}`" for c in names if c not in key) or \
                ", ".join(f"`{k}` = S.`{k}`" for k in key)
            return (f"MERGE {target} T USING {dedup} S ON {on} "
                    f"WHEN MATCHED THEN UPDATE SET {sets} "
                    f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({cols})")
        if mode == "upsert":
            return f"INSERT INTO {target} ({cols}) SELECT {cols} FROM {source}"
        # replace / window: delete the old rows and insert the new ones in ONE statement
        old = ""
        if mode == "window":
            column, lo, hi = window
            old = (f" AND T.`{column}` BETWEEN DATE '{lo.isoformat()}' "
                   f"AND DATE '{hi.isoformat()}'")
        return (f"MERGE {target} T USING {source} S ON FALSE "
                f"WHEN NOT MATCHED BY SOURCE{old} THEN DELETE "
                f"WHEN NOT MATCHED THEN INSERT ({cols}) VALUES ({cols})")


def _jsonable(v: Any) -> Any:
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    return v


def parse_target(target: str) -> tuple:
    """``bq://PROJECT.DATASET`` → ("bigquery", project, dataset); else ("duckdb", path)."""
    if target.startswith("bq://"):
        rest = target[len("bq://"):]
        project, _, dataset = rest.partition(".")
        if not project or not dataset or "." in dataset:
            raise ValueError(f"BigQuery target must look like bq://PROJECT.DATASET, got {target!r}")
        return ("bigquery", project, dataset)
    if not target:
        raise ValueError("warehouse target is empty")
    return ("duckdb", target)


def open_warehouse(target: str) -> Warehouse:
    kind, *parts = parse_target(target)
    if kind == "bigquery":
        return BigQueryWarehouse(*parts)
    return DuckDBWarehouse(parts[0])


def dead_letter_rows(dead: Sequence) -> List[dict]:
    """DeadLetter records → ``dead_letter`` table rows."""
    return [{"source": d.source, "raw": d.raw, "reason": d.reason, "seen_at": d.seen_at}
            for d in dead]
