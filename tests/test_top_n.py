"""Rankings (SPEC §2, §4): dimensions, brand/sub-category sums, tie order, snapshots,
warehouse rows and the RankWindows transform."""
from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.engagement import Engagement
from transforms.records import Product
from transforms.scoring import DEFAULT_WEIGHTS, score_products
from transforms.top_n import (
    TOP10_TABLES,
    RankingSnapshot,
    RankWindows,
    build_rankings,
    make_snapshot,
    product_engagement_rows,
    top10_rows,
    warehouse_rows,
)
from transforms.warehouse import column_names, table_schema

S = 1_000_000
T0 = 1_567_785_600 * S


def product(pid, gender, season, sub, name):
    from transforms.records import brand_of
    return Product(pid, gender, "Apparel", sub, "Tshirts", "Blue", season, 2012, "Casual",
                   name, brand_of(name))


PRODUCTS = {
    1: product(1, "Men", "Summer", "Topwear", "Puma Men Blue Tshirt"),
    2: product(2, "Women", "Summer", "Topwear", "Puma Women Pink Top"),
    3: product(3, "Men", "Winter", "Shoes", "Nike Men Running Shoes"),
    4: product(4, "Men", "Summer", "Shoes", "Peter England Men Formal Shoes"),
    5: product(5, "", "", "", ""),  # no attributes: ranks only among all products
}


def test_build_rankings_dimensions_sums_and_order():
    scores = {1: 0.5, 2: 0.25, 3: 0.75, 4: 0.5, 5: 0.1, 99: 0.9}  # 99: unknown product
    r = build_rankings(scores, PRODUCTS, top_n=10)
    # ties (1 and 4 at 0.5) go by product id; an unknown product ranks only overall
    assert r["products"] == [("99", 0.9), ("3", 0.75), ("1", 0.5), ("4", 0.5), ("2", 0.25),
                             ("5", 0.1)]
    # brands: Puma = 0.5 + 0.25 = 0.75 ties Nike 0.75 → by name
    assert r["brands"] == [("Nike", 0.75), ("Puma", 0.75), ("Peter England", 0.5)]
    assert r["subcategories"] == [("Shoes", 1.25), ("Topwear", 0.75)]
    assert r["products:gender:Men"] == [("3", 0.75), ("1", 0.5), ("4", 0.5)]
    assert r["products:season:Summer"] == [("1", 0.5), ("4", 0.5), ("2", 0.25)]
    assert r["products:season:Summer:gender:Men"] == [("1", 0.5), ("4", 0.5)]
    assert r["products:season:Winter:gender:Men"] == [("3", 0.75)]
    assert set(r) == {"products", "brands", "subcategories", "products:gender:Men",
                      "products:gender:Women", "products:season:Summer",
                      "products:season:Winter", "products:season:Summer:gender:Men",
                      "products:season:Summer:gender:Women",
                      "products:season:Winter:gender:Men"}


def test_build_rankings_top_n_and_input_order_independence():
    rng = random.Random(1)
    scores = {pid: float(rng.randint(0, 5)) for pid in range(1, 200)}  # many ties
    products = {pid: product(pid, rng.choice(["Men", "Women"]), "Fall", "Bags",
                             f"Brand{pid % 7} Men Bag") for pid in scores}
    a = build_rankings(scores, products, top_n=10)
    b = build_rankings(dict(reversed(list(scores.items()))), products, top_n=10)
    assert a == b
    assert all(len(v) <= 10 for v in a.values())
    assert len(build_rankings(scores, products, top_n=None)["products"]) == 199
    ids = [int(m) for m, _ in a["products"]]
    assert ids == sorted(ids, key=lambda p: (-scores[p], p))


def test_build_rankings_empty():
    assert build_rankings({}, PRODUCTS) == {"products": [], "brands": [], "subcategories": []}


ENG = {
    1: Engagement(5, 2, 1, 0, 30.0, 1, T0 + 100 * S),
    3: Engagement(1, 0, 0, 0, 5.0, 0, T0 + 900 * S),
    7: Engagement(0, 0, 0, 1, 0.0, 0, T0 + 50 * S),   # not in the product table
}


def test_make_snapshot_as_of_and_names():
    snap = make_snapshot("all", None, ENG, PRODUCTS, DEFAULT_WEIGHTS, top_n=50)
    assert snap.horizon == "all" and snap.as_of_us == T0 + 900 * S
    assert snap.records == sum(e.records for e in ENG.values()) == 11
    assert snap.names == {"1": "Puma Men Blue Tshirt", "3": "Nike Men Running Shoes"}
    assert snap.brands == {"1": "Puma", "3": "Nike"}
    assert snap.scores == score_products(ENG, DEFAULT_WEIGHTS)
    # 1 leads every feature but homepage (0.95); 7 has the only homepage view (0.05);
    # 3 has a fifth of the top clicks and a sixth of the top dwell (0.03 + 0.0167)
    assert [m for m, _ in snap.rankings["products"]] == ["1", "7", "3"]
    # a sliding window: as_of is the last record counted, capped at the window end
    w = make_snapshot("1h", T0 + 600 * S, ENG, PRODUCTS, DEFAULT_WEIGHTS)
    assert w.as_of_us == T0 + 600 * S and w.window_end_us == T0 + 600 * S
    w = make_snapshot("1h", T0 + 3600 * S, ENG, PRODUCTS, DEFAULT_WEIGHTS)
    assert w.as_of_us == T0 + 900 * S
    assert make_snapshot("1h", T0, {}, PRODUCTS, DEFAULT_WEIGHTS) is None
    # versions order panes: same as_of, more records → newer
    assert w.version() < w._replace(records=w.records + 1).version()


def _check_columns(table, rows):
    cols = set(column_names(table))
    required = {f["name"] for f in table_schema(table)["fields"] if f["mode"] == "REQUIRED"}
    for row in rows:
        assert set(row) <= cols, (table, set(row) - cols)
        assert all(row[c] is not None for c in required), (table, row)


def test_warehouse_rows_match_the_table_schemas():
    out = warehouse_rows(ENG, PRODUCTS, DEFAULT_WEIGHTS)
    assert set(out) == set(TOP10_TABLES) | {"product_engagement"}
    for table, rows in out.items():
        _check_columns(table, rows)
    assert [r["product_id"] for r in out["top10_products"]] == [1, 7, 3]
    assert out["top10_products"][0] == {
        "rank": 1, "product_id": 1, "productDisplayName": "Puma Men Blue Tshirt",
        "brand": "Puma", "popularity_score": out["top10_products"][0]["popularity_score"]}
    assert [r["brand"] for r in out["top10_brands"]] == ["Puma", "Nike"]
    assert [(r["season"], r["gender"], r["rank"], r["product_id"])
            for r in out["top10_products_by_season_gender"]] == [
        ("Summer", "Men", 1, 1), ("Winter", "Men", 1, 3)]
    pe = {r["product_id"]: r for r in out["product_engagement"]}
    assert pe[1]["click_count"] == 5 and pe[1]["total_dwell_seconds"] == 30.0
    assert pe[7]["brand"] is None and pe[7]["popularity_score"] > 0


def test_top10_rows_from_a_snapshot_equal_warehouse_rows():
    snap = make_snapshot("all", None, ENG, PRODUCTS, DEFAULT_WEIGHTS, top_n=50)
    direct = warehouse_rows(ENG, PRODUCTS, DEFAULT_WEIGHTS)
    for table in TOP10_TABLES:
        assert top10_rows(snap, table) == direct[table]
    assert product_engagement_rows(snap, PRODUCTS, DEFAULT_WEIGHTS) == direct["product_engagement"]
    with pytest.raises(ValueError, match="unknown top-10 table"):
        top10_rows(snap, "top10_customers")


def test_top10_rows_keep_ten():
    eng = {pid: Engagement(click_count=pid, last_seen_us=T0) for pid in range(1, 30)}
    prods = {pid: product(pid, "Men", "Fall", "Bags", f"B{pid} Men Bag") for pid in eng}
    rows = warehouse_rows(eng, prods, DEFAULT_WEIGHTS)
    assert [r["rank"] for r in rows["top10_products"]] == list(range(1, 11))
    assert rows["top10_products"][0]["product_id"] == 29
    assert len(rows["top10_products_by_season_gender"]) == 10
    assert len(rows["product_engagement"]) == 29


# --------------------------------------------------------------------------- Beam
ELEMENTS = [("all", None, ENG), ("1h", T0 + 600 * S, {1: ENG[1]}), ("24h", T0, {})]


def _summary(s: RankingSnapshot):
    return (s.horizon, s.as_of_us, tuple(m for m, _ in s.rankings["products"]),
            tuple(m for m, _ in s.rankings["brands"]))


EXPECTED = [("all", T0 + 900 * S, ("1", "7", "3"), ("Puma", "Nike")),
            ("1h", T0 + 100 * S, ("1",), ("Puma",))]


def _pipeline():
    return BeamTestPipeline(runner="DirectRunner", options=PipelineOptions(["--runner=DirectRunner"]))


def test_rank_windows_with_products_pcollection_and_asdict():
    with _pipeline() as p:
        elements = p | "Elements" >> beam.Create(ELEMENTS)
        prods = p | "Products" >> beam.Create(list(PRODUCTS.values()))
        a = elements | "FromPCollection" >> RankWindows(prods, DEFAULT_WEIGHTS, top_n=5)
        assert_that(a | "SA" >> beam.Map(_summary), equal_to(EXPECTED), label="PCollection")
        keyed = p | "Keyed" >> beam.Create(list(PRODUCTS.items()))
        b = elements | "FromAsDict" >> RankWindows(beam.pvalue.AsDict(keyed), DEFAULT_WEIGHTS)
        assert_that(b | "SB" >> beam.Map(_summary), equal_to(EXPECTED), label="AsDict")
        c = elements | "FromDict" >> RankWindows(PRODUCTS)  # default weights
        assert_that(c | "SC" >> beam.Map(_summary), equal_to(EXPECTED), label="Dict")


def test_rank_windows_validates_arguments():
    with pytest.raises(ValueError, match="non-negative"):
        RankWindows({}, {**DEFAULT_WEIGHTS, "purchases": -1})
    with pytest.raises(ValueError, match="top_n"):
        RankWindows({}, DEFAULT_WEIGHTS, top_n=0)
