"""The batch job and the churn commands against a BigQuery API (``bqemulator`` on
loopback): the same tables as on DuckDB, window replacement via DML, reruns without
duplicates, model training reading ``churn_features`` back from BigQuery."""
from __future__ import annotations

import datetime as dt

import pytest


from tests.test_batch_pipeline import fake_churn_model, run_cli, write_dataset
from transforms.warehouse import open_warehouse

pytestmark = pytest.mark.emulator




def test_batch_job_on_bigquery_reruns_without_duplicates(bq_target, tmp_path):
    data = write_dataset(tmp_path / "data")
    models = tmp_path / "models"
    version = fake_churn_model(models)
    for _ in range(2):
        rc, out = run_cli("--input", str(data), "--warehouse", bq_target, "--models", str(models))
        assert rc == 0, out
        assert "sales_facts=6 " in out and "churn_predictions=" in out
    with open_warehouse(bq_target) as wh:
        def count(t):
            return wh.query(f"SELECT COUNT(*) AS n FROM {wh.ref(t)}")[0]["n"]

        assert count("sales_facts") == 6
        assert count("daily_sales") == 6
        n_churn = count("churn_features")
        assert n_churn > 0
        unlabelled = wh.query(f"SELECT COUNT(*) AS n FROM {wh.ref('churn_features')} "
                              f"WHERE churned IS NULL")[0]["n"]
        preds = wh.query(f"SELECT * FROM {wh.ref('churn_predictions')}")
        assert len(preds) == unlabelled and {p["model_version"] for p in preds} == {version}
        assert count("dead_letter") == 10                  # appended by each run
        jan = wh.query(f"SELECT * FROM {wh.ref('churn_features')} WHERE customer_id = 1 "
                       f"AND month = DATE '2021-01-01'")[0]
        assert jan["frequency"] == 1 and jan["churned"] == 0
        facts = wh.query(f"SELECT province, latitude FROM {wh.ref('sales_facts')} "
                         f"WHERE booking_id = 'b1'")
        assert {f["province"] for f in facts} == {"DKI Jakarta"}

    # predict from BigQuery with the same model: upserts the same keys
    from models import churn

    out = churn.run_predict(bq_target, str(models))
    assert out["rows"] == len(preds)
    with open_warehouse(bq_target) as wh:
        assert wh.query(f"SELECT COUNT(*) AS n FROM {wh.ref('churn_predictions')}")[0]["n"] \
            == len(preds)
        months = {r["month"] for r in wh.query(
            f"SELECT DISTINCT month FROM {wh.ref('churn_predictions')}")}
    assert max(months) == dt.date(2021, 6, 1)


def test_train_churn_reads_features_from_bigquery(bq_target, tmp_path):
    from models import churn
    from tests.test_models_churn import synthetic_rows

    with open_warehouse(bq_target) as wh:
        wh.write("churn_features", synthetic_rows(months=8, customers=40), "replace")
    out = churn.run_train(bq_target, str(tmp_path / "models"), n_estimators=20,
                          permutation_repeats=1)
    assert out["status"] == "trained" and out["metrics"]["eval_rows"] > 0
    with open_warehouse(bq_target) as wh:
        rows = wh.query(f"SELECT metric, model_version FROM {wh.ref('model_metrics')}")
    assert {r["model_version"] for r in rows} == {out["version"]}
    assert {"roc_auc", "brier", "baseline_recency_roc_auc"} <= {r["metric"] for r in rows}
