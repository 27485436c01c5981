"""Popularity scoring (SPEC §2): weights files, weight resolution, scaled scores."""
from __future__ import annotations

import json
import random

import pytest

from transforms.engagement import Engagement
from transforms.scoring import (
    DEFAULT_WEIGHTS,
    FEATURES,
    load_weights,
    resolve_weights,
    score_products,
    validate_weights,
)

GOOD = {"click_count": 0.1, "item_detail_count": 0.2, "add_to_cart_count": 0.3,
        "homepage_count": 0.0, "total_dwell_seconds": 0.1, "purchases": 0.3}


def write_json(path, obj):
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)
    return str(path)


# --------------------------------------------------------------------------- weights
def test_load_weights_reads_the_spec_format(tmp_path):
    w = load_weights(write_json(tmp_path / "w.json", {**GOOD, "purchases": 3}))
    assert list(w) == list(FEATURES)
    assert w["purchases"] == 3.0 and isinstance(w["purchases"], float)


@pytest.mark.parametrize("obj, message", [
    ({k: v for k, v in GOOD.items() if k != "purchases"}, "missing weight.*purchases"),
    ({**GOOD, "revenue": 1}, "unknown key.*revenue"),
    ({**GOOD, "click_count": -0.5}, "click_count must be non-negative"),
    ({**GOOD, "click_count": "0.5"}, "click_count must be a number"),
    ({**GOOD, "click_count": True}, "click_count must be a number"),
    ({**GOOD, "click_count": None}, "click_count must be a number"),
    ({f: 0 for f in FEATURES}, "all weights are zero"),
    ([1, 2, 3], "must be a JSON object"),
    ("{not json", "not valid JSON"),
    ('{"click_count": NaN, "item_detail_count": 1, "add_to_cart_count": 1, '
     '"homepage_count": 1, "total_dwell_seconds": 1, "purchases": 1}', "must be finite"),
])
def test_load_weights_rejects_bad_files_with_clear_messages(tmp_path, obj, message):
    path = write_json(tmp_path / "bad.json", obj)
    with pytest.raises(ValueError, match=message) as info:
        load_weights(path)
    assert path in str(info.value)  # the message names the file


def test_load_weights_missing_file(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_weights(str(tmp_path / "nope.json"))


def _artifact(models, version, obj):
    d = models / "popularity" / version
    d.mkdir(parents=True)
    write_json(d / "weights.json", obj)
    (models / "popularity" / "LATEST").write_text(version + "\n")


def test_resolve_weights_order_file_then_model_then_defaults(tmp_path):
    models = tmp_path / "models"
    assert resolve_weights() == (DEFAULT_WEIGHTS, "defaults")
    w, source = resolve_weights(models_dir=str(models))  # no model trained yet
    assert w == DEFAULT_WEIGHTS and source.startswith("defaults")

    _artifact(models, "20240101T000000Z", {**GOOD, "purchases": 0.9})
    w, source = resolve_weights(models_dir=str(models))
    assert w["purchases"] == 0.9 and "20240101T000000Z" in source

    explicit = write_json(tmp_path / "mine.json", {**GOOD, "purchases": 7})
    w, source = resolve_weights(weights_file=explicit, models_dir=str(models))
    assert w["purchases"] == 7.0 and source == f"file {explicit}"


def test_resolve_weights_accepts_artifact_with_metadata(tmp_path):
    _artifact(tmp_path, "v2", {"weights": GOOD, "trained_at": "2024-01-01", "rows": 5})
    w, source = resolve_weights(models_dir=str(tmp_path))
    assert w == {k: float(v) for k, v in GOOD.items()} and "v2" in source


def test_resolve_weights_broken_artifact_is_an_error_not_a_silent_default(tmp_path):
    (tmp_path / "popularity").mkdir()
    (tmp_path / "popularity" / "LATEST").write_text("v9")
    with pytest.raises(ValueError, match="v9"):
        resolve_weights(models_dir=str(tmp_path))
    (tmp_path / "popularity" / "LATEST").write_text("../../etc")
    with pytest.raises(ValueError, match="valid model version"):
        resolve_weights(models_dir=str(tmp_path))


def test_default_weights_are_valid():
    assert validate_weights(DEFAULT_WEIGHTS) == DEFAULT_WEIGHTS
    assert abs(sum(DEFAULT_WEIGHTS.values()) - 1.0) < 1e-12


# --------------------------------------------------------------------------- scores
def test_dwell_seconds_no_longer_swamp_the_score():
    """A product browsed for a long time but never bought must not beat a product that
    sells. Raw weighted sums (the original pipeline) let dwell seconds win."""
    engagements = {
        1: Engagement(click_count=1, total_dwell_seconds=1800.0),           # long browse
        2: Engagement(click_count=10, item_detail_count=6, add_to_cart_count=4,
                      purchases=5, total_dwell_seconds=90.0),                # sells
        3: Engagement(click_count=2, total_dwell_seconds=30.0),
    }
    raw = {pid: sum(DEFAULT_WEIGHTS[f] * getattr(e, f) for f in FEATURES)
           for pid, e in engagements.items()}
    assert max(raw, key=raw.get) == 1  # the original problem, reproduced
    scores = score_products(engagements, DEFAULT_WEIGHTS)
    assert max(scores, key=scores.get) == 2
    # dwell's share of any score is bounded by its weight
    assert scores[1] <= DEFAULT_WEIGHTS["total_dwell_seconds"] + DEFAULT_WEIGHTS["click_count"] / 10 + 1e-12


def test_scores_are_scale_free_and_bounded():
    rng = random.Random(5)
    engagements = {pid: Engagement(rng.randint(0, 50), rng.randint(0, 20), rng.randint(0, 9),
                                   rng.randint(0, 30), rng.random() * 5000, rng.randint(0, 4))
                   for pid in range(1, 60)}
    scores = score_products(engagements, DEFAULT_WEIGHTS)
    # dwell in minutes instead of seconds: same scores (max-scaling removes units)
    minutes = {p: e._replace(total_dwell_seconds=e.total_dwell_seconds / 60)
               for p, e in engagements.items()}
    again = score_products(minutes, DEFAULT_WEIGHTS)
    assert all(abs(scores[p] - again[p]) < 1e-12 for p in scores)
    assert all(0.0 <= s <= sum(DEFAULT_WEIGHTS.values()) + 1e-12 for s in scores.values())
    # linear within a feature: twice the activity, twice the contribution
    only_clicks = {1: Engagement(click_count=4), 2: Engagement(click_count=2)}
    s = score_products(only_clicks, GOOD)
    assert s == {1: GOOD["click_count"], 2: GOOD["click_count"] / 2}


def test_top_product_of_every_feature_scores_the_weight_sum():
    engagements = {1: Engagement(5, 5, 5, 5, 50.0, 5), 2: Engagement(1, 2, 3, 4, 5.0, 1)}
    assert score_products(engagements, GOOD)[1] == pytest.approx(sum(GOOD.values()))


def test_scores_are_deterministic_and_handle_zero_features():
    engagements = {3: Engagement(click_count=2), 1: Engagement(click_count=1), 2: Engagement()}
    a = score_products(engagements, GOOD)
    b = score_products(dict(reversed(list(engagements.items()))), GOOD)
    assert a == b and list(a) == [1, 2, 3]
    assert a[2] == 0.0  # purchases etc. are zero for everyone: no division by zero
    assert score_products({}, GOOD) == {}
    # dict rows (warehouse) work as well as Engagement tuples
    rows = {1: {f: 1 for f in FEATURES}}
    assert score_products(rows, GOOD)[1] == pytest.approx(sum(GOOD.values()))


def test_score_products_validates_weights():
    with pytest.raises(ValueError, match="all weights are zero"):
        score_products({1: Engagement(1)}, {f: 0 for f in FEATURES})


@pytest.mark.emulator
def test_resolve_weights_from_gcs(tmp_path, monkeypatch):
    """gs:// weights files and model folders go through Beam's FileSystems (the local
    GCS emulator)."""
    from tests.emulators import GCSEmulator

    gcs = GCSEmulator(tmp_path / "gcs").start()
    try:
        gcs.activate(monkeypatch)
        bucket = gcs.create_bucket("weights-bucket")
        bucket.blob("models/popularity/v7/weights.json").upload_from_string(json.dumps(GOOD))
        bucket.blob("models/popularity/LATEST").upload_from_string("v7\n")
        bucket.blob("hand/w.json").upload_from_string(json.dumps({**GOOD, "purchases": 2}))
        w, source = resolve_weights(models_dir="gs://weights-bucket/models")
        assert w == {k: float(v) for k, v in GOOD.items()} and source.startswith("popularity model v7")
        w, source = resolve_weights(weights_file="gs://weights-bucket/hand/w.json")
        assert w["purchases"] == 2.0
        w, source = resolve_weights(models_dir="gs://weights-bucket/empty")
        assert source.startswith("defaults")
    finally:
        gcs.stop()
