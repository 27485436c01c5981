"""Tests for the data simulator (transforms/simulator) behind ``shopstream generate``.

One small data set is generated per module and shared; the tests check the real
Fashion Campus format, the event mix, referential integrity between the tables,
determinism, the deliberately broken product rows, the ground truth, the session
shapes, and that the churn signal is learnable.
"""
from __future__ import annotations

import ast
import collections
import csv
import hashlib
import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from transforms import records
from transforms import simulator as gen
from transforms.simulator.reference import BRANDS

TABLES = ("click_stream", "transactions", "customer", "product")
HEADERS = records.COLUMNS
TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z\Z")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")
META_KEYS = {"ADD_TO_CART": {"product_id", "quantity", "item_price"},
             "BOOKING": {"payment_status"}, "SEARCH": {"search_keywords"},
             "ADD_PROMO": {"promo_code", "promo_amount"}}
START = date(2021, 1, 1)
DAYS = 120
ARGS = dict(customers=450, products=600, days=DAYS, seed=7, start=START)


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


def _digest(out: Path) -> dict:
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("generated")
    gen.generate(str(out), **ARGS)
    return out


@pytest.fixture(scope="module")
def tables(data) -> dict:
    return {t: _rows(data / f"{t}.csv") for t in TABLES}


@pytest.fixture(scope="module")
def sessions(tables) -> dict:
    """session_id -> that session's click rows in event-time order."""
    out = collections.defaultdict(list)
    for row in tables["click_stream"][1:]:
        out[row[0]].append(row)
    for rows in out.values():
        rows.sort(key=lambda r: (r[2], r[3]))
    return out


# ------------------------------------------------------------------ format


def test_headers_are_the_real_ones(tables):
    for t in TABLES:
        assert tuple(tables[t][0]) == HEADERS[t]
    assert tables["click_stream"][0] == ["session_id", "event_name", "event_time", "event_id",
                                         "traffic_source", "event_metadata"]


def test_click_stream_format(tables):
    rows = tables["click_stream"][1:]
    assert len(rows) > 10_000
    for sid, name, ts, eid, source, meta in rows:
        assert UUID_RE.match(sid) and UUID_RE.match(eid)
        assert TIME_RE.match(ts), ts
        assert _ts(ts).tzinfo is not None
        assert source in ("MOBILE", "WEB")
        if name in META_KEYS:
            parsed = ast.literal_eval(meta)
            assert isinstance(parsed, dict) and set(parsed) == META_KEYS[name], meta
            assert "'" in meta and '"' not in meta  # Python literal, single quotes
        else:
            assert name in gen.EVENT_MIX_TARGET and meta == ""
    event_ids = [r[3] for r in rows]
    assert len(set(event_ids)) == len(event_ids)


def test_multi_key_metadata_is_csv_quoted_like_the_real_file(data):
    text = (data / "click_stream.csv").read_text(encoding="utf-8")
    assert re.search(r',MOBILE|WEB,"\{\'product_id\': \d+, \'quantity\': \d+, '
                     r'\'item_price\': \d+\}"\n', text)
    assert re.search(r",\{'payment_status': '(Success|Failed)'\}\n", text)


def test_transactions_format_and_amounts(tables):
    rows = [dict(zip(records.TRANSACTION_COLUMNS, r)) for r in tables["transactions"][1:]]
    assert len(rows) > 500
    for r in rows:
        assert TIME_RE.match(r["created_at"]) and TIME_RE.match(r["shipment_date_limit"])
        assert _ts(r["shipment_date_limit"]) > _ts(r["created_at"])
        lines = ast.literal_eval(r["product_metadata"])
        assert isinstance(lines, list) and lines
        assert all(set(x) == {"product_id", "quantity", "item_price"} for x in lines)
        subtotal = sum(x["quantity"] * x["item_price"] for x in lines)
        assert int(r["total_amount"]) == subtotal + int(r["shipment_fee"]) - int(r["promo_amount"])
        assert int(r["total_amount"]) > 0
        assert r["payment_method"] in gen.PAYMENT_METHODS
        assert r["payment_status"] in ("Success", "Failed")
        assert int(r["shipment_fee"]) in (0, 5000, 10000)
        assert (r["promo_code"] == "") == (int(r["promo_amount"]) == 0)
        float(r["shipment_location_lat"]), float(r["shipment_location_long"])
    success = sum(r["payment_status"] == "Success" for r in rows) / len(rows)
    assert 0.90 <= success <= 0.99


def test_customer_format(tables):
    provinces = {p[0]: p for p in gen.PROVINCES}
    assert len(provinces) >= 34
    rows = [dict(zip(records.CUSTOMER_COLUMNS, r)) for r in tables["customer"][1:]]
    assert [int(r["customer_id"]) for r in rows] == list(range(1, ARGS["customers"] + 1))
    for r in rows:
        assert r["gender"] in ("M", "F") and r["device_type"] in ("Android", "iOS")
        assert r["home_country"] == "Indonesia"
        _, lat, lon, _ = provinces[r["home_location"]]
        assert abs(float(r["home_location_lat"]) - lat) < 3
        assert abs(float(r["home_location_long"]) - lon) < 3
        assert date.fromisoformat(r["birthdate"]) < START
        assert date.fromisoformat(r["first_join_date"]) < START + timedelta(days=DAYS)
        assert "@" in r["email"]
    assert {"Jakarta Raya", "Jawa Barat"} <= {r["home_location"] for r in rows}


def test_product_values_are_realistic(tables):
    rows = [r for r in tables["product"][1:] if len(r) == 10]
    assert {r[1] for r in rows} <= {"Men", "Women", "Unisex", "Boys", "Girls"}
    assert {r[2] for r in rows} == {"Apparel", "Accessories", "Footwear", "Personal Care"}
    assert {"Topwear", "Bottomwear", "Shoes", "Watches", "Bags"} <= {r[3] for r in rows}
    assert {r[6] for r in rows} == {"Summer", "Winter", "Fall", "Spring"}
    brands = [b for b, _ in BRANDS]
    for r in rows:
        assert any(r[9].startswith(b + " " + r[1] + " ") for b in brands), r[9]
    assert len({r[0] for r in tables["product"][1:]}) == ARGS["products"]


def test_all_times_inside_the_window(tables):
    lo = datetime(START.year, START.month, START.day, tzinfo=timezone.utc)
    hi = lo + timedelta(days=DAYS)
    times = [_ts(r[2]) for r in tables["click_stream"][1:]]
    times += [_ts(r[0]) for r in tables["transactions"][1:]]
    assert lo <= min(times) and max(times) < hi
    assert max(times) - min(times) > timedelta(days=DAYS - 5)


# ------------------------------------------------------------------ behaviour


def test_event_mix_within_two_points(tables):
    counts = collections.Counter(r[1] for r in tables["click_stream"][1:])
    total = sum(counts.values())
    assert set(counts) == set(gen.EVENT_MIX_TARGET)
    for name, pct in gen.EVENT_MIX_TARGET.items():
        assert abs(100 * counts[name] / total - pct) <= 2.0, (name, 100 * counts[name] / total)


def test_traffic_source_mostly_mobile(tables):
    rows = tables["click_stream"][1:]
    share = sum(r[4] == "MOBILE" for r in rows) / len(rows)
    assert 0.6 <= share <= 0.8


def test_about_half_the_customers_never_buy(tables):
    buyers = {r[1] for r in tables["transactions"][1:]}
    assert 0.35 <= 1 - len(buyers) / ARGS["customers"] <= 0.65


def test_sessions_span_days_and_contain_several_visits(sessions):
    spans = [_ts(rows[-1][2]) - _ts(rows[0][2]) for rows in sessions.values()]
    assert sum(s > timedelta(days=1) for s in spans) >= 5
    with_break = 0
    for rows in sessions.values():
        times = [_ts(r[2]) for r in rows]
        if any((b - a).total_seconds() > 1800 for a, b in zip(times, times[1:])):
            with_break += 1
    assert 0.05 <= with_break / len(sessions) <= 0.6
    gaps = sorted((_ts(b[2]) - _ts(a[2])).total_seconds()
                  for rows in sessions.values() for a, b in zip(rows, rows[1:]))
    assert gaps[len(gaps) // 2] < 300  # mostly seconds to minutes


def test_adds_usually_follow_an_inferable_browse_event(sessions):
    before = collections.Counter()
    for rows in sessions.values():
        for prev, row in zip(rows, rows[1:]):
            if row[1] == "ADD_TO_CART":
                before[prev[1]] += 1
    inferable = before["CLICK"] + before["ITEM_DETAIL"] + before["HOMEPAGE"]
    assert inferable / sum(before.values()) > 0.6


def test_popular_products_get_more_carts(data, tables):
    truth = {int(r[0]): float(r[1]) for r in _rows(data / "ground_truth" / "products.csv")[1:]}
    carts = collections.Counter()
    for r in tables["click_stream"][1:]:
        if r[1] == "ADD_TO_CART":
            carts[ast.literal_eval(r[5])["product_id"]] += 1
    ranked = sorted(truth, key=truth.get)
    bottom, top = ranked[: len(ranked) // 4], ranked[-len(ranked) // 4:]
    assert sum(carts[p] for p in top) > 5 * sum(carts[p] for p in bottom)


# ------------------------------------------------------------------ integrity


def test_referential_integrity(tables, sessions):
    tx = [dict(zip(records.TRANSACTION_COLUMNS, r)) for r in tables["transactions"][1:]]
    clicks = tables["click_stream"][1:]
    assert sum(r[1] == "BOOKING" for r in clicks) == len(tx)
    assert {t["session_id"] for t in tx} <= set(sessions)
    assert len({t["booking_id"] for t in tx}) == len(tx)
    customers = {r[0] for r in tables["customer"][1:]}
    assert {t["customer_id"] for t in tx} <= customers
    products = {int(r[0]) for r in tables["product"][1:]}
    for t in tx:
        assert {x["product_id"] for x in ast.literal_eval(t["product_metadata"])} <= products
    for r in clicks:
        if r[1] == "ADD_TO_CART":
            assert ast.literal_eval(r[5])["product_id"] in products
    owner: dict = {}
    for t in tx:  # every session belongs to exactly one customer
        assert owner.setdefault(t["session_id"], t["customer_id"]) == t["customer_id"]


def test_each_booking_matches_its_transaction(tables, sessions):
    by_session = collections.defaultdict(list)
    for r in tables["transactions"][1:]:
        t = dict(zip(records.TRANSACTION_COLUMNS, r))
        by_session[t["session_id"]].append(t)
    for sid, txs in by_session.items():
        txs.sort(key=lambda t: t["created_at"])
        cart, bookings = [], []
        for row in sessions[sid]:
            if row[1] == "ADD_TO_CART":
                cart.append(ast.literal_eval(row[5]))
            elif row[1] == "BOOKING":
                bookings.append((row, cart))
                cart = []
        assert len(bookings) == len(txs)
        for (row, lines), t in zip(bookings, txs):
            assert ast.literal_eval(t["product_metadata"]) == lines
            assert ast.literal_eval(row[5])["payment_status"] == t["payment_status"]
            delay = (_ts(t["created_at"]) - _ts(row[2])).total_seconds()
            assert 0 <= delay <= 5
            promo = [ast.literal_eval(r[5]) for r in sessions[sid]
                     if r[1] == "ADD_PROMO" and r[2] < row[2]]
            if t["promo_code"]:
                assert {"promo_code": t["promo_code"],
                        "promo_amount": int(t["promo_amount"])} in promo


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_identical_bytes(data, tmp_path):
    gen.generate(str(tmp_path / "again"), **ARGS)
    assert _digest(tmp_path / "again") == _digest(data)


def test_different_seed_gives_different_data(data, tmp_path):
    gen.generate(str(tmp_path / "other"), **{**ARGS, "seed": 8})
    other, mine = _digest(tmp_path / "other"), _digest(data)
    assert all(other[f"{t}.csv"] != mine[f"{t}.csv"] for t in TABLES)


def test_worker_processes_do_not_change_the_output(tmp_path):
    args = dict(customers=450, products=50, days=30, seed=3)  # 3 chunks of customers
    gen.generate(str(tmp_path / "one"), workers=1, **args)
    gen.generate(str(tmp_path / "two"), workers=2, **args)
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")


# ------------------------------------------------------------------ broken rows, truth


def test_broken_product_lines_like_the_real_data(data):
    lines = (data / "product.csv").read_text(encoding="utf-8").splitlines()
    broken = [line for line in lines[1:] if len(next(csv.reader([line]))) != 10]
    assert 1 <= len(broken) <= max(1, round(ARGS["products"] * 0.0005)) + 1
    for line in broken:
        fields = next(csv.reader([line]))
        assert len(fields) in (11, 12) and '"' not in line
        name = ",".join(fields[9:])
        assert ", " in name and name.split(", ")[0].split()[-1]
    assert sum(1 for line in lines if '"' in line) == 0  # nothing else needs quoting


def test_broken_rows_scale_with_the_catalogue():
    assert len(gen.build_products(44_446, 1).broken) == 22
    assert len(gen.build_products(500, 1).broken) == 1
    assert len(gen.build_products(100, 1).broken) == 0


def test_ground_truth_is_separate_from_the_tables(data, tables):
    gt = data / "ground_truth"
    products = _rows(gt / "products.csv")
    customers = _rows(gt / "customers.csv")
    assert tuple(products[0]) == gen.GT_PRODUCTS_HEADER
    assert tuple(customers[0]) == gen.GT_CUSTOMERS_HEADER
    assert len(products) - 1 == ARGS["products"] and len(customers) - 1 == ARGS["customers"]
    assert (gt / "params.json").exists()
    secret = {"latent_popularity", "latent_hazard", "churn_date", "engagement", "is_buyer"}
    for t in TABLES:
        assert not secret & set(tables[t][0])
    assert sorted(p.name for p in data.iterdir() if p.is_file()) == sorted(
        f"{t}.csv" for t in TABLES)
    churned = [r for r in customers[1:] if r[7]]
    assert churned, "some customers churn inside the window"


def test_churned_customers_stop_buying(data, tables):
    churn = {r[0]: date.fromisoformat(r[7])
             for r in _rows(data / "ground_truth" / "customers.csv")[1:] if r[7]}
    late = [r for r in tables["transactions"][1:]
            if r[1] in churn and _ts(r[0]).date() > churn[r[1]]]
    assert late == []


# ------------------------------------------------------------------ contract, CLI


def test_every_row_parses_with_the_records_contract(data):
    broken_ids = set(_params(data)["broken_product_ids"])
    for kind in TABLES:
        n = 0
        for rec in records.read_csv_records(str(data / f"{kind}.csv"), kind):
            assert not isinstance(rec, records.DeadLetter), rec
            n += 1
            if kind == "product" and rec.id in broken_ids:
                assert ", " in rec.productDisplayName  # repaired, not dead-lettered
                broken_ids.discard(rec.id)
        assert n == len(_rows(data / f"{kind}.csv")) - 1
    assert not broken_ids


def _params(data: Path) -> dict:
    import json
    return json.loads((data / "ground_truth" / "params.json").read_text())


def test_cli_help_and_run(tmp_path, capsys):
    from pipelines import cli
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", "--help"])
    assert exc.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--out", "--customers", "--products", "--days", "--seed", "--start",
                 "--sessions-per-month", "--workers"):
        assert flag in help_text
    code = cli.main(["generate", "--out", str(tmp_path), "--customers", "30", "--products",
                     "40", "--days", "20", "--start", "2022-03-01", "--quiet"])
    assert code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("generate: wrote") and "events/s" in line
    assert _rows(tmp_path / "click_stream.csv")[1][2].startswith("2022-03")


# ------------------------------------------------------------------ churn signal


def _month(d: date) -> int:
    return d.year * 12 + d.month - 1


def _month_end(m: int) -> date:
    y, mm = divmod(m + 1, 12)
    return date(y, mm + 1, 1) - timedelta(days=1)


def churn_rows(out: Path) -> list:
    """Monthly RFM + session features and the 3-month churn label (SPEC section 2)."""
    tx = [dict(zip(records.TRANSACTION_COLUMNS, r)) for r in _rows(out / "transactions.csv")[1:]]
    owner = {t["session_id"]: t["customer_id"] for t in tx}
    span: dict = {}
    with open(out / "click_stream.csv", newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        for sid, _, ts, *_ in reader:
            if sid in owner:
                lo, hi = span.get(sid, (ts, ts))
                span[sid] = (min(lo, ts), max(hi, ts))
    sessions = collections.defaultdict(list)
    for sid, (lo, hi) in span.items():
        sessions[owner[sid]].append((_month(_ts(lo).date()),
                                     (_ts(hi) - _ts(lo)).total_seconds() / 60))
    buys = collections.defaultdict(list)
    for t in tx:
        if t["payment_status"] == "Success":
            buys[t["customer_id"]].append((_ts(t["created_at"]).date(), int(t["total_amount"])))
    as_of = max(_ts(t["created_at"]).date() for t in tx)
    last = _month(as_of) - (0 if as_of == _month_end(_month(as_of)) else 1)
    rows = []
    for cust, bs in buys.items():
        bs.sort()
        months = {_month(d) for d, _ in bs}
        for m in range(_month(bs[0][0]), last + 1):
            end = _month_end(m)
            recency = (end - max(d for d, _ in bs if d <= end)).days
            in_month = [a for d, a in bs if _month(d) == m]
            sess = [dur for sm, dur in sessions[cust] if sm == m]
            label = None
            if _month_end(m + 3) <= as_of:
                label = int(not months & {m + 1, m + 2, m + 3})
            rows.append((m, label, [recency, len(in_month), sum(in_month), len(sess),
                                    sum(sess) / len(sess) if sess else 0.0,
                                    (end - bs[0][0]).days]))
    return rows


def test_churn_is_learnable_from_monthly_rfm(tmp_path):
    np = pytest.importorskip("numpy")
    ensemble = pytest.importorskip("sklearn.ensemble")
    metrics = pytest.importorskip("sklearn.metrics")
    gen.generate(str(tmp_path), customers=700, products=150, days=420, seed=5)
    labelled = [r for r in churn_rows(tmp_path) if r[1] is not None]
    months = sorted({r[0] for r in labelled})
    split = months[len(months) // 2]
    train = [r for r in labelled if r[0] < split]
    test = [r for r in labelled if r[0] >= split]
    y_train = np.array([r[1] for r in train])
    y_test = np.array([r[1] for r in test])
    assert 0.1 < y_train.mean() < 0.9 and 0.1 < y_test.mean() < 0.9
    model = ensemble.RandomForestClassifier(n_estimators=100, min_samples_leaf=5,
                                            random_state=0)
    model.fit(np.array([r[2] for r in train]), y_train)
    proba = model.predict_proba(np.array([r[2] for r in test]))[:, 1]
    assert metrics.roc_auc_score(y_test, proba) >= 0.8
