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


@pytest.fixture
def gcs_and_bigquery(tmp_path, monkeypatch):
    """A GCS emulator and a BigQuery emulator whose load jobs read that GCS's objects
    (gs:// URIs), both active in this process (Beam's gs:// filesystem, bigquery.Client)."""
    from google.cloud import bigquery

    from tests.emulators import (
        BigQueryEmulator,
        GCSEmulator,
        anonymous_google_auth,
        patch_bigquery_client_for_emulator,
    )

    (tmp_path / "gcs").mkdir()
    (tmp_path / "bq").mkdir()
    gcs = GCSEmulator(tmp_path / "gcs").start()
    bqe = BigQueryEmulator(tmp_path / "bq", gcs_root=gcs.objects_root).start()
    gcs.activate(monkeypatch)
    anonymous_google_auth(monkeypatch, bqe.project)
    patch_bigquery_client_for_emulator(monkeypatch)
    monkeypatch.setattr(bigquery, "Client", lambda *a, **k: bqe.client())
    yield gcs, bqe
    bqe.stop()
    gcs.stop()


@pytest.mark.slow
def test_batch_template_run_loads_gcs_staging_with_load_jobs_and_one_merge(
        gcs_and_bigquery, tmp_path):
    """The batch template's job run for real (DirectRunner): input and staging on
    gs://, the in-job load step loads each staged table with load_table_from_uri and
    replaces the run's window with one MERGE; rows outside the window stay, stale rows
    inside it go, and the staging folder is deleted."""
    import uuid

    from pipelines.launch import launch
    from tests.emulators import PROJECT
    from transforms.warehouse import open_warehouse

    gcs, bqe = gcs_and_bigquery
    data = write_dataset(tmp_path / "data")
    gcs.upload_dir(data, "batch-bkt", "data")
    gcs.create_bucket("batch-bkt")
    target = f"bq://{PROJECT}.t_{uuid.uuid4().hex[:8]}"
    with open_warehouse(target) as wh:  # an old row outside the window, a stale one inside
        wh.write("daily_sales", [
            {"date": dt.date(2019, 1, 1), "masterCategory": "old", "subCategory": "x",
             "brand": "b", "payment_method": "p", "province": "q", "orders": 1,
             "units": 1, "revenue": 1, "promo_amount": 0},
            {"date": dt.date(2021, 1, 15), "masterCategory": "stale", "subCategory": "x",
             "brand": "b", "payment_method": "p", "province": "q", "orders": 1,
             "units": 1, "revenue": 1, "promo_amount": 0}], "append")
    p, result = launch("batch", ["--runner=DirectRunner", "--input=gs://batch-bkt/data",
                                 f"--warehouse={target}", "--staging=gs://batch-bkt/staging"])
    result.wait_until_finish()
    with open_warehouse(target) as wh:
        cats = {r["masterCategory"] for r in wh.query(
            f"SELECT DISTINCT masterCategory FROM {wh.ref('daily_sales')}")}
        facts = wh.query(f"SELECT COUNT(*) AS n FROM {wh.ref('sales_facts')}")[0]["n"]
        tables = {t.table_id for t in wh.client.list_tables(wh.dataset)}
    assert "old" in cats and "stale" not in cats and len(cats) > 1, cats
    assert facts == 6
    assert not [t for t in tables if t.startswith("_staging_")], tables
    left = [b.name for b in gcs.client().list_blobs("batch-bkt", prefix="staging/")]
    assert left == [], left
