"""``shopstream train popularity|churn`` and ``shopstream predict churn``.

* ``train churn --warehouse T --models DIR [--force]`` — the churn RandomForest on
  ``churn_features`` (time split, calibrated, versioned); a no-op while the current
  model is younger than a quarter unless ``--force``.
* ``train popularity --warehouse T --models DIR [--period 2w] [--input DIR]`` — XGBoost
  importances → the popularity weights file, from ``events_enriched`` + ``sales_facts``
  (or, with ``--input``, straight from the click stream and transactions files).
* ``predict churn --warehouse T --models DIR`` — churn_predictions for the unlabelled
  (latest) months of ``churn_features`` with the LATEST (or ``--version``) model.

Models live in a local folder or on GCS (``gs://``): ``{models}/{model}/{version}/``
and ``{models}/{model}/LATEST``; metrics go to the ``model_metrics`` table.
"""
from __future__ import annotations

import argparse
import json
import sys

from models import churn, popularity


def _fmt(metrics, keys) -> str:
    return " ".join(f"{k}={metrics[k]:.4f}" for k in keys if metrics.get(k) is not None)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--warehouse", required=True, help="DuckDB file path or bq://PROJECT.DATASET")
    p.add_argument("--models", required=True, help="models folder (local or gs://)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def register(subparsers, name: str = "train") -> argparse.ArgumentParser:
    if name == "predict":
        parser = subparsers.add_parser("predict", help="score customers with the current "
                                       "churn model", description=__doc__.split("\n\n")[0])
        sub = parser.add_subparsers(dest="model", metavar="MODEL")
        pc = sub.add_parser("churn", help="write churn_predictions for the latest months")
        _common(pc)
        pc.add_argument("--version", default=None, help="model version (default: LATEST)")
        pc.set_defaults(func=run_predict_churn)
        parser.set_defaults(func=lambda a: _missing_model(parser))
        return parser
    parser = subparsers.add_parser("train", help="train the popularity or churn model",
                                   description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="model", metavar="MODEL")
    tc = sub.add_parser("churn", help="RandomForest churn model on churn_features "
                        "(quarterly: a no-op while the current model is younger)")
    _common(tc)
    tc.add_argument("--force", action="store_true",
                    help="retrain even if the current model is younger than a quarter")
    tc.add_argument("--eval-months", type=int, default=3,
                    help="latest labelled months held out for evaluation (default 3)")
    tc.add_argument("--gap-months", type=int, default=2,
                    help="months between the training and evaluation slices (default 2: "
                         "what a model trained when the evaluation's first month is "
                         "scored could have known)")
    tc.add_argument("--ground-truth", default=None, metavar="PATH",
                    help="a generated data set's ground_truth/ folder (or its "
                         "customer_months.csv), local or gs://: also report the oracle, "
                         "the true probability of the label, on the same rows")
    tc.add_argument("--n-estimators", type=int, default=300)
    tc.add_argument("--calibration", choices=("sigmoid", "isotonic"), default="sigmoid")
    tc.add_argument("--seed", type=int, default=0)
    tc.set_defaults(func=run_train_churn)
    tp = sub.add_parser("popularity", help="XGBoost importances → popularity weights")
    _common(tp)
    tp.add_argument("--period", choices=("week", "2w", "month"), default="2w",
                    help="engagement period; the label is the next period's purchases")
    tp.add_argument("--input", default=None,
                    help="train from click_stream/transactions files in this folder instead "
                         "of events_enriched (in memory: small data sets)")
    tp.add_argument("--importance", choices=("gain", "total_gain", "weight", "cover"),
                    default="gain", help="XGBoost importance type used as weights")
    tp.add_argument("--seed", type=int, default=0)
    tp.add_argument("--ground-truth", default=None, metavar="PATH",
                    help="a generated data set's ground_truth/ folder (or its "
                         "product_demand.csv), local or gs://: also rank by the true "
                         "demand")
    tp.set_defaults(func=run_train_popularity)
    parser.set_defaults(func=lambda a: _missing_model(parser))
    return parser


def _missing_model(parser) -> int:
    parser.print_help(sys.stderr)
    return 2


def run_train_churn(args) -> int:
    try:
        out = churn.run_train(args.warehouse, args.models, force=args.force,
                              eval_months=args.eval_months, gap_months=args.gap_months,
                              n_estimators=args.n_estimators, calibration=args.calibration,
                              seed=args.seed, ground_truth=args.ground_truth)
    except (ValueError, FileNotFoundError) as exc:
        print(f"shopstream train churn: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({k: v for k, v in out.items() if k != "metadata"}, default=str))
    elif out["status"] == "skipped":
        print(f"train churn: {out['message']}")
    else:
        m = out["metrics"]
        meta = out["metadata"]
        print(f"train churn: version {out['version']} ({out['reason']}); eval months "
              f"{meta['eval_months'][0]}..{meta['eval_months'][1]}, saved to {args.models}")
        print(churn_table(m))
    return 0


def churn_table(m) -> str:
    """Model / recency baseline / oracle side by side, overall and for recent buyers."""
    def cell(key):
        v = m.get(key)
        return f"{v:8.4f}" if v is not None else "       -"

    lines = [f"  {'':46}{'ROC-AUC':>8} {'PR-AUC':>8} {'Brier':>8}   (rows)"]
    for part, label in (("", "all customers"), ("_recent_buyers", "recent buyers (<= 92 d)")):
        rows = m.get("eval_rows" + part)
        for name, prefix in (("model", ""), ("recency baseline", "baseline_recency_"),
                             ("oracle (true hazard)", "oracle_")):
            if m.get(f"{prefix}roc_auc{part}") is None:
                continue
            suffix = f"   ({rows:,.0f})" if rows else ""
            lines.append(f"  {label + ' ' + name:<46}{cell(prefix + 'roc_auc' + part)} "
                         f"{cell(prefix + 'pr_auc' + part)} {cell(prefix + 'brier' + part)}"
                         + suffix)
    return "\n".join(lines)


def run_train_popularity(args) -> int:
    try:
        out = popularity.run_train(args.warehouse, args.models, period=args.period,
                                   input_dir=args.input, importance_type=args.importance,
                                   seed=args.seed, ground_truth=args.ground_truth)
    except (ValueError, FileNotFoundError) as exc:
        print(f"shopstream train popularity: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, default=str))
    else:
        w = " ".join(f"{k}={v:.3f}" for k, v in out["weights"].items())
        print(f"train popularity: version {out['version']} from {out['source']}; weights {w}; "
              + _fmt(out["metrics"], ("rmse", "baseline_rmse", "spearman", "weights_spearman"))
              + f"; saved to {args.models}")
        print(popularity_table(out["metrics"]))
    return 0


def popularity_table(m) -> str:
    """Weighted score / add-to-cart baseline / true demand against next-period purchases."""
    n = m.get("ranking_eval_periods", 0)
    lines = [f"  next-period purchases, mean over {n:.0f} later period(s):  Spearman  NDCG@10"]
    for label, prefix in (("weighted popularity score", "ranking"),
                          ("add-to-cart count alone", "baseline_add_to_cart"),
                          ("true demand (ground truth)", "true_demand")):
        if m.get(f"{prefix}_spearman") is None and m.get(f"{prefix}_ndcg_at_10") is None:
            continue
        sp, nd = m.get(f"{prefix}_spearman"), m.get(f"{prefix}_ndcg_at_10")
        lines.append(f"  {label:<52}{sp if sp is not None else float('nan'):8.4f} "
                     f"{nd if nd is not None else float('nan'):8.4f}")
    return "\n".join(lines)


def run_predict_churn(args) -> int:
    try:
        out = churn.run_predict(args.warehouse, args.models, args.version)
    except (ValueError, FileNotFoundError) as exc:
        print(f"shopstream predict churn: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out, default=str))
    else:
        months = ", ".join(out["months"]) or "none"
        print(f"predict churn: {out['rows']:,} churn_predictions rows (months {months}) "
              f"with model {out['version']}")
    return 0
