"""SPEC §2 in DuckDB SQL: an independent oracle for the pipeline's results, and the
practical speed limit the replay benchmark compares against."""
from __future__ import annotations

import duckdb

ENRICH_SQL = """
WITH raw AS (
  SELECT * FROM read_csv('{clicks}', header=true, all_varchar=true, quote='"', escape='"', ignore_errors=true)
),
parsed AS (
  SELECT session_id, event_id, event_name,
         CAST(event_time AS TIMESTAMPTZ) AS event_time, traffic_source,
         TRY_CAST(regexp_extract(event_metadata, '''product_id'': (\\d+)', 1) AS BIGINT) AS own_pid
  FROM raw
  WHERE event_name IN ('HOMEPAGE','CLICK','SCROLL','ITEM_DETAIL','SEARCH','ADD_TO_CART',
                       'PROMO_PAGE','ADD_PROMO','BOOKING')
    AND coalesce(session_id, '') <> '' AND coalesce(event_id, '') <> ''
    AND TRY_CAST(event_time AS TIMESTAMPTZ) IS NOT NULL
),
dedup AS (
  SELECT * FROM parsed QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY event_time) = 1
),
gaps AS (
  SELECT *, CASE WHEN epoch_us(event_time) - lag(epoch_us(event_time)) OVER w > {gap_us}
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
    (epoch_us(lead(event_time) OVER v) - epoch_us(event_time)) / 1e6 AS dwell_seconds
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

ENGAGEMENT_SQL = """
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
lines AS (
  SELECT CAST(regexp_extract(item, '''product_id'': (\\d+)', 1) AS BIGINT) AS product_id,
         CAST(regexp_extract(item, '''quantity'': (\\d+)', 1) AS BIGINT) AS quantity
  FROM (SELECT unnest(regexp_extract_all(product_metadata, '\\{{[^}}]*\\}}')) AS item
        FROM (SELECT * FROM read_csv('{orders}', header=true, all_varchar=true, quote='"', escape='"', ignore_errors=true)
              QUALIFY row_number() OVER (PARTITION BY booking_id ORDER BY created_at) = 1)
        WHERE payment_status = 'Success')
),
buys AS (SELECT product_id, sum(quantity) AS purchases FROM lines GROUP BY product_id)
SELECT coalesce(c.product_id, b.product_id) AS product_id,
  coalesce(click_count, 0) AS click_count, coalesce(item_detail_count, 0) AS item_detail_count,
  coalesce(add_to_cart_count, 0) AS add_to_cart_count, coalesce(homepage_count, 0) AS homepage_count,
  coalesce(total_dwell_seconds, 0) AS total_dwell_seconds, coalesce(purchases, 0) AS purchases
FROM clicks c FULL OUTER JOIN buys b ON c.product_id = b.product_id
"""


HORIZON_SQL = """
WITH e AS (SELECT *, coalesce(own_pid, inferred_pid) AS product_id FROM enriched),
lines AS (
  SELECT CAST(regexp_extract(item, '''product_id'': (\\d+)', 1) AS BIGINT) AS product_id,
         CAST(regexp_extract(item, '''quantity'': (\\d+)', 1) AS BIGINT) AS quantity, t
  FROM (SELECT unnest(regexp_extract_all(product_metadata, '\\{{[^}}]*\\}}')) AS item,
               epoch_us(CAST(created_at AS TIMESTAMPTZ)) AS t
        FROM (SELECT * FROM read_csv('{orders}', header=true, all_varchar=true, quote='"', escape='"', ignore_errors=true)
              QUALIFY row_number() OVER (PARTITION BY booking_id ORDER BY created_at) = 1)
        WHERE payment_status = 'Success')
),
contrib AS (
  SELECT product_id, epoch_us(event_time) AS t, event_name, dwell_seconds, 0 AS quantity
  FROM e WHERE product_id IS NOT NULL
  UNION ALL SELECT product_id, t, NULL, NULL, quantity FROM lines
),
horizon_end AS (SELECT (max(t) // {slice_us} + 1) * {slice_us} AS end_us FROM contrib),
w AS (SELECT c.* FROM contrib c, horizon_end h
      WHERE c.t >= h.end_us - {horizon_us} AND c.t < h.end_us)
SELECT product_id,
  count(*) FILTER (WHERE event_name = 'CLICK') AS click_count,
  count(*) FILTER (WHERE event_name = 'ITEM_DETAIL') AS item_detail_count,
  count(*) FILTER (WHERE event_name = 'ADD_TO_CART') AS add_to_cart_count,
  count(*) FILTER (WHERE event_name = 'HOMEPAGE') AS homepage_count,
  coalesce(sum(dwell_seconds), 0) AS total_dwell_seconds,
  sum(quantity) AS purchases
FROM w GROUP BY product_id
HAVING count(*) FILTER (WHERE event_name IN ('CLICK', 'ITEM_DETAIL', 'ADD_TO_CART', 'HOMEPAGE')) > 0
    OR coalesce(sum(dwell_seconds), 0) > 0 OR sum(quantity) > 0
"""


def reference_horizon_engagement(clicks_csv: str, orders_csv: str, horizon_seconds: int,
                                 slice_seconds: int = 60, visit_gap: float = 1800,
                                 lookback: int = 3) -> dict:
    """The ``1h`` / ``24h`` engagement (SPEC §2 "Live rankings"): the contributions in the
    ``horizon_seconds`` up to the end of the newest slice holding any contribution
    (product events and successful order lines). product_id → the six features."""
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("CREATE OR REPLACE TEMP TABLE enriched AS " + ENRICH_SQL.format(
        clicks=clicks_csv, gap_us=int(visit_gap * 1e6), lookback=lookback))
    rows = con.execute(HORIZON_SQL.format(orders=orders_csv, slice_us=int(slice_seconds * 1e6),
                                          horizon_us=int(horizon_seconds * 1e6))).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def reference_engagement(clicks_csv: str, orders_csv: str, visit_gap: float = 1800,
                         lookback: int = 3, con=None) -> dict:
    """product_id → (click, item_detail, add_to_cart, homepage, dwell, purchases)."""
    con = con or duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("CREATE OR REPLACE TEMP TABLE enriched AS " + ENRICH_SQL.format(
        clicks=clicks_csv, gap_us=int(visit_gap * 1e6), lookback=lookback))
    rows = con.execute(ENGAGEMENT_SQL.format(orders=orders_csv)).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def reference_enriched(clicks_csv: str, visit_gap: float = 1800, lookback: int = 3, con=None):
    """event_id → (visit_no, product_id, inferred, dwell_seconds)."""
    con = con or duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    rows = con.execute(ENRICH_SQL.format(clicks=clicks_csv, gap_us=int(visit_gap * 1e6),
                                         lookback=lookback)).fetchall()
    return {r[0]: (r[2], r[5] if r[5] is not None else r[6], r[6] is not None, r[7]) for r in rows}


def assert_engagement_matches_oracle(rows, data_dir) -> None:
    """``rows`` of (product_id, *FEATURES) from product_engagement equal the oracle on the
    files under ``data_dir`` (counts exactly, dwell to float precision)."""
    import pytest

    expected = reference_engagement(f"{data_dir}/click_stream.csv", f"{data_dir}/transactions.csv")
    got = {r[0]: tuple(r[1:]) for r in rows}
    assert set(got) == set(expected)
    for pid, want in expected.items():
        assert got[pid][:4] == want[:4] and got[pid][5] == want[5], pid
        assert got[pid][4] == pytest.approx(want[4], rel=1e-9, abs=1e-6), pid

