"""Model quality against the simulator's ground truth, on the demo size (1500 customers,
400 products, 400 days) and three seeds.

* churn: on the later time slice the model sits between the floor (the recency baseline)
  and the ceiling (the oracle: the true probability of the label) — overall and for
  recent buyers;
* popularity: the trained weights rank products by latent popularity, and the weighted
  score predicts the next period's purchases better than add-to-cart counts alone.

Churn features come from ``batch.churn_features.churn_features_in_memory`` — the functions
the Beam job runs (``test_batch_pipeline`` checks the job's table equals them).
"""
from __future__ import annotations

import csv
import time

import pytest

from batch.churn_features import churn_features_in_memory
from models import churn
from models import popularity as pop
from transforms import records
from transforms.simulator import generate

CUSTOMERS, PRODUCTS, DAYS = 1500, 400, 400      # the Makefile's DEMO_GENERATE
SEEDS = (7, 8, 9)

pytestmark = pytest.mark.slow


def _read(out, kind):
    return [r for r in records.read_csv_records(str(out / f"{kind}.csv"), kind)
            if not isinstance(r, records.DeadLetter)]


@pytest.fixture(scope="module", params=SEEDS, ids=lambda s: f"seed{s}")
def churn_metrics(request, tmp_path_factory):
    began = time.perf_counter()
    out = tmp_path_factory.mktemp(f"quality{request.param}")
    generate(str(out), customers=CUSTOMERS, products=PRODUCTS, days=DAYS, seed=request.param,
             workers=2)
    rows = churn_features_in_memory(_read(out, "transactions"), _read(out, "click_stream"),
                                    _read(out, "customer"))
    res = churn.train(rows, n_estimators=150, permutation_repeats=1,
                      oracle=churn.read_oracle(str(out / "ground_truth")))
    m = res.metrics
    print(f"seed {request.param} ({time.perf_counter() - began:.0f} s): "
          + " ".join(f"{k}={m[k]:.4f}" for k in sorted(m) if "roc_auc" in k))
    assert res.metadata["eval_months"][0] > res.metadata["window_end"]
    return m


def test_churn_model_between_recency_and_the_oracle(churn_metrics):
    m = churn_metrics
    assert m["oracle_coverage"] == 1.0
    assert m["oracle_roc_auc"] > m["roc_auc"] > m["baseline_recency_roc_auc"]
    assert m["oracle_roc_auc_recent_buyers"] > m["roc_auc_recent_buyers"]
    # measured floor of what the features capture today (see the xfail below)
    assert m["roc_auc_recent_buyers"] >= m["baseline_recency_roc_auc_recent_buyers"] + 0.05
    assert m["brier"] < 0.15


@pytest.mark.xfail(strict=True, reason="issue #13 targets not reached: on these seeds the "
                   "model is +0.078..+0.089 above recency on recent buyers (target +0.10), "
                   "0.064..0.084 below the oracle there (target 0.06) and 0.025..0.034 below "
                   "it overall (target 0.015). A Pareto/NBD P(alive) adds nothing (alone it "
                   "ranks like recency). Trained on 9x the customers and even given the "
                   "simulator's latent per-customer parameters it stays 0.021..0.024 below "
                   "the oracle overall: the oracle knows which customers already churned "
                   "(about half the rows) and the living ones' current visit intensity, "
                   "which the data cannot show")
def test_churn_model_reaches_the_issue_13_targets(churn_metrics):
    m = churn_metrics
    assert m["roc_auc_recent_buyers"] >= m["baseline_recency_roc_auc_recent_buyers"] + 0.10
    assert m["roc_auc_recent_buyers"] >= m["oracle_roc_auc_recent_buyers"] - 0.06
    assert m["roc_auc"] >= m["oracle_roc_auc"] - 0.015


@pytest.fixture(scope="module")
def popularity_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("popularity")
    generate(str(out), customers=CUSTOMERS, products=PRODUCTS, days=DAYS, seed=SEEDS[0],
             workers=2)
    return out


def test_popularity_weights_rank_products_and_predict_the_next_period(popularity_data):
    from scipy.stats import spearmanr

    out = popularity_data
    clicks, txns = _read(out, "click_stream"), _read(out, "transactions")
    per_period = pop.engagement_from_events(clicks, "2w")
    pop.add_purchases(per_period, txns, "2w")
    last = pop.last_complete_period(max(e.event_time_us for e in clicks), "2w")
    res = pop.train(per_period, "2w", last, demand=pop.read_demand(str(out / "ground_truth"), "2w"))
    m = res.metrics
    print("popularity weights:", res.weights, "metrics:", {k: round(v, 4) for k, v in m.items()})
    assert m["rmse"] < m["baseline_rmse"]
    # the ranking on later periods: it predicts next-period purchases about as well as
    # add-to-cart counts (most of the weight is on them) and the true demand is the ceiling
    assert m["ranking_eval_periods"] >= 2
    assert m["ranking_spearman"] > 0.5 and m["ranking_ndcg_at_10"] > 0.8
    assert m["ranking_spearman"] >= m["baseline_add_to_cart_spearman"] - 0.03
    assert m["true_demand_spearman"] > max(m["ranking_spearman"],
                                           m["baseline_add_to_cart_spearman"]) + 0.05
    assert m["true_demand_ndcg_at_10"] > m["ranking_ndcg_at_10"]

    whole = pop.engagement_from_events(clicks)
    pop.add_purchases(whole, txns)
    scores = pop.score({pid: v for (pid, _), v in whole.items()}, res.weights)
    with open(out / "ground_truth" / "products.csv", newline="") as fh:
        latent = {int(r["product_id"]): float(r["latent_popularity"]) for r in csv.DictReader(fh)}
    top = sorted(latent, key=lambda p: -latent[p])[:200]
    rho = spearmanr([latent[p] for p in top], [scores.get(p, 0.0) for p in top]).statistic
    print("top-200 Spearman:", round(rho, 4))
    assert rho >= 0.7
