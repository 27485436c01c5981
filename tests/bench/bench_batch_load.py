"""The batch job's warehouse load step into BigQuery (bqemulator on loopback): peak
memory and time of loading staged sales_facts Parquet, the way the job loads it now
(load jobs into a staging table + one MERGE; no row in Python) next to the way it did
before (every row read into Arrow, turned into JSON dicts, one JSON load job). Real
size: 1.2 M sales_facts rows. Target: the load step under 500 MB."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from tests.bench.common import BENCH_DIR, run_timed

REAL_ROWS = 1_200_000
FILE_ROWS = 200_000

#: The load step in a child process: open the warehouse on the emulator, load.
LOAD_SCRIPT = r"""
import datetime as dt, sys
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
import google.cloud.bigquery.client as bq_client
bq_client._GENERIC_CONTENT_TYPE = "application/octet-stream"  # bqemulator quirk
from transforms.table_io import load_staged_table, match_files
from transforms.warehouse import BigQueryWarehouse
endpoint, project, dataset, pattern, how = sys.argv[1:6]
client = bigquery.Client(project=project, credentials=AnonymousCredentials(),
                         client_options=ClientOptions(api_endpoint=endpoint))
wh = BigQueryWarehouse(project, dataset, client=client)
try:
    if how == "after":
        n = load_staged_table(wh, "sales_facts", pattern, "window",
                              ("date", dt.date(2016, 1, 1), dt.date(2022, 12, 31)))
    else:  # before: read every row into Arrow, then Warehouse.write (JSON rows, a load job)
        import pyarrow as pa, pyarrow.parquet as pq
        from transforms.warehouse import arrow_schema
        schema = arrow_schema("sales_facts")
        data = pa.concat_tables([pq.read_table(f).cast(schema) for f in match_files(pattern)])
        n = wh.write("sales_facts", data, "append")
    print(n)
except Exception as exc:  # the peak memory up to the failure is still the measurement
    print("failed:", str(exc).splitlines()[0][-70:].replace(" ", "_"))
"""


def staged_sales_facts(rows: int) -> Path:
    """``rows`` synthetic sales_facts rows as Parquet files of FILE_ROWS (cached)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from transforms.warehouse import arrow_schema

    out = BENCH_DIR / "data" / f"staged-sales-facts-{rows}"
    if (out / "done").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    schema = arrow_schema("sales_facts")
    rng = np.random.default_rng(7)
    for part, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        cols = {}
        for f in schema:
            if pa.types.is_string(f.type):
                cols[f.name] = pa.array([f"{f.name}-{i % 997}" for i in range(start, start + n)])
            elif pa.types.is_integer(f.type):
                cols[f.name] = pa.array(rng.integers(0, 1_000_000, n))
            elif pa.types.is_floating(f.type):
                cols[f.name] = pa.array(rng.random(n) * 100)
            elif pa.types.is_date(f.type):
                cols[f.name] = pa.array(np.datetime64("2021-01-01") + rng.integers(0, 500, n)
                                        ).cast(pa.date32())
            else:  # timestamp
                cols[f.name] = pa.array(np.datetime64("2021-01-01T00:00:00", "us")
                                        + rng.integers(0, 10**13, n)).cast(f.type)
        pq.write_table(pa.table(cols, schema=schema), out / f"part-{part:05d}.parquet")
    (out / "done").write_text("ok")
    return out


def run(row_counts=(REAL_ROWS,), extra_args=(), ways=("after", "before")) -> list:
    """``row_counts``: sales_facts rows to load (default: the real size, 1.2 M; `make
    bench --sizes` are click-event counts and do not apply here)."""
    import uuid

    from tests.emulators import PROJECT, BigQueryEmulator

    rows_out = []
    with tempfile.TemporaryDirectory() as tmp:
        emu = BigQueryEmulator(Path(tmp)).start()
        try:
            for size in row_counts:
                staged = staged_sales_facts(size)
                for how in ways:
                    dataset = f"bench_{uuid.uuid4().hex[:8]}"
                    job = run_timed([sys.executable, "-c", LOAD_SCRIPT, emu.endpoint, PROJECT,
                                     dataset, str(staged / "part-*.parquet"), how])
                    last = job["stdout"].strip().splitlines()[-1]
                    rows_out.append({"bench": "batch_load", "way": how, "rows": size,
                                     "loaded": int(last) if last.isdigit() else last,
                                     "seconds": job["seconds"],
                                     "peak_rss_mb": job["peak_rss_mb"],
                                     "target_mb": 500})
        finally:
            emu.stop()
    return rows_out


if __name__ == "__main__":
    from tests.bench.run import print_table

    sizes = [int(s) for s in sys.argv[1].split(",")] if len(sys.argv) > 1 else [REAL_ROWS]
    ways = sys.argv[2].split(",") if len(sys.argv) > 2 else ("after", "before")
    print_table(run(sizes, ways=ways))
