"""The churn model: time split, training, artifacts, quarterly retraining, scoring."""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from batch.churn_features import add_months
from models import artifacts, churn
from transforms.warehouse import open_warehouse

D = dt.date


def synthetic_rows(months=14, customers=150, seed=1, unlabelled=3):
    """churn_features-like rows where churn follows recency (with noise)."""
    rng = random.Random(seed)
    rows = []
    start = D(2021, 1, 1)
    for i in range(months + unlabelled):
        m = add_months(start, i)
        for c in range(customers):
            recency = rng.expovariate(1 / 40)
            freq = rng.randint(0, 4)
            p = 0.85 if recency > 60 else 0.15
            churned = None if i >= months else int(rng.random() < p)
            rows.append({
                "customer_id": c, "month": m, "recency_days": recency, "frequency": freq,
                "monetary": freq * 1000, "session_count": freq, "avg_session_minutes":
                None if freq == 0 else rng.uniform(1, 20), "tenure_days": 30 * i + c,
                "churned": churned, "as_of": D(2022, 12, 31)})
    return rows


def test_plan_split_is_in_time_order_with_a_gap():
    months = [add_months(D(2021, 1, 1), i) for i in range(16)]
    plan = churn.plan_split(months, eval_months=3, gap_months=3)
    assert plan.eval == months[-3:]
    assert plan.gap_months == 3
    assert max(plan.calib) <= add_months(plan.eval[0], -4)         # horizon before eval
    assert max(plan.fit) < min(plan.calib)
    assert not set(plan.fit) & set(plan.calib) | set(plan.fit) & set(plan.eval)


def test_plan_split_shrinks_the_gap_on_short_data_and_refuses_too_little():
    months = [add_months(D(2021, 1, 1), i) for i in range(4)]
    plan = churn.plan_split(months, eval_months=3, gap_months=3)
    assert plan.eval == months[-1:] and plan.gap_months < 3
    assert max(plan.fit) < min(plan.calib) <= max(plan.calib) < min(plan.eval)
    with pytest.raises(ValueError, match="at least 3 labelled months"):
        churn.plan_split(months[:2])


def test_train_reports_metrics_on_the_later_slice():
    res = churn.train(synthetic_rows(), n_estimators=40, permutation_repeats=2)
    m, meta = res.metrics, res.metadata
    for k in ("roc_auc", "pr_auc", "brier", "baseline_recency_roc_auc", "log_loss"):
        assert k in m
    assert m["roc_auc"] > 0.75 and 0 <= m["brier"] < 0.25
    assert meta["eval_months"] == ["2021-12-01", "2022-02-01"]
    assert dt.date.fromisoformat(meta["window_end"]) < dt.date.fromisoformat(meta["eval_months"][0])
    # tenure_days grows with the calendar: a column of the table, not a feature
    assert set(res.bundle["features"]) == {"recency_days", "frequency", "monetary",
                                           "session_count", "avg_session_minutes"}
    assert max(meta["permutation_importance_roc_auc"],
               key=meta["permutation_importance_roc_auc"].get) == "recency_days"


def test_oracle_and_recency_baseline_beside_the_model_with_curves():
    rows = synthetic_rows()
    # an oracle that knows the rule the labels were drawn from (recency > 60 days)
    oracle = {(r["customer_id"], r["month"]): 0.85 if r["recency_days"] > 60 else 0.15
              for r in rows}
    m = churn.train(rows, n_estimators=40, permutation_repeats=1, oracle=oracle).metrics
    assert m["oracle_coverage"] == 1.0
    for part in ("", "_recent_buyers"):
        for prefix in ("", "baseline_recency_", "oracle_"):
            assert 0.0 <= m[f"{prefix}roc_auc{part}"] <= 1.0
            assert 0.0 <= m[f"{prefix}pr_auc{part}"] <= 1.0
    assert m["oracle_roc_auc"] >= m["roc_auc"] - 0.02       # nobody beats the true rule
    assert "baseline_recency_brier" not in m                # recency is not a probability
    rows_in_bins = sum(m[f"calibration_bin_{i:02d}_rows"] for i in range(1, 11))
    assert rows_in_bins == m["eval_rows"]
    for name in churn.SCORERS:
        gains = [m[f"gains_{name}_decile_{k:02d}"] for k in range(1, 11)]
        assert gains == sorted(gains) and gains[-1] == pytest.approx(1.0)
    assert m["gains_oracle_decile_03"] > 0.3                 # better than random
    assert m["importance_recency_days"] == max(v for k, v in m.items()
                                               if k.startswith("importance_"))


def test_oracle_without_full_coverage_is_left_out():
    rows = synthetic_rows()
    m = churn.train(rows, n_estimators=20, permutation_repeats=1, oracle={}).metrics
    assert m["oracle_coverage"] == 0.0 and "oracle_roc_auc" not in m


def test_evaluate_and_curves_by_hand():
    import numpy as np

    y = np.array([0, 0, 1, 1])
    s = {"model": np.array([0.1, 0.4, 0.35, 0.8]), "baseline_recency": np.array([1, 2, 3, 4.0])}
    m = churn.evaluate(y, s, np.array([True, True, True, False]))
    assert m["roc_auc"] == 0.75 and m["baseline_recency_roc_auc"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["eval_rows_recent_buyers"] == 3.0
    assert m["roc_auc_recent_buyers"] == 0.5
    c = churn.curves(y, s, bins=2)
    assert c["calibration_bin_01_predicted"] == pytest.approx(0.225)   # 0.1, 0.35
    assert c["calibration_bin_01_observed"] == 0.5
    assert c["gains_model_decile_01"] == 0.5 and c["gains_baseline_recency_decile_01"] == 1.0


def test_read_oracle_and_bad_ground_truth(tmp_path):
    (tmp_path / "customer_months.csv").write_text(
        "customer_id,month,alive,hazard,p_churn_3m\n7,2021-03-01,1,0.1,0.25\n")
    assert churn.read_oracle(str(tmp_path)) == {(7, D(2021, 3, 1)): 0.25}
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="p_churn_3m"):
        churn.read_oracle(str(tmp_path / "bad.csv"))


def test_features_never_include_ids_or_labels():
    cols = ["customer_id", "month", "churned", "as_of", "recency_days", "frequency",
            "monetary", "session_count", "avg_session_minutes", "tenure_days", "label_next"]
    feats = churn.feature_list(cols)
    assert not {"customer_id", "month", "churned", "as_of", "label_next"} & set(feats)
    with pytest.raises(ValueError, match="recency_days"):
        churn.feature_list(["customer_id", "month"])


def test_boosting_estimator_and_feature_override():
    rows = synthetic_rows()
    res = churn.train(rows, estimator="boosting", n_estimators=40, permutation_repeats=1,
                      features=["recency_days", "frequency"])
    assert res.metadata["model_type"].startswith("HistGradientBoostingClassifier")
    assert res.bundle["features"] == ["recency_days", "frequency"]
    assert res.metrics["roc_auc"] > 0.65            # churn follows recency in these rows
    assert len(churn.predict_rows(res.bundle, rows[:5])) == 5
    with pytest.raises(ValueError, match="churned"):
        churn.train(rows, features=["recency_days", "churned"])
    with pytest.raises(ValueError, match="unknown churn estimator"):
        churn.train(rows, estimator="svm")


def test_train_refuses_unlabelled_or_single_class_data():
    rows = synthetic_rows(months=0, unlabelled=2)
    with pytest.raises(ValueError, match="no labelled months"):
        churn.train(rows)
    rows = [dict(r, churned=1 if r["churned"] is not None else None) for r in synthetic_rows()]
    with pytest.raises(ValueError, match="single class"):
        churn.train(rows, n_estimators=5)


@pytest.mark.parametrize("data_end, newest, days_ago, due", [
    ("2021-06-01", D(2021, 7, 1), 5, False),       # one month newer, trained recently
    ("2021-06-01", D(2021, 9, 1), 5, True),        # a quarter of new labelled data
    ("2021-06-01", D(2021, 7, 1), 100, True),      # old model and newer data
    ("2021-06-01", D(2021, 6, 1), 400, False),     # old model, but no newer data
])
def test_retrain_due(data_end, newest, days_ago, due):
    now = dt.datetime(2023, 1, 1, tzinfo=dt.timezone.utc)
    meta = {"version": "v", "data_end": data_end, "window_end": "2021-03-01",
            "trained_at": (now - dt.timedelta(days=days_ago)).isoformat()}
    ok, reason = churn.retrain_due(meta, newest, now)
    assert ok is due
    if not due:
        assert "younger than a quarter" in reason and "--force" in reason
    assert churn.retrain_due(None, newest, now)[0]


def _write_features(wh_path, rows):
    from transforms.warehouse import open_warehouse

    with open_warehouse(str(wh_path)) as wh:
        wh.write("churn_features", rows, "replace")


def test_train_save_skip_force_and_predict(tmp_path):
    from transforms.warehouse import open_warehouse

    wh, models = tmp_path / "w.duckdb", tmp_path / "models"
    _write_features(wh, synthetic_rows())
    kw = dict(n_estimators=30, permutation_repeats=1)
    first = churn.run_train(str(wh), str(models), **kw)
    assert first["status"] == "trained"
    version = first["version"]
    # layout: {models}/churn/{version}/model.joblib + metadata.json, and LATEST
    folder = models / "churn" / version
    assert (folder / "model.joblib").is_file()
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["version"] == version and meta["metrics"]["roc_auc"] == first["metrics"]["roc_auc"]
    assert (models / "churn" / "LATEST").read_text().strip() == version
    assert version.startswith(meta["window_start"].replace("-", "") + "_"
                              + meta["window_end"].replace("-", "") + "-")

    again = churn.run_train(str(wh), str(models), **kw)
    assert again["status"] == "skipped" and "younger than a quarter" in again["message"]
    forced = churn.run_train(str(wh), str(models), force=True, **kw)
    assert forced["status"] == "trained" and forced["version"] == version  # same content

    out = churn.run_predict(str(wh), str(models))
    assert out["version"] == version and out["rows"] == 3 * 150
    with open_warehouse(str(wh)) as w:
        preds = w.query("SELECT * FROM churn_predictions")
        metrics = w.query("SELECT metric, value FROM model_metrics WHERE model = 'churn'")
    assert {p["month"] for p in preds} == {D(2022, 3, 1), D(2022, 4, 1), D(2022, 5, 1)}
    assert all(0 <= p["churn_probability"] <= 1 and p["model_version"] == version for p in preds)
    names = {m["metric"] for m in metrics}
    assert {"roc_auc", "pr_auc", "brier", "baseline_recency_roc_auc"} <= names
    assert len(metrics) == len(names)          # forced retrain of the same version: upserted


def test_cli_train_and_predict_churn(tmp_path, capsys):
    from pipelines.cli import main

    wh, models = tmp_path / "w.duckdb", tmp_path / "models"
    rows = synthetic_rows(months=8, customers=60)
    _write_features(wh, rows)
    gt = tmp_path / "ground_truth"
    gt.mkdir()
    with open(gt / "customer_months.csv", "w") as fh:
        fh.write("customer_id,month,alive,hazard,p_churn_3m\n")
        for r in rows:
            p = 0.85 if r["recency_days"] > 60 else 0.15
            fh.write(f"{r['customer_id']},{r['month']},1,{p},{p}\n")
    assert main(["train", "churn", "--warehouse", str(wh), "--models", str(models),
                 "--n-estimators", "20", "--ground-truth", str(gt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train churn: version ")
    for line in ("all customers model", "all customers recency baseline",
                 "all customers oracle (true hazard)", "recent buyers (<= 92 d) model",
                 "recent buyers (<= 92 d) oracle (true hazard)"):
        assert line in out, out
    with open_warehouse(str(wh)) as w:
        got = {r["metric"] for r in w.query(f"SELECT metric FROM {w.ref('model_metrics')}")}
    assert {"roc_auc", "baseline_recency_roc_auc", "oracle_roc_auc",
            "roc_auc_recent_buyers", "baseline_recency_roc_auc_recent_buyers",
            "oracle_roc_auc_recent_buyers", "gains_oracle_decile_01",
            "calibration_bin_01_observed", "importance_recency_days"} <= got
    assert main(["train", "churn", "--warehouse", str(wh), "--models", str(models)]) == 0
    assert "younger than a quarter" in capsys.readouterr().out
    assert main(["predict", "churn", "--warehouse", str(wh), "--models", str(models)]) == 0
    assert "churn_predictions rows" in capsys.readouterr().out
    assert main(["predict", "churn", "--warehouse", str(wh), "--models",
                 str(tmp_path / "none")]) == 2
    assert "no churn model" in capsys.readouterr().err


@pytest.mark.emulator
def test_model_artifacts_on_gcs(tmp_path, monkeypatch):
    """gs:// model folders go through Beam's FileSystems (the local GCS emulator)."""
    from tests.emulators import GCSEmulator

    gcs = GCSEmulator(tmp_path / "gcs").start()
    try:
        gcs.activate(monkeypatch)
        gcs.create_bucket("models-bucket")
        base = "gs://models-bucket/shopstream/models"
        res = churn.train(synthetic_rows(months=8, customers=60), n_estimators=10,
                          permutation_repeats=1)
        version, meta = churn.save(base, res)
        assert artifacts.latest_version(base, "churn") == version
        bundle, meta2 = churn.load(base)
        assert meta2["version"] == version and bundle["features"] == res.bundle["features"]
        names = sorted(b.name for b in gcs.client().list_blobs("models-bucket"))
        assert names == [f"shopstream/models/churn/{version}/metadata.json",
                         f"shopstream/models/churn/{version}/model.joblib",
                         "shopstream/models/churn/LATEST"]
    finally:
        gcs.stop()


@pytest.mark.emulator
def test_cli_reads_the_ground_truth_from_gcs(tmp_path, monkeypatch, capsys):
    """`train churn --ground-truth gs://…` (a folder or the file) on the GCS emulator gives
    the oracle rows the local folder gives; a missing object is a clear error."""
    from pipelines.cli import main
    from tests.emulators import GCSEmulator

    wh = tmp_path / "w.duckdb"
    rows = synthetic_rows(months=8, customers=60)
    _write_features(wh, rows)
    text = "customer_id,month,alive,hazard,p_churn_3m\n" + "".join(
        f"{r['customer_id']},{r['month']},1,0.5,{0.85 if r['recency_days'] > 60 else 0.15}\n"
        for r in rows)
    local = tmp_path / "gt"
    local.mkdir()
    (local / "customer_months.csv").write_text(text)
    gcs = GCSEmulator(tmp_path / "gcs").start()
    try:
        gcs.activate(monkeypatch)
        gcs.upload_text("truth", "data/ground_truth/customer_months.csv", text)
        folder = "gs://truth/data/ground_truth"
        assert churn.read_oracle(folder) == churn.read_oracle(str(local))
        assert churn.read_oracle(folder + "/customer_months.csv") == churn.read_oracle(str(local))

        def oracle_metrics(gt, models):
            capsys.readouterr()
            assert main(["train", "churn", "--warehouse", str(wh), "--models", str(models),
                         "--n-estimators", "10", "--force", "--json", "--ground-truth", gt]) == 0
            m = json.loads(capsys.readouterr().out)["metrics"]
            return {k: v for k, v in m.items() if k.startswith("oracle_")}

        from_gcs = oracle_metrics(folder, tmp_path / "m1")
        assert from_gcs["oracle_coverage"] == 1.0 and "oracle_roc_auc" in from_gcs
        assert from_gcs == oracle_metrics(str(local), tmp_path / "m2")
        capsys.readouterr()
        assert main(["train", "churn", "--warehouse", str(wh), "--models", str(tmp_path / "m3"),
                     "--ground-truth", "gs://truth/nothing/here"]) == 2
        assert "no ground-truth file at gs://truth/nothing/here" in capsys.readouterr().err
    finally:
        gcs.stop()
