"""Sales and map facts, daily sales: pure functions (no Beam)."""
from __future__ import annotations

import datetime as dt

import pytest

from batch import sales
from batch.geo import gazetteer_centre
from transforms.records import BookingLine, Transaction, parse_time_us


def txn(booking="b1", status="Success", lines=((10, 2, 100), (11, 1, 50)), promo=30,
        fee=10000, created="2021-03-04T23:59:59.5Z", customer=1, method="OVO"):
    return Transaction(parse_time_us(created, "t"), customer, booking, "s-" + booking,
                       tuple(BookingLine(*ln) for ln in lines), method, status, promo,
                       "PROMO" if promo else "", fee, None, -6.2, 106.8,
                       sum(q * p for _, q, p in lines) + fee - promo)


CUSTOMER = sales.CustomerInfo(1, "F", dt.date(1990, 3, 5), "Jakarta Raya", -6.25, 106.9,
                              dt.date(2020, 1, 1))
PRODUCTS = {
    10: sales.ProductInfo(10, "Men", "Apparel", "Topwear", "Tshirts", "Blue", "Summer", 2015,
                          "Casual", "Puma Men Blue Tshirt", "Puma"),
    11: sales.ProductInfo(11, "Women", "Footwear", "Shoes", "Heels", "Red", "Fall", 2016,
                          "Casual", "Catwalk Women Red Heels", "Catwalk"),
}
PLACES = {"Jakarta Raya": gazetteer_centre("Jakarta Raya")}


@pytest.mark.parametrize("total, weights, expect", [
    (30, [200, 50], [24, 6]),
    (10, [1, 1, 1], [4, 3, 3]),
    (0, [5, 5], [0, 0]),
    (7, [0, 0], [4, 3]),
    (-5, [1, 1], [-3, -2]),
    (5, [], []),
])
def test_allocate_sums_exactly(total, weights, expect):
    parts = sales.allocate(total, weights)
    assert parts == expect and sum(parts) == (total if weights else 0)


def test_age_on_counts_completed_years():
    assert sales.age_on(dt.date(1990, 3, 5), dt.date(2021, 3, 4)) == 30
    assert sales.age_on(dt.date(1990, 3, 5), dt.date(2021, 3, 5)) == 31
    assert sales.age_on(None, dt.date(2021, 1, 1)) is None
    assert sales.age_on(dt.date(2030, 1, 1), dt.date(2021, 1, 1)) is None


def test_fact_rows_one_per_line_with_product_customer_and_map():
    rows = sales.fact_rows(txn(), CUSTOMER, PRODUCTS, PLACES)
    assert [r["line_number"] for r in rows] == [1, 2]
    a, b = rows
    assert a["booking_id"] == "b1" and a["product_id"] == 10 and a["quantity"] == 2
    assert a["line_revenue"] == 200 and b["line_revenue"] == 50
    assert a["promo_amount"] + b["promo_amount"] == 30 and a["promo_amount"] == 24
    assert a["shipment_fee"] + b["shipment_fee"] == 10000
    assert a["booking_total_amount"] == 250 + 10000 - 30
    assert a["customer_age"] == 30 and a["gender"] == "F"
    assert a["province"] == "DKI Jakarta" and a["home_location"] == "Jakarta Raya"
    assert (a["latitude"], a["longitude"]) == (-6.2088, 106.8456)
    assert (a["home_location_lat"], a["home_location_long"]) == (-6.25, 106.9)
    assert a["brand"] == "Puma" and b["brand"] == "Catwalk" and b["masterCategory"] == "Footwear"
    assert a["created_at"] == dt.datetime(2021, 3, 4, 23, 59, 59, 500000, tzinfo=dt.timezone.utc)
    assert a["date"] == dt.date(2021, 3, 4)


def test_failed_bookings_make_no_facts():
    assert sales.fact_rows(txn(status="Failed"), CUSTOMER, PRODUCTS, PLACES) == []


def test_unknown_product_or_customer_keeps_the_line_with_nulls():
    rows = sales.fact_rows(txn(lines=((99, 1, 10),)), None, PRODUCTS, PLACES)
    assert len(rows) == 1
    r = rows[0]
    assert r["brand"] is None and r["masterCategory"] is None
    assert r["province"] is None and r["latitude"] is None and r["customer_age"] is None


def test_sales_facts_rows_fit_the_table_schema():
    from transforms.warehouse import column_names, to_arrow

    rows = sales.fact_rows(txn(), CUSTOMER, PRODUCTS, PLACES)
    missing = set(column_names("sales_facts")) - set(rows[0])
    assert not missing
    assert to_arrow("sales_facts", rows).num_rows == 2


def test_daily_sales_groups_and_counts_orders_once():
    facts = (sales.fact_rows(txn("b1", lines=((10, 2, 100), (10, 1, 100))), CUSTOMER, PRODUCTS, PLACES)
             + sales.fact_rows(txn("b2", lines=((10, 1, 100),), promo=0), CUSTOMER, PRODUCTS, PLACES)
             + sales.fact_rows(txn("b3", lines=((11, 1, 50),), created="2021-03-05T00:00:00Z"),
                               CUSTOMER, PRODUCTS, PLACES))
    rows = sales.daily_sales_rows(facts)
    assert len(rows) == 2
    puma = rows[0]
    assert puma["date"] == dt.date(2021, 3, 4) and puma["brand"] == "Puma"
    assert puma["province"] == "DKI Jakarta" and puma["payment_method"] == "OVO"
    assert (puma["orders"], puma["units"], puma["revenue"], puma["promo_amount"]) == (2, 4, 400, 30)
    assert rows[1]["date"] == dt.date(2021, 3, 5) and rows[1]["orders"] == 1
    # totals are preserved
    assert sum(r["promo_amount"] for r in rows) == sum(f["promo_amount"] for f in facts)


def test_daily_combine_parts_merge_like_the_reference():
    facts = []
    for i in range(6):
        facts += sales.fact_rows(txn(f"b{i}", lines=((10 + i % 2, 1 + i, 100),)),
                                 CUSTOMER, PRODUCTS, PLACES)
    groups = {}
    for half in (facts[:3], facts[3:]):       # two "bundles", then merged
        for f in half:
            k = sales.daily_key(f)
            groups.setdefault(id(half), {}).setdefault(k, sales.daily_init())
            groups[id(half)][k] = sales.daily_add(groups[id(half)][k], sales.daily_value(f))
    keys = set().union(*(g.keys() for g in groups.values()))
    merged = [sales.daily_row(k, sales.daily_merge(g[k] for g in groups.values() if k in g))
              for k in keys]
    key = lambda r: (r["date"], r["brand"])  # noqa: E731
    assert sorted(merged, key=key) == sorted(sales.daily_sales_rows(facts), key=key)


def test_daily_key_is_deterministically_encodable():
    from apache_beam.coders import coders

    f = sales.fact_rows(txn(), CUSTOMER, PRODUCTS, PLACES)[0]
    coder = coders.FastPrimitivesCoder()
    coder.as_deterministic_coder("daily_sales").encode(sales.daily_key(f))
