"""Popularity scoring (SPEC §2 "Popularity"): weights and the scaled weighted sum.

    score(p) = Σ_f  w_f · x_f(p) / max_q x_f(q)        (0/0 counts as 0)

over the six engagement features f, where q runs over the products being ranked together
(one horizon window). See :func:`score_products` for why max-scaling.

Weights come from (first match wins, :func:`resolve_weights`):

1. an explicit weights file (``--weights FILE``, local or ``gs://``);
2. the latest popularity model artifact: ``{models_dir}/popularity/LATEST`` holds the
   version, ``{models_dir}/popularity/{version}/weights.json`` the weights;
3. :data:`DEFAULT_WEIGHTS`.

A weights file is a JSON object mapping exactly the six feature names to non-negative
numbers, not all zero (SPEC §4). No Beam import here: the CLI and the API use this too.
"""
from __future__ import annotations

import json
import math
import os
import posixpath
from typing import Any, Dict, Mapping, Optional, Tuple

#: The engagement features, in SPEC order (also the field order of ``Engagement``).
FEATURES = ("click_count", "item_detail_count", "add_to_cart_count", "homepage_count",
            "total_dwell_seconds", "purchases")

#: Used when neither a weights file nor a trained popularity model is available. Hand-set
#: to favour intent: a unit bought (0.30) > an add to cart (0.25) > looking at the item
#: (detail 0.15, click 0.15) > time spent (0.10) > a homepage impression (0.05). They sum
#: to 1, like XGBoost feature importances, so trained and default scores look alike.
DEFAULT_WEIGHTS: Dict[str, float] = {
    "click_count": 0.15,
    "item_detail_count": 0.15,
    "add_to_cart_count": 0.25,
    "homepage_count": 0.05,
    "total_dwell_seconds": 0.10,
    "purchases": 0.30,
}

#: Largest accepted weight: a score is at most the sum of the weights and must stay finite
#: (and exact enough to rank by) in Redis, JSON and the warehouse.
MAX_WEIGHT = 1e12

POPULARITY_DIR = "popularity"
LATEST_FILE = "LATEST"
WEIGHTS_FILE = "weights.json"


# --------------------------------------------------------------------------- weights
def validate_weights(obj: Any, source: str = "weights") -> Dict[str, float]:
    """Check a decoded weights object; returns ``{feature: float}`` in FEATURES order.

    Raises ValueError naming ``source`` and the problem: not an object, missing or
    unknown keys, a value that is not a finite non-negative number, or all zero.
    """
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: weights must be a JSON object mapping "
                         f"{', '.join(FEATURES)} to numbers, got {type(obj).__name__}")
    missing = [f for f in FEATURES if f not in obj]
    unknown = sorted(str(k) for k in obj if k not in FEATURES)
    problems = []
    if missing:
        problems.append(f"missing weight(s) {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown key(s) {', '.join(unknown)} "
                        f"(expected exactly {', '.join(FEATURES)})")
    if problems:
        raise ValueError(f"{source}: " + "; ".join(problems))
    out: Dict[str, float] = {}
    for f in FEATURES:
        v = obj[f]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"{source}: weight {f} must be a number, got {v!r}")
        v = float(v)
        if not math.isfinite(v):
            raise ValueError(f"{source}: weight {f} must be finite, got {v!r}")
        if v < 0:
            raise ValueError(f"{source}: weight {f} must be non-negative, got {v!r}")
        if v > MAX_WEIGHT:  # scores sum weights: 1e308 + 1e308 overflows to inf
            raise ValueError(f"{source}: weight {f} is too large ({v:g} > {MAX_WEIGHT:g}); "
                             f"weights are relative, scale them down")
        out[f] = v
    if not any(out.values()):
        raise ValueError(f"{source}: all weights are zero; at least one must be positive")
    return out


def _is_remote(path: str) -> bool:
    return "://" in path


def _read_text(path: str) -> str:
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems  # gs:// etc.; lazy: Beam is heavy

        with FileSystems.open(path) as f:
            return f.read().decode("utf-8")
    with open(path, encoding="utf-8") as f:
        return f.read()


def _exists(path: str) -> bool:
    if _is_remote(path):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)
    return os.path.exists(path)


def _join(base: str, *parts: str) -> str:
    if _is_remote(base):
        return posixpath.join(base.rstrip("/"), *parts)
    return os.path.join(base, *parts)


def load_weights(path: str) -> Dict[str, float]:
    """Read and validate a weights JSON file (local path or ``gs://``)."""
    try:
        text = _read_text(path)
    except FileNotFoundError:
        raise ValueError(f"weights file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot read weights file {path}: {exc}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"weights file {path} is not valid JSON: {exc}") from None
    return validate_weights(obj, f"weights file {path}")


def _load_artifact_weights(path: str) -> Dict[str, float]:
    """A model artifact's weights.json: the SPEC mapping, or ``{"weights": {...}, ...}``
    (an artifact may carry metadata beside the weights)."""
    try:
        obj = json.loads(_read_text(path))
    except ValueError as exc:
        raise ValueError(f"popularity model weights {path} are not valid JSON: {exc}") from None
    if isinstance(obj, Mapping) and isinstance(obj.get("weights"), Mapping):
        obj = obj["weights"]
    return validate_weights(obj, f"popularity model weights {path}")


def latest_model_weights(models_dir: str) -> Optional[Tuple[Dict[str, float], str]]:
    """``(weights, version)`` of the latest popularity artifact, or None if there is none.

    A LATEST that names a version without a readable, valid weights.json is an error
    (ValueError), not a silent fallback to defaults.
    """
    latest = _join(models_dir, POPULARITY_DIR, LATEST_FILE)
    if not _exists(latest):
        return None
    version = _read_text(latest).strip()
    if not version or "/" in version or "\\" in version or version in (".", ".."):
        raise ValueError(f"{latest} does not hold a valid model version: {version!r}")
    path = _join(models_dir, POPULARITY_DIR, version, WEIGHTS_FILE)
    if not _exists(path):
        raise ValueError(f"{latest} names version {version}, but {path} does not exist")
    return _load_artifact_weights(path), version


def resolve_weights(weights_file: Optional[str] = None, models_dir: Optional[str] = None
                    ) -> Tuple[Dict[str, float], str]:
    """``(weights, source)``: an explicit file wins, then the latest popularity model in
    ``models_dir``, then :data:`DEFAULT_WEIGHTS`. ``source`` says which, for logs:
    ``"file PATH"``, ``"popularity model VERSION (DIR)"`` or ``"defaults"``."""
    if weights_file:
        return load_weights(weights_file), f"file {weights_file}"
    if models_dir:
        found = latest_model_weights(models_dir)
        if found is not None:
            weights, version = found
            return weights, f"popularity model {version} ({models_dir})"
        return dict(DEFAULT_WEIGHTS), f"defaults (no popularity model in {models_dir})"
    return dict(DEFAULT_WEIGHTS), "defaults"


# --------------------------------------------------------------------------- scores
def _feature(e: Any, f: str) -> float:
    v = e.get(f) if isinstance(e, Mapping) else getattr(e, f)
    return float(v or 0)


def score_products(engagements: Mapping[int, Any], weights: Mapping[str, float]
                   ) -> Dict[int, float]:
    """Popularity per product: ``Σ_f w_f · x_f / max(x_f over engagements)``.

    Scaling choice — divide each feature by its maximum over the set being ranked:

    * it removes units: dwell seconds (hundreds per product) and purchases (a few units)
      both land in [0, 1], so a weight means the same thing for every feature and the
      trained importances (XGBoost importances are scale-free) apply as intended — the
      original pipeline applied weights to raw values and dwell swamped everything;
    * it is linear, so within a feature twice the activity is twice the contribution
      (log scaling would make one click worth almost as much as ten), and a ranking is
      invariant to changing a feature's unit (seconds → minutes);
    * it needs no history or fitted statistics: any window is scored on its own, and a
      score is bounded by Σ w (the top product of every feature would score Σ w).
      Outliers are bounded too: dwell per event is capped by the visit gap.

    Features that are zero for every product contribute 0 (no division by zero).
    Deterministic: the result depends only on the input values, not on dict order.
    Accepts ``Engagement`` tuples or dicts with the feature names (warehouse rows).
    """
    w = validate_weights(weights, "weights")
    pids = sorted(engagements)
    values = {pid: [_feature(engagements[pid], f) for f in FEATURES] for pid in pids}
    maxima = [max((values[pid][i] for pid in pids), default=0.0) for i in range(len(FEATURES))]
    weights_ = [w[f] for f in FEATURES]
    return {pid: math.fsum(wf * (x / m) for x, wf, m in zip(values[pid], weights_, maxima)
                           if m > 0)
            for pid in pids}
