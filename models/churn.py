"""The churn model: a calibrated RandomForestClassifier on ``churn_features``.

Training (``shopstream train churn``):

* rows: the labelled months of ``churn_features`` (churned not NULL); features are the
  columns of ``FEATURES`` present in the table (rates, shares, trends: never ids or the
  label);
* time split, never random: the last ``eval_months`` labelled months are the evaluation
  slice; the forest learns from the labelled months that end ``gap_months`` (default 2)
  before it. A row of month E is scored at the end of E, when the labels of months up to
  E-3 are complete (their horizon ends with E), so two months between the slices is
  what a model trained at the start of the evaluation could have known; on short data
  the gap shrinks (``gap_months`` in metadata says what was used);
* the forest (monotone in the features of ``MONOTONE``) is calibrated (Platt/sigmoid by
  default) on cross-validated predictions over those months (``calibrate_on="pool"``), or
  fitted on the earlier part and calibrated on the latest ``calib_fraction`` of them
  (``calibrate_on="slice"``);
* metrics on the evaluation slice, overall and for recent buyers (a purchase in the last
  ``RECENT_DAYS``): ROC-AUC, PR-AUC, Brier of the model; the same for the recency
  baseline (score = recency_days, the floor) and, given the ground truth of generated
  data, for the oracle (the true probability of the label, the ceiling); the model's
  calibration curve and everyone's cumulative gains; permutation importance (ROC-AUC
  drop) — all of them rows of ``model_metrics``;
* the artifact ``{models}/churn/{version}/model.joblib`` + ``metadata.json``, ``LATEST``
  updated last.

Quarterly retraining: training is a no-op while the current model is younger than a
quarter — its labelled data ends less than 3 months before the newest labelled month
and (by the wall clock) it was trained less than 91 days ago or no newer month exists —
unless ``force``.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from models import artifacts
from transforms.table_io import read_table
from transforms.warehouse import open_warehouse

log = logging.getLogger(__name__)

MODEL = "churn"
MODEL_FILE = "model.joblib"
#: Feature columns in their preferred order (those present in the table are used).
#: Levels that grow with the calendar (frequency_total, monetary_total, tenure_days,
#: active_months) stay in the table but are not features: the evaluation slice is later
#: than the training slice, so a tree would meet values it never saw; rates, shares and
#: trends carry the same information and keep their meaning over time.
FEATURES = (
    "recency_days", "recency_ratio", "days_since_last_session", "purchase_rate",
    "expected_missed_purchases", "months_since_first_purchase", "frequency", "monetary",
    "frequency_3m",
    "frequency_trend_3m", "monetary_3m", "monetary_mom", "session_count",
    "session_count_3m", "session_count_mom", "session_trend_3m", "avg_session_minutes",
    "avg_session_events", "failed_bookings", "failed_bookings_3m", "failed_share_3m",
    "failed_bookings_mom", "promo_share", "promo_share_3m", "avg_shipment_fee_3m",
    "abandoned_sessions", "abandoned_share_3m", "abandoned_share",
    "failed_bookings_recent", "promo_share_shrunk", "max_interpurchase_days",
    "median_interpurchase_days", "recency_over_max_gap", "recency_over_median_gap",
    "session_rate", "session_rate_ratio_3m", "purchase_rate_ratio_3m",
)
#: ``train(estimator=...)``: the SPEC's forest (default) or gradient boosting, kept to
#: compare on the later slice (it did not beat the forest on the demo data).
ESTIMATORS = MappingProxyType({"forest": "RandomForestClassifier",
                               "boosting": "HistGradientBoostingClassifier"})
#: Never features: identifiers, the label and label helpers.
EXCLUDED = frozenset({"customer_id", "month", "churned", "as_of"})
REQUIRED = ("recency_days", "frequency", "monetary", "session_count", "avg_session_minutes")
MISSING = -1.0                  # NULL features (no sessions, unknown age) become this
RECENT_DAYS = 92               # "recent buyers": a successful purchase in the last ~3 months
SCORERS = ("model", "baseline_recency", "oracle")   # the model, the floor, the ceiling
CURVE_BINS = 10                # calibration bins and gains deciles
#: Features whose effect on churn has a known direction (+1 more churn, -1 less): the
#: forest is constrained to it, which keeps it sane on the few labelled months a short
#: history offers and where the later slice holds values the earlier one never had.
MONOTONE = MappingProxyType({
    "recency_days": 1, "recency_ratio": 1, "days_since_last_session": 1,
    "expected_missed_purchases": 1, "failed_bookings_3m": 1, "failed_share_3m": 1,
    "purchase_rate": -1, "frequency_3m": -1,
})
QUARTER_MONTHS = 3
QUARTER_DAYS = 91


class SplitPlan(NamedTuple):
    fit: List[dt.date]
    calib: List[dt.date]
    eval: List[dt.date]
    gap_months: int


class TrainResult(NamedTuple):
    bundle: Dict[str, Any]          # what model.joblib holds
    metrics: Dict[str, float]
    metadata: Dict[str, Any]


# --------------------------------------------------------------------------- data
def _months(values) -> List[dt.date]:
    return sorted({v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)[:10])
                   for v in values})


def _add_months(d: dt.date, n: int) -> dt.date:
    m = d.year * 12 + d.month - 1 + n
    return dt.date(m // 12, m % 12 + 1, 1)


def _months_between(a: dt.date, b: dt.date) -> int:
    return (b.year - a.year) * 12 + b.month - a.month


def to_columns(table) -> Dict[str, list]:
    """An Arrow table, a list of row dicts or a dict of columns → dict of lists."""
    if hasattr(table, "to_pydict"):
        return table.to_pydict()
    if isinstance(table, Mapping):
        return {k: list(v) for k, v in table.items()}
    rows = list(table)
    if not rows:
        return {}
    return {k: [r.get(k) for r in rows] for k in rows[0]}


def feature_list(columns: Sequence[str]) -> List[str]:
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ValueError(f"churn_features lacks required column(s): {', '.join(missing)}")
    return [c for c in FEATURES if c in columns and c not in EXCLUDED]


def matrix(cols: Mapping[str, list], features: Sequence[str],
           index: Optional[np.ndarray] = None) -> np.ndarray:
    """Feature matrix (float64, NULL → MISSING) of the rows in ``index`` (all if None)."""
    out = []
    for f in features:
        col = np.array([MISSING if v is None else float(v) for v in cols[f]], dtype=np.float64)
        col[~np.isfinite(col)] = MISSING
        out.append(col if index is None else col[index])
    return np.column_stack(out) if out else np.empty((0, 0))


# --------------------------------------------------------------------------- split
def plan_split(labelled_months: Sequence[dt.date], eval_months: int = 3,
               gap_months: int = 3, calib_fraction: float = 0.25,
               calib_gap_months: int = 0) -> SplitPlan:
    """Fit / calibration / evaluation months in time order with ``gap_months`` between
    consecutive slices (shrunk when the data is too short; never overlapping)."""
    months = _months(labelled_months)
    if len(months) < 3:
        raise ValueError(
            f"churn training needs at least 3 labelled months (fit, calibration, "
            f"evaluation); churn_features has {len(months)}: run the batch job on a longer "
            f"history")
    n_eval = max(1, min(eval_months, len(months) // 3))
    ev = months[-n_eval:]
    for gap in range(gap_months, -1, -1):
        pool = [m for m in months if m <= _add_months(ev[0], -(gap + 1))]
        if len(pool) < 2:
            continue
        n_cal = max(1, int(round(len(pool) * calib_fraction)))
        n_cal = min(n_cal, len(pool) - 1)
        for cgap in range(min(calib_gap_months, gap), -1, -1):
            calib = pool[-n_cal:]
            fit = [m for m in pool if m <= _add_months(calib[0], -(cgap + 1))]
            if fit:
                return SplitPlan(fit, calib, ev, gap)
    raise ValueError("could not split the labelled months in time")  # pragma: no cover


# --------------------------------------------------------------------------- train
def _auc(y, s) -> Optional[float]:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, s)) if len(set(y.tolist())) == 2 else None


def positive_proba(model, X: np.ndarray) -> np.ndarray:
    classes = list(model.classes_)
    proba = model.predict_proba(X)
    return proba[:, classes.index(1)] if 1 in classes else np.zeros(len(X))


def read_oracle(path: str) -> Dict[Tuple[int, dt.date], float]:
    """(customer_id, month) → p_churn_3m from a generated data set's ground truth
    (``ground_truth/customer_months.csv``, or the folder holding it; local or gs://)."""
    import csv

    path, fh = artifacts.open_text(path, "customer_months.csv")
    with fh:
        try:
            return {(int(r["customer_id"]), dt.date.fromisoformat(r["month"])):
                    float(r["p_churn_3m"]) for r in csv.DictReader(fh)}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path} is not a ground-truth customer_months.csv "
                             f"(customer_id, month, p_churn_3m): {exc}") from exc


def oracle_scores(oracle: Mapping[Tuple[int, dt.date], float], customer_ids: Sequence,
                  months: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The oracle's score of each row in ``index`` (NaN where the ground truth has none)."""
    return np.array([oracle.get((int(customer_ids[i]), months[i]), np.nan) for i in index],
                    dtype=np.float64)


def evaluate(y: np.ndarray, scores: Mapping[str, np.ndarray],
             recent: np.ndarray) -> Dict[str, float]:
    """ROC-AUC and PR-AUC of every scorer (Brier of the probabilities: model, oracle),
    overall and for recent buyers. Names: ``roc_auc`` for the model,
    ``baseline_recency_roc_auc``, ``oracle_roc_auc``; ``..._recent_buyers``."""
    from sklearn.metrics import average_precision_score, brier_score_loss

    out: Dict[str, float] = {}
    for part, mask in (("", np.ones(len(y), dtype=bool)), ("_recent_buyers", recent)):
        yy = y[mask]
        if part:
            out["eval_rows_recent_buyers"] = float(mask.sum())
            if len(yy):
                out["eval_positive_rate_recent_buyers"] = float(yy.mean())
        if len(set(yy.tolist())) < 2:
            continue
        for name, s in scores.items():
            prefix = "" if name == "model" else f"{name}_"
            out[f"{prefix}roc_auc{part}"] = _auc(yy, s[mask])
            out[f"{prefix}pr_auc{part}"] = float(average_precision_score(yy, s[mask]))
            if name != "baseline_recency":
                out[f"{prefix}brier{part}"] = float(brier_score_loss(yy, s[mask], pos_label=1))
    return out


def curves(y: np.ndarray, scores: Mapping[str, np.ndarray],
           bins: int = CURVE_BINS) -> Dict[str, float]:
    """The report's curves as metric rows: the model's calibration (equal-count bins of
    its probability: mean predicted, observed churn rate, rows) and, for every scorer,
    the cumulative gains (share of all churners among the top k tenths by score)."""
    out: Dict[str, float] = {}
    p = scores["model"]
    for i, part in enumerate(np.array_split(np.argsort(p, kind="stable"), bins), start=1):
        if len(part):
            out[f"calibration_bin_{i:02d}_predicted"] = float(p[part].mean())
            out[f"calibration_bin_{i:02d}_observed"] = float(y[part].mean())
            out[f"calibration_bin_{i:02d}_rows"] = float(len(part))
    positives = float(y.sum())
    n = len(y)
    for name, s in scores.items():
        order = np.argsort(-s, kind="stable")
        captured = np.cumsum(y[order])
        for k in range(1, bins + 1):
            top = int(round(n * k / bins))
            out[f"gains_{name}_decile_{k:02d}"] = (float(captured[top - 1]) / positives
                                                   if top and positives else 0.0)
    return out


def train(table, *, eval_months: int = 3, gap_months: int = 2, calib_fraction: float = 0.25,
          calib_gap_months: int = 0,
          n_estimators: int = 300, min_samples_leaf: int = 10, max_depth: Optional[int] = None,
          max_features: Any = 0.4, calibrate_on: str = "pool", monotone: bool = True,
          calibration: str = "sigmoid", seed: int = 0, n_jobs: int = 2,
          estimator: str = "forest", learning_rate: float = 0.05, max_leaf_nodes: int = 15,
          features: Optional[Sequence[str]] = None,
          permutation_repeats: int = 5, max_importance_rows: int = 20_000,
          oracle: Optional[Mapping[Tuple[int, dt.date], float]] = None) -> TrainResult:
    """Train, calibrate and evaluate on ``table`` (churn_features rows, any shape
    :func:`to_columns` accepts). ``oracle`` maps (customer_id, month) to the true
    probability of the label (generated data's ground truth): its scores on the same
    evaluation rows are the ceiling reported beside the model. ``features`` overrides the
    columns of ``FEATURES`` (comparisons); ``estimator`` is a key of ``ESTIMATORS``
    (``n_estimators`` is the boosting's iterations, ``learning_rate`` and
    ``max_leaf_nodes`` are boosting only). Pure: no I/O."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.frozen import FrozenEstimator
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import brier_score_loss, log_loss

    cols = to_columns(table)
    if not cols or not cols.get("month"):
        raise ValueError("churn_features is empty: run `shopstream batch` first")
    if features is None:
        features = feature_list(list(cols))
    else:
        features = list(features)
        bad = [f for f in features if f in EXCLUDED or f not in cols]
        if bad or "recency_days" not in features:
            raise ValueError(f"churn features must be columns of churn_features other than "
                             f"{', '.join(sorted(EXCLUDED))}, with recency_days: {bad}")
    months = np.array([m if isinstance(m, dt.date) else dt.date.fromisoformat(str(m)[:10])
                       for m in cols["month"]], dtype=object)
    labels = cols["churned"]
    labelled = np.array([v is not None for v in labels])
    if not labelled.any():
        raise ValueError("churn_features has no labelled months yet (churned is NULL "
                         "everywhere): the data must cover at least 4 complete months")
    plan = plan_split(months[labelled].tolist(), eval_months, gap_months, calib_fraction,
                      calib_gap_months)
    y_all = np.array([-1 if v is None else int(v) for v in labels])

    def rows_in(ms):
        s = set(ms)
        return np.flatnonzero(labelled & np.array([m in s for m in months]))

    idx = {"fit": rows_in(plan.fit), "calib": rows_in(plan.calib), "eval": rows_in(plan.eval)}
    X = {k: matrix(cols, features, v) for k, v in idx.items()}
    y = {k: y_all[v] for k, v in idx.items()}
    for k in ("fit", "calib"):
        if len(set(y[k].tolist())) < 2:
            raise ValueError(f"the {k} slice has a single class ({len(y[k])} rows): "
                             f"not enough history to train a churn model")
    fingerprint = hashlib.sha256()
    for k in ("fit", "calib"):
        fingerprint.update(np.ascontiguousarray(X[k]).tobytes())
        fingerprint.update(np.ascontiguousarray(y[k]).tobytes())
    fingerprint.update(json.dumps([features, estimator, n_estimators, min_samples_leaf,
                                   max_depth, calibration, seed, _sklearn_version()]).encode())
    cst = [MONOTONE.get(f, 0) for f in features] if monotone else None
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown churn estimator {estimator!r}: one of {', '.join(ESTIMATORS)}")
    if estimator == "boosting":
        forest = HistGradientBoostingClassifier(
            max_iter=n_estimators, learning_rate=learning_rate, max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf, l2_regularization=1.0, max_depth=max_depth,
            early_stopping=False, random_state=seed, monotonic_cst=cst)
    else:
        forest = RandomForestClassifier(
            n_estimators=n_estimators, min_samples_leaf=min_samples_leaf, max_depth=max_depth,
            max_features=max_features, n_jobs=n_jobs, random_state=seed, monotonic_cst=cst)
    if calibrate_on == "pool":
        # the forest sees every labelled month before the gap; the calibration uses
        # cross-validated predictions on them (ensemble=False: one forest in the end)
        pool_X = np.vstack([X["fit"], X["calib"]])
        pool_y = np.concatenate([y["fit"], y["calib"]])
        model = CalibratedClassifierCV(forest, method=calibration, cv=3, ensemble=False)
        model.fit(pool_X, pool_y)
        forest = model.calibrated_classifiers_[0].estimator
    else:
        forest.fit(X["fit"], y["fit"])
        model = CalibratedClassifierCV(FrozenEstimator(forest), method=calibration)
        model.fit(X["calib"], y["calib"])

    p_eval = positive_proba(model, X["eval"])
    p_raw = positive_proba(forest, X["eval"])
    ye = y["eval"]
    rec = X["eval"][:, features.index("recency_days")]
    metrics: Dict[str, float] = {
        "train_rows": float(len(y["fit"])), "calib_rows": float(len(y["calib"])),
        "eval_rows": float(len(ye)),
        "eval_positive_rate": float(ye.mean()) if len(ye) else float("nan"),
        "train_positive_rate": float(y["fit"].mean()),
    }
    scores = {"model": p_eval, "baseline_recency": rec}
    if oracle is not None:
        o = oracle_scores(oracle, cols["customer_id"], months, idx["eval"])
        metrics["oracle_coverage"] = float(np.isfinite(o).mean()) if len(o) else 0.0
        if len(o) and np.isfinite(o).all():
            scores["oracle"] = o
        else:
            log.warning("ground truth covers %.1f%% of the evaluation rows: no oracle",
                        100 * metrics["oracle_coverage"])
    metrics.update(evaluate(ye, scores, rec <= RECENT_DAYS))
    both = len(set(ye.tolist())) == 2
    if both:
        metrics["roc_auc_uncalibrated"] = _auc(ye, p_raw)
        metrics["log_loss"] = float(log_loss(ye, np.clip(p_eval, 1e-6, 1 - 1e-6),
                                             labels=[0, 1]))
        metrics.update(curves(ye, scores))
    if len(ye):
        metrics["brier_uncalibrated"] = float(brier_score_loss(ye, p_raw, pos_label=1))
        metrics["mean_predicted"] = float(p_eval.mean())

    importance: Dict[str, float] = {}
    if both:
        rng = np.random.default_rng(seed)
        take = (rng.choice(len(ye), max_importance_rows, replace=False)
                if len(ye) > max_importance_rows else np.arange(len(ye)))
        pi = permutation_importance(model, X["eval"][take], ye[take], scoring="roc_auc",
                                    n_repeats=permutation_repeats, random_state=seed, n_jobs=1)
        importance = {f: round(float(v), 6) for f, v in
                      sorted(zip(features, pi.importances_mean), key=lambda kv: -kv[1])}
        metrics.update({f"importance_{f}": v for f, v in importance.items()})

    bundle = {"model": model, "features": features, "missing": MISSING,
              "positive_class": 1, "sklearn": _sklearn_version()}
    metadata = {
        "model_type": "%s + CalibratedClassifierCV(%s)" % (ESTIMATORS[estimator], calibration),
        "features": features,
        "window_start": plan.fit[0].isoformat(),
        "window_end": plan.calib[-1].isoformat(),
        "data_end": plan.eval[-1].isoformat(),
        "fit_months": [plan.fit[0].isoformat(), plan.fit[-1].isoformat()],
        "calibration_months": [plan.calib[0].isoformat(), plan.calib[-1].isoformat()],
        "eval_months": [plan.eval[0].isoformat(), plan.eval[-1].isoformat()],
        "gap_months": plan.gap_months,
        "gap_months_requested": gap_months,
        "params": {"estimator": estimator, "n_estimators": n_estimators,
                   "min_samples_leaf": min_samples_leaf,
                   "max_depth": max_depth, "calibration": calibration, "seed": seed},
        "metrics": metrics,
        "permutation_importance_roc_auc": importance,
        "sklearn": _sklearn_version(),
        "content_sha256": fingerprint.hexdigest(),
    }
    return TrainResult(bundle, metrics, metadata)


def _sklearn_version() -> str:
    import sklearn

    return sklearn.__version__


# --------------------------------------------------------------------------- artifacts
def dump_bundle(bundle: Mapping[str, Any]) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(dict(bundle), buf, compress=3)
    return buf.getvalue()


def save(models_dir: str, result: TrainResult, trained_at: Optional[dt.datetime] = None
         ) -> Tuple[str, Dict[str, Any]]:
    """Write the artifact; returns (version, metadata)."""
    trained_at = trained_at or artifacts.utcnow()
    files = {MODEL_FILE: dump_bundle(result.bundle)}
    meta = result.metadata
    version = artifacts.make_version(dt.date.fromisoformat(meta["window_start"]),
                                     dt.date.fromisoformat(meta["window_end"]), files,
                                     meta.get("content_sha256"))
    meta = dict(meta, trained_at=trained_at.isoformat())
    artifacts.save(models_dir, MODEL, version, files, meta)
    return version, dict(meta, version=version)


def load(models_dir: str, version: Optional[str] = None) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(bundle, metadata) of ``version`` or of LATEST."""
    import joblib

    meta = artifacts.load_metadata(models_dir, MODEL, version)
    data = artifacts.load_file(models_dir, MODEL, MODEL_FILE, meta["version"])
    return joblib.load(io.BytesIO(data)), meta


def predict_rows(bundle: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Churn probabilities of churn_features rows (dicts) with a loaded bundle."""
    if not rows:
        return np.zeros(0)
    features = bundle["features"]
    cols = {f: [r.get(f) for r in rows] for f in features}
    return positive_proba(bundle["model"], matrix(cols, features))


def prediction_rows(bundle, version: str, rows: Sequence[Mapping[str, Any]],
                    scored_at: Optional[dt.datetime] = None) -> List[Dict[str, Any]]:
    scored_at = scored_at or artifacts.utcnow()
    probs = predict_rows(bundle, rows)
    return [{"customer_id": r["customer_id"], "month": r["month"],
             "churn_probability": float(p), "model_version": version, "scored_at": scored_at}
            for r, p in zip(rows, probs)]


# --------------------------------------------------------------------------- quarterly
def retrain_due(current: Optional[Mapping[str, Any]], newest_labelled_month: dt.date,
                now: Optional[dt.datetime] = None) -> Tuple[bool, str]:
    """Is a new model due? (quarterly: by data time, or by wall clock when newer data
    exists). Returns (due, reason)."""
    if not current:
        return True, "no churn model yet"
    now = now or artifacts.utcnow()
    data_end = dt.date.fromisoformat(str(current.get("data_end") or current["window_end"])[:10])
    newer = _months_between(data_end, newest_labelled_month)
    trained_at = dt.datetime.fromisoformat(current["trained_at"])
    if trained_at.tzinfo is None:
        trained_at = trained_at.replace(tzinfo=dt.timezone.utc)
    age_days = (now - trained_at).total_seconds() / 86_400
    version = current.get("version", "?")
    if newer >= QUARTER_MONTHS:
        return True, (f"model {version} is a quarter old: labelled data now reaches "
                      f"{newest_labelled_month:%Y-%m}, {newer} months past its {data_end:%Y-%m}")
    if age_days >= QUARTER_DAYS and newer > 0:
        return True, f"model {version} was trained {age_days:.0f} days ago and newer data exists"
    return False, (f"churn model {version} is younger than a quarter (its labelled data ends "
                   f"{data_end:%Y-%m}, the data now reaches {newest_labelled_month:%Y-%m}: "
                   f"{max(newer, 0)} month(s) newer; trained {age_days:.0f} days ago); "
                   f"nothing to do — use --force to retrain now")


def current_metadata(models_dir: str) -> Optional[Dict[str, Any]]:
    try:
        return artifacts.load_metadata(models_dir, MODEL)
    except FileNotFoundError:
        return None


# --------------------------------------------------------------------------- commands
def run_train(warehouse: str, models_dir: str, force: bool = False, now=None,
              ground_truth: Optional[str] = None, **train_kwargs) -> Dict[str, Any]:
    """``shopstream train churn``: returns a summary dict (``status`` trained|skipped).
    ``ground_truth`` (a generated data set's ground_truth/) adds the oracle."""
    with open_warehouse(warehouse) as wh:
        table = read_table(wh, "churn_features")
        cols = to_columns(table)
        labelled = [m for m, c in zip(cols.get("month", []), cols.get("churned", []))
                    if c is not None]
        if not labelled:
            raise ValueError("churn_features has no labelled rows: run `shopstream batch` "
                             "over at least 4 complete months of data first")
        newest = _months(labelled)[-1]
        current = current_metadata(models_dir)
        due, reason = retrain_due(current, newest, now)
        if not due and not force:
            return {"status": "skipped", "message": reason,
                    "version": current.get("version") if current else None}
        oracle = read_oracle(ground_truth) if ground_truth else None
        result = train(cols, oracle=oracle, **train_kwargs)
        version, meta = save(models_dir, result, trained_at=now)
        trained_at = dt.datetime.fromisoformat(meta["trained_at"])
        written = wh.write("model_metrics",
                           artifacts.metric_rows(MODEL, version, trained_at, result.metrics),
                           "upsert")
    return {"status": "trained", "version": version, "metrics": result.metrics,
            "reason": "forced" if (force and not due) else reason,
            "metrics_rows": written, "metadata": meta}


def run_predict(warehouse: str, models_dir: str, version: Optional[str] = None) -> Dict[str, Any]:
    """``shopstream predict churn``: score the unlabelled (latest) months."""
    bundle, meta = load(models_dir, version)
    with open_warehouse(warehouse) as wh:
        table = read_table(wh, "churn_features", "churned IS NULL")
        rows = table.to_pylist()
        preds = prediction_rows(bundle, meta["version"], rows)
        n = wh.write("churn_predictions", preds, "upsert") if preds else 0
    months = sorted({r["month"] for r in rows})
    return {"version": meta["version"], "rows": n,
            "months": [m.isoformat() for m in months]}
