"""Model quality against the generator's ground truth (a small generated data set).

* churn: ROC-AUC on the later time slice ≥ 0.80 and above the recency-only baseline;
* popularity: the trained weights rank the 200 most popular products (by the latent
  popularity the generator drew) with Spearman ≥ 0.8, scoring each product over the
  whole data's engagement (SPEC §2, computed from the click stream by
  ``models.popularity.engagement_from_events``).

The churn features come from ``batch.churn_features.churn_features_in_memory`` — the
same functions the Beam job runs (``test_batch_pipeline`` checks the job's table equals
them) — to keep this file well under a minute.
"""
from __future__ import annotations

import csv

import pytest

from batch.churn_features import churn_features_in_memory
from models import churn
from models import popularity as pop
from transforms import records

CUSTOMERS, PRODUCTS, DAYS, SEED = 1500, 400, 540, 3


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    generate = pytest.importorskip("pipelines.generate").generate
    out = tmp_path_factory.mktemp("quality")
    generate(str(out), customers=CUSTOMERS, products=PRODUCTS, days=DAYS, seed=SEED,
             progress=False)

    def read(kind):
        return [r for r in records.read_csv_records(str(out / f"{kind}.csv"), kind)
                if not isinstance(r, records.DeadLetter)]

    return {"dir": out, "transactions": read("transactions"),
            "click_stream": read("click_stream"), "customer": read("customer")}


@pytest.mark.slow
def test_churn_model_beats_recency_on_the_later_slice(generated):
    rows = churn_features_in_memory(generated["transactions"], generated["click_stream"],
                                    generated["customer"])
    res = churn.train(rows, permutation_repeats=2)
    m = res.metrics
    print("churn metrics:", {k: round(v, 4) for k, v in m.items()})
    assert res.metadata["eval_months"][0] > res.metadata["window_end"]
    assert m["roc_auc"] >= 0.80
    assert m["roc_auc"] > m["baseline_recency_roc_auc"]
    assert m["brier"] < 0.25


@pytest.mark.slow
def test_popularity_weights_rank_products_by_latent_popularity(generated):
    from scipy.stats import spearmanr

    clicks, txns = generated["click_stream"], generated["transactions"]
    per_period = pop.engagement_from_events(clicks, "2w")
    pop.add_purchases(per_period, txns, "2w")
    last = pop.last_complete_period(max(e.event_time_us for e in clicks), "2w")
    res = pop.train(per_period, "2w", last)
    print("popularity weights:", res.weights, "metrics:",
          {k: round(v, 4) for k, v in res.metrics.items()})

    whole = pop.engagement_from_events(clicks)
    pop.add_purchases(whole, txns)
    scores = pop.score({pid: v for (pid, _), v in whole.items()}, res.weights)
    with open(generated["dir"] / "ground_truth" / "products.csv", newline="") as fh:
        latent = {int(r["product_id"]): float(r["latent_popularity"]) for r in csv.DictReader(fh)}
    top = sorted(latent, key=lambda p: -latent[p])[:200]
    rho = spearmanr([latent[p] for p in top], [scores.get(p, 0.0) for p in top]).statistic
    print("top-200 Spearman:", round(rho, 4))
    assert rho >= 0.8
    assert res.metrics["rmse"] < res.metrics["baseline_rmse"]
