"""PySpark local (the engine the original Fashion Campus jobs ran on) doing what the DuckDB
oracle of the batch bench does (tests/reference_sql.py: SPEC §2 visits, dwell, inference,
engagement over click_stream.csv + transactions.csv, the enriched events kept as a table),
in Spark SQL on ``local[2]``. Optional: ``make bench-deps`` installs it
(requirements-bench.txt); without pyspark the batch bench leaves the row out.

``python -m tests.bench.bench_spark CLICKS ORDERS OUT_DIR`` is the timed child: it writes
``OUT_DIR/events_enriched`` (Parquet) and ``OUT_DIR/engagement.json``, which the bench
compares with DuckDB's result on the same files before it prints a time."""
from __future__ import annotations

import importlib.util
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

from tests.bench.common import run_timed
from transforms.session_rules import DEFAULT_LOOKBACK, DEFAULT_VISIT_GAP

LOG4J2 = Path(__file__).with_name("spark-log4j2.properties")

#: tests/reference_sql.py ENRICH_SQL in Spark SQL (no QUALIFY: a row_number subquery;
#: TRY_CAST where DuckDB's TRY_CAST / '' → NULL; unix_micros for epoch_us).
ENRICH_SQL = r"""
WITH parsed AS (
  SELECT session_id, event_id, event_name,
         TRY_CAST(event_time AS TIMESTAMP) AS event_time, traffic_source,
         TRY_CAST(NULLIF(regexp_extract(event_metadata, "'product_id': (\\d+)", 1), '') AS BIGINT)
           AS own_pid
  FROM clicks
  WHERE event_name IN ('HOMEPAGE','CLICK','SCROLL','ITEM_DETAIL','SEARCH','ADD_TO_CART',
                       'PROMO_PAGE','ADD_PROMO','BOOKING')
    AND coalesce(session_id, '') <> '' AND coalesce(event_id, '') <> ''
    AND TRY_CAST(event_time AS TIMESTAMP) IS NOT NULL
),
dedup AS (
  SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY event_time) AS rn
                 FROM parsed) WHERE rn = 1
),
gaps AS (
  SELECT *, CASE WHEN unix_micros(event_time) - lag(unix_micros(event_time)) OVER w > {gap_us}
                 OR lag(event_time) OVER w IS NULL THEN 1 ELSE 0 END AS new_visit
  FROM dedup WINDOW w AS (PARTITION BY session_id ORDER BY event_time, event_id)
),
visits AS (
  SELECT *, sum(new_visit) OVER (PARTITION BY session_id ORDER BY event_time, event_id) AS visit_no
  FROM gaps
),
leads AS (
  SELECT *,
    lead(event_name, 1) OVER v AS n1, lead(own_pid, 1) OVER v AS p1,
    lead(event_name, 2) OVER v AS n2, lead(own_pid, 2) OVER v AS p2,
    lead(event_name, 3) OVER v AS n3, lead(own_pid, 3) OVER v AS p3,
    (unix_micros(lead(event_time) OVER v) - unix_micros(event_time)) / 1e6 AS dwell_seconds
  FROM visits WINDOW v AS (PARTITION BY session_id, visit_no ORDER BY event_time, event_id)
)
SELECT event_id, session_id, visit_no, event_name, event_time, own_pid,
  CASE WHEN own_pid IS NOT NULL OR event_name NOT IN ('CLICK','ITEM_DETAIL','HOMEPAGE') THEN NULL
       WHEN n1 IN ('ADD_TO_CART','BOOKING') THEN (CASE WHEN n1 = 'ADD_TO_CART' THEN p1 END)
       WHEN {lookback} >= 2 AND n2 IN ('ADD_TO_CART','BOOKING') THEN (CASE WHEN n2 = 'ADD_TO_CART' THEN p2 END)
       WHEN {lookback} >= 3 AND n3 IN ('ADD_TO_CART','BOOKING') THEN (CASE WHEN n3 = 'ADD_TO_CART' THEN p3 END)
  END AS inferred_pid,
  dwell_seconds
FROM leads
"""

#: tests/reference_sql.py ENGAGEMENT_SQL in Spark SQL.
ENGAGEMENT_SQL = r"""
WITH e AS (SELECT *, coalesce(own_pid, inferred_pid) AS product_id FROM enriched),
clicks AS (
  SELECT product_id,
    count(*) FILTER (WHERE event_name = 'CLICK') AS click_count,
    count(*) FILTER (WHERE event_name = 'ITEM_DETAIL') AS item_detail_count,
    count(*) FILTER (WHERE event_name = 'ADD_TO_CART') AS add_to_cart_count,
    count(*) FILTER (WHERE event_name = 'HOMEPAGE') AS homepage_count,
    coalesce(sum(dwell_seconds), 0) AS total_dwell_seconds
  FROM e WHERE product_id IS NOT NULL GROUP BY product_id
),
first_orders AS (
  SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY booking_id ORDER BY created_at) AS rn
                 FROM orders) WHERE rn = 1
),
lines AS (
  SELECT TRY_CAST(regexp_extract(item, "'product_id': (\\d+)", 1) AS BIGINT) AS product_id,
         TRY_CAST(regexp_extract(item, "'quantity': (\\d+)", 1) AS BIGINT) AS quantity
  FROM (SELECT explode(regexp_extract_all(product_metadata, "\\{[^}]*\\}", 0)) AS item
        FROM first_orders WHERE payment_status = 'Success')
),
buys AS (SELECT product_id, sum(quantity) AS purchases FROM lines GROUP BY product_id)
SELECT coalesce(c.product_id, b.product_id) AS product_id,
  coalesce(click_count, 0) AS click_count, coalesce(item_detail_count, 0) AS item_detail_count,
  coalesce(add_to_cart_count, 0) AS add_to_cart_count, coalesce(homepage_count, 0) AS homepage_count,
  coalesce(total_dwell_seconds, 0) AS total_dwell_seconds, coalesce(purchases, 0) AS purchases
FROM clicks c FULL OUTER JOIN buys b ON c.product_id = b.product_id
"""


def available() -> bool:
    """pyspark installed (``make bench-deps``) and a ``java`` to run it."""
    from shutil import which

    return importlib.util.find_spec("pyspark") is not None and bool(
        os.environ.get("JAVA_HOME") or which("java"))


def session(app: str = "shopstream-bench"):
    """A quiet ``local[2]`` SparkSession in UTC: log4j at ERROR, no UI or progress bar,
    2 GB driver, 4 shuffle partitions (2 per core; the default 200 is for clusters)."""
    from pyspark.sql import SparkSession

    return (SparkSession.builder.master("local[2]").appName(app)
            .config("spark.driver.memory", "2g")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.sql.session.timeZone", "UTC")
            .config("spark.driver.extraJavaOptions",
                    f"-Dlog4j2.configurationFile=file:{LOG4J2.resolve()}")
            .getOrCreate())


def _read_csv(spark, path: str):
    # every column a string, like DuckDB's all_varchar; malformed lines dropped (ignore_errors)
    return spark.read.csv(path, header=True, quote='"', escape='"', mode="DROPMALFORMED")


def enriched(spark, clicks_csv: str, visit_gap: float = DEFAULT_VISIT_GAP,
             lookback: int = DEFAULT_LOOKBACK):
    """The enriched events (ENRICH_SQL) as a DataFrame, registered as view ``enriched``."""
    _read_csv(spark, clicks_csv).createOrReplaceTempView("clicks")
    df = spark.sql(ENRICH_SQL.format(gap_us=int(visit_gap * 1e6), lookback=lookback))
    df.createOrReplaceTempView("enriched")
    return df


def engagement(spark, orders_csv: str) -> dict:
    """product_id → (click, item_detail, add_to_cart, homepage, dwell, purchases) over the
    ``enriched`` view, the shape of ``reference_engagement``."""
    _read_csv(spark, orders_csv).createOrReplaceTempView("orders")
    rows = spark.sql(ENGAGEMENT_SQL).collect()
    return {r[0]: tuple(r[1:]) for r in rows}


def compute(spark, clicks_csv: str, orders_csv: str, out_dir: Path | None = None,
            visit_gap: float = DEFAULT_VISIT_GAP, lookback: int = DEFAULT_LOOKBACK) -> dict:
    """What the DuckDB oracle script does: enrich, engagement, and (with ``out_dir``) the
    enriched events kept as a table (Parquet under ``out_dir/events_enriched``)."""
    df = enriched(spark, clicks_csv, visit_gap, lookback).cache()
    if out_dir is not None:
        df.write.mode("overwrite").parquet(str(Path(out_dir) / "events_enriched"))
    result = engagement(spark, orders_csv)
    df.unpersist()
    return result


def main(argv=None) -> int:
    clicks, orders, out_dir = argv or sys.argv[1:]
    spark = session()
    result = compute(spark, clicks, orders, Path(out_dir))
    (Path(out_dir) / "engagement.json").write_text(
        json.dumps([[pid, *vals] for pid, vals in result.items()]))
    gateway = spark.sparkContext._gateway
    spark.stop()
    # Reap the JVM before exiting so its CPU time counts in this process's rusage (wait4 in
    # run_timed only sees descendants that were waited for); it exits on stdin EOF.
    proc = getattr(gateway, "proc", None)
    if proc is not None:
        proc.stdin.close()
        proc.wait(timeout=60)
    print(len(result))
    return 0


@lru_cache(maxsize=4)
def _oracle(clicks_csv: str, orders_csv: str) -> dict:
    from tests.reference_sql import reference_engagement

    return reference_engagement(clicks_csv, orders_csv)


def check_equal(got: dict, want: dict) -> None:
    """Per-product engagement rows equal: counts and purchases exactly, dwell to float
    precision (sums in another order). Raises AssertionError naming the first difference."""
    missing, extra = set(want) - set(got), set(got) - set(want)
    if missing or extra:
        raise AssertionError(f"pyspark products differ from DuckDB: {len(missing)} missing "
                             f"(e.g. {sorted(missing, key=str)[:3]}), {len(extra)} extra "
                             f"(e.g. {sorted(extra, key=str)[:3]})")
    for pid, w in want.items():
        g = tuple(got[pid])
        if g[:4] != tuple(w[:4]) or g[5] != w[5] or abs(g[4] - w[4]) > 1e-6 + 1e-9 * abs(w[4]):
            raise AssertionError(f"product {pid}: pyspark {g} != DuckDB {tuple(w)}")


def timed_run(data: Path, tmp: Path) -> dict | None:
    """Run the Spark job as a timed child on ``data``'s files and check its engagement
    equals DuckDB's on the same files; run_timed's figures, or None without pyspark."""
    if not available():
        print("[skip] pyspark_local: pyspark or java missing (make bench-deps)", file=sys.stderr)
        return None
    clicks, orders = str(data / "click_stream.csv"), str(data / "transactions.csv")
    out = Path(tmp) / "spark"
    out.mkdir(parents=True, exist_ok=True)
    r = run_timed([sys.executable, "-m", "tests.bench.bench_spark", clicks, orders, str(out)])
    rows = json.loads((out / "engagement.json").read_text())
    check_equal({row[0]: tuple(row[1:]) for row in rows}, _oracle(clicks, orders))
    return r


if __name__ == "__main__":
    sys.exit(main())
