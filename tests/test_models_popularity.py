"""The popularity model: SPEC §2 engagement, periods, weights, training, artifacts."""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from models import popularity as pop
from transforms.records import BookingLine, ClickEvent, Transaction

T0 = 1_600_000_000 * 1_000_000        # 2020-09-13T12:26:40Z, microseconds


def ev(eid, name, sec, pid=None, session="s"):
    return ClickEvent(session, eid, name, T0 + int(sec * 1_000_000), "WEB", pid)


def test_engagement_uses_the_spec_rules_whatever_the_order_and_duplicates():
    # the SPEC §2 rules themselves are tested in tests/test_session_rules.py
    evs = [ev("a", "ADD_TO_CART", 30, 3), ev("c", "CLICK", 10), ev("c", "CLICK", 10),
           ev("d", "ITEM_DETAIL", 10), ev("h", "HOMEPAGE", 0), ev("x", "SCROLL", 5)]
    a = pop.engagement_from_events(evs)
    b = pop.engagement_from_events(list(reversed(evs)))
    # h is 4 events before the add (beyond lookback 3); c, d inferred; duplicate c once
    assert a == b == {(3, None): [1, 1, 1, 0, 0 + 20 + 0, 0]}


def test_engagement_and_purchases_per_product():
    evs = [ev("c", "CLICK", 0), ev("d", "ITEM_DETAIL", 10), ev("a", "ADD_TO_CART", 15, 4),
           ev("h", "HOMEPAGE", 0, session="t"), ev("a2", "ADD_TO_CART", 7, 4, session="t")]
    eng = pop.engagement_from_events(evs)
    assert eng[(4, None)] == [1, 1, 2, 1, 10 + 5 + 7, 0]
    txns = [Transaction(T0, 1, "b", "s", (BookingLine(4, 2, 10), BookingLine(6, 1, 5)), "OVO",
                        "Success", 0, "", 0, None, None, None, 25),
            Transaction(T0, 1, "b", "s", (BookingLine(4, 2, 10),), "OVO", "Success", 0, "", 0,
                        None, None, None, 20),                    # duplicate booking id
            Transaction(T0, 1, "f", "s", (BookingLine(4, 9, 10),), "OVO", "Failed", 0, "", 0,
                        None, None, None, 90)]
    pop.add_purchases(eng, txns)
    assert eng[(4, None)][5] == 2 and eng[(6, None)] == [0, 0, 0, 0, 0, 1]


@pytest.mark.parametrize("period", pop.PERIODS)
def test_periods_are_contiguous_and_start_on_their_boundary(period):
    t = int(dt.datetime(2021, 3, 17, 15, tzinfo=dt.timezone.utc).timestamp()) * 1_000_000
    i = pop.period_index(t, period)
    start, end = pop.period_start(i, period), pop.period_end(i, period)
    assert start <= dt.date(2021, 3, 17) < end == pop.period_start(i + 1, period)
    if period != "month":
        assert start.weekday() == 0
    else:
        assert start == dt.date(2021, 3, 1)


def test_weights_are_non_negative_and_sum_to_one():
    w = pop.weights_from_importance({"click_count": 3.0, "purchases": 1.0, "homepage_count": -1})
    assert set(w) == set(pop.FEATURES) and all(v >= 0 for v in w.values())
    assert sum(w.values()) == pytest.approx(1.0, abs=1e-9)
    assert w["click_count"] == pytest.approx(0.75) and w["item_detail_count"] == 0
    assert pop.weights_from_importance({}) == {f: pytest.approx(1 / 6) for f in pop.FEATURES}


def test_score_scales_by_the_max_over_the_set():
    s = pop.score({1: [10, 0, 0, 0, 1000, 2], 2: [5, 0, 0, 0, 100, 4]},
                  {"click_count": 0.5, "item_detail_count": 0, "add_to_cart_count": 0,
                   "homepage_count": 0, "total_dwell_seconds": 0, "purchases": 0.5})
    assert s == {1: pytest.approx(0.75), 2: pytest.approx(0.75)}


def synthetic_engagement(products=120, periods=10, seed=3):
    """Products with a latent rate; next period's purchases follow this period's carts."""
    rng = random.Random(seed)
    rate = {p: rng.lognormvariate(0, 1) for p in range(products)}
    eng = {}
    for t in range(2700, 2700 + periods):
        for p, r in rate.items():
            carts = rng.gauss(10 * r, 2) if r > 0.2 else 0
            eng[(p, t)] = [max(rng.gauss(12 * r, 6), 0), max(rng.gauss(8 * r, 6), 0),
                           max(carts, 0), max(rng.gauss(5, 3), 0), max(rng.gauss(600, 300), 0),
                           max(round(rng.gauss(3 * r, 1)), 0)]
    return eng


def test_train_gives_valid_weights_and_time_split_metrics():
    res = pop.train(synthetic_engagement(), "2w", n_estimators=60)
    from transforms.scoring import validate_weights  # the scorer accepts them as they are

    assert validate_weights(res.weights) == res.weights
    assert sum(res.weights.values()) == pytest.approx(1.0, abs=1e-6)
    m = res.metrics
    assert {"rmse", "baseline_rmse", "spearman", "weights_spearman"} <= set(m)
    assert m["spearman"] > 0.5
    meta = res.metadata
    assert dt.date.fromisoformat(meta["window_end"]) < dt.date.fromisoformat(meta["eval_window"][0])
    assert meta["importances"]["gain"] and meta["period"] == "2w"


def test_too_few_periods_is_a_clear_error():
    eng = {k: v for k, v in synthetic_engagement(periods=3).items()}
    with pytest.raises(ValueError, match="at least 3 labelled periods"):
        pop.train(eng, "2w")


def _events_rows(n_products=40, weeks=8, seed=5):
    """events_enriched + sales_facts rows (hand-made, as the streaming job writes them)."""
    rng = random.Random(seed)
    start = dt.datetime(2021, 1, 4, tzinfo=dt.timezone.utc)        # a Monday
    events, facts, k = [], [], 0
    for w in range(weeks):
        for p in range(1, n_products + 1):
            for _ in range(rng.randint(0, p // 4 + 1)):
                t = start + dt.timedelta(days=7 * w + rng.random() * 6.9)
                k += 1
                name = rng.choice(["CLICK", "ITEM_DETAIL", "ADD_TO_CART", "HOMEPAGE"])
                events.append({"event_id": f"e{k}", "session_id": f"s{k}", "visit_id": f"s{k}:0",
                               "event_name": name, "event_time": t, "traffic_source": "WEB",
                               "product_id": p, "product_id_inferred": name != "ADD_TO_CART",
                               "dwell_seconds": rng.uniform(1, 60)})
                if name == "ADD_TO_CART" and rng.random() < 0.7:
                    facts.append({"booking_id": f"b{k}", "line_number": 1,
                                  "created_at": t + dt.timedelta(minutes=3), "customer_id": 1,
                                  "product_id": p, "quantity": rng.randint(1, 2),
                                  "item_price": 100, "line_revenue": 100})
    return events, facts


def test_engagement_from_the_warehouse_matches_the_rows(tmp_path):
    from transforms.warehouse import open_warehouse

    events, facts = _events_rows()
    with open_warehouse(str(tmp_path / "w.duckdb")) as wh:
        wh.write("events_enriched", events, "replace")
        wh.write("sales_facts", facts, "replace")
        eng, last = pop.engagement_from_warehouse(wh, "week")
    expect = {}
    for e in events:
        us = int(e["event_time"].timestamp() * 1_000_000)
        key = (e["product_id"], pop.period_index(us, "week"))
        acc = expect.setdefault(key, [0.0] * 6)
        acc[pop.COUNTED[e["event_name"]]] += 1
        acc[4] += e["dwell_seconds"]
    for f in facts:
        key = (f["product_id"], pop.period_index(int(f["created_at"].timestamp() * 1e6), "week"))
        expect.setdefault(key, [0.0] * 6)[5] += f["quantity"]
    assert set(eng) == set(expect)
    for k, v in expect.items():
        assert eng[k] == pytest.approx(v)
    last_event = max(e["event_time"] for e in events)
    assert pop.period_end(last, "week") <= last_event.date() + dt.timedelta(days=1)


def test_run_train_from_the_warehouse_writes_the_artifact_and_metrics(tmp_path, capsys):
    from pipelines.cli import main
    from transforms.warehouse import open_warehouse

    events, facts = _events_rows()
    wh_path, models = tmp_path / "w.duckdb", tmp_path / "models"
    with open_warehouse(str(wh_path)) as wh:
        wh.write("events_enriched", events, "replace")
        wh.write("sales_facts", facts, "replace")
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    pids = sorted({e["product_id"] for e in events if e.get("product_id")})
    first = min(e["event_time"] for e in events).date()
    monday = first - dt.timedelta(days=first.weekday())
    with open(gt / "product_demand.csv", "w") as fh:
        fh.write("product_id,week_start,expected_units\n")
        for w in range(30):
            for i, pid in enumerate(pids):
                fh.write(f"{pid},{monday + dt.timedelta(weeks=w)},{1.0 + i}\n")
    assert main(["train", "popularity", "--warehouse", str(wh_path), "--models", str(models),
                 "--period", "week", "--ground-truth", str(gt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train popularity: version ") and "weights click_count=" in out
    for label in ("weighted popularity score", "add-to-cart count alone",
                  "true demand (ground truth)"):
        assert label in out, out
    version = (models / "popularity" / "LATEST").read_text().strip()
    folder = models / "popularity" / version
    weights = json.loads((folder / "weights.json").read_text())
    assert set(weights) == set(pop.FEATURES) and sum(weights.values()) == pytest.approx(1.0)
    assert (folder / "model.json").is_file()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["weights"] == weights and meta["version"] == version
    from transforms.scoring import latest_model_weights

    assert latest_model_weights(str(models)) == (weights, version)
    with open_warehouse(str(wh_path)) as wh:
        rows = wh.query("SELECT metric FROM model_metrics WHERE model = 'popularity'")
    assert {"rmse", "baseline_rmse", "ranking_spearman", "ranking_ndcg_at_10",
            "baseline_add_to_cart_ndcg_at_10", "true_demand_ndcg_at_10"} <= {r["metric"] for r in rows}


def test_missing_events_table_is_a_clear_error(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["train", "popularity", "--warehouse", str(tmp_path / "w.duckdb"),
                 "--models", str(tmp_path / "m")]) == 2
    assert "no events_enriched table" in capsys.readouterr().err


def test_ranking_metrics_by_hand():
    import numpy as np

    # one period, four products: next-period purchases 5, 3, 0, 1
    raw = np.array([[0, 0, 1, 0, 0, 0], [0, 0, 4, 0, 0, 0], [0, 0, 2, 0, 0, 0],
                    [0, 0, 3, 0, 0, 0]], dtype=float)
    ds = pop.Dataset(raw, raw, np.array([5.0, 3.0, 0.0, 1.0]), np.array([7, 7, 7, 7]),
                     np.array([1, 2, 3, 4]))
    weighted = np.array([4.0, 3.0, 1.0, 2.0])                # the right order
    demand = {(1, 8): 4.5, (2, 8): 2.9, (3, 8): 0.2, (4, 8): 1.1}
    m = pop.ranking_metrics(ds, np.arange(4), weighted, demand, k=2)
    assert m["ranking_spearman"] == pytest.approx(1.0)
    assert m["ranking_ndcg_at_2"] == pytest.approx(1.0)
    assert m["true_demand_spearman"] == pytest.approx(1.0)
    assert m["baseline_add_to_cart_spearman"] < 0            # carts order them badly here
    assert m["baseline_add_to_cart_ndcg_at_2"] < 1.0 and m["ranking_eval_periods"] == 1.0


def test_read_demand_spreads_weeks_over_periods(tmp_path):
    f = tmp_path / "product_demand.csv"
    # 2021-01-04 is a Monday; 2w periods start on Mondays counted from 1970-01-05
    f.write_text("product_id,week_start,expected_units\n9,2021-01-04,7.0\n9,2021-01-11,14.0\n")
    weekly = pop.read_demand(str(tmp_path), "week")
    assert sorted(weekly.values()) == [pytest.approx(7.0), pytest.approx(14.0)]
    two = pop.read_demand(str(f), "2w")
    assert sum(two.values()) == pytest.approx(21.0)
    monthly = pop.read_demand(str(f), "month")
    assert list(monthly.values()) == [pytest.approx(21.0)]   # both weeks lie in January
    (tmp_path / "bad.csv").write_text("x\n1\n")
    with pytest.raises(ValueError, match="expected_units"):
        pop.read_demand(str(tmp_path / "bad.csv"), "2w")


@pytest.mark.emulator
def test_read_demand_from_gcs(tmp_path, monkeypatch):
    """`train popularity --ground-truth gs://…` reads through Beam's FileSystems."""
    from tests.emulators import GCSEmulator

    text = "product_id,week_start,expected_units\n9,2021-01-04,7.0\n9,2021-01-11,14.0\n"
    (tmp_path / "product_demand.csv").write_text(text)
    gcs = GCSEmulator(tmp_path / "gcs").start()
    try:
        gcs.activate(monkeypatch)
        gcs.upload_text("truth", "gt/product_demand.csv", text)
        local = pop.read_demand(str(tmp_path), "2w")
        assert pop.read_demand("gs://truth/gt", "2w") == local
        assert pop.read_demand("gs://truth/gt/product_demand.csv", "2w") == local
        with pytest.raises(FileNotFoundError, match="gs://truth/none"):
            pop.read_demand("gs://truth/none", "2w")
    finally:
        gcs.stop()
