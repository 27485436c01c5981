"""Rankings: popularity scores → top-N per dimension, snapshots and warehouse rows.

Pure part (no pipeline needed): :func:`build_rankings`, :func:`make_snapshot`,
:func:`top10_rows`, :func:`product_engagement_rows`, :func:`warehouse_rows`.
Beam part: :class:`RankWindows` turns ``(horizon, window_end_us, {pid: Engagement})``
elements of :class:`~transforms.engagement.ProductEngagement` into
:class:`RankingSnapshot` elements for :class:`~transforms.redis_sink.WriteRankingsToRedis`.

Dimensions (SPEC §4): ``products``, ``brands``, ``subcategories``,
``products:gender:{gender}``, ``products:season:{season}``,
``products:season:{season}:gender:{gender}``. A product's score is the same in every
dimension (scaled within the whole window); brands and sub-categories score the sum of
their products' scores. Order: score descending, ties by product id (numerically) or
name, ascending — so a ranking never depends on input order.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

import apache_beam as beam
from apache_beam.metrics import Metrics

from transforms.ranking_store import dimension_key
from transforms.records import Product
from transforms.scoring import DEFAULT_WEIGHTS, FEATURES, score_products, validate_weights

Ranking = List[Tuple[str, float]]

TOP10_TABLES = ("top10_products", "top10_brands", "top10_subcategories",
                "top10_products_by_season_gender")


class RankingSnapshot(NamedTuple):
    """The rankings of one horizon as of an event time — what Redis gets, atomically.

    * ``as_of_us``: event time (µs) of the latest record counted (for a sliding window,
      capped at the window end) — the "current to" of SPEC §4;
    * ``rankings``: ``{dimension: [(member, score), ...]}`` best first (member = product
      id as text, or the brand / sub-category name);
    * ``names`` / ``brands``: product member → productDisplayName / brand, for the
      ranked products;
    * ``records``: records counted in the window; with ``as_of_us`` it orders snapshots
      of one horizon (later accumulating panes count more), see :meth:`version`;
    * ``window_end_us``: end of the sliding window (None for ``all``);
    * ``engagements`` / ``scores``: the whole window's table, for warehouse rows.
    """
    horizon: str
    as_of_us: int
    rankings: Dict[str, Ranking]
    names: Optional[Dict[str, str]] = None
    brands: Optional[Dict[str, str]] = None
    records: int = 0
    window_end_us: Optional[int] = None
    engagements: Optional[Dict[int, Any]] = None
    scores: Optional[Dict[int, float]] = None

    def version(self) -> Tuple[int, int]:
        """Newer snapshots of a horizon compare greater: ``(as_of_us, records)``."""
        return (int(self.as_of_us), int(self.records or 0))


# --------------------------------------------------------------------------- pure
def _ranked(items: Iterable[Tuple[Any, float]], top_n: Optional[int]) -> Ranking:
    ordered = sorted(items, key=lambda kv: (-kv[1], kv[0]))
    if top_n is not None:
        ordered = ordered[:top_n]
    return [(str(k), float(v)) for k, v in ordered]


def build_rankings(scores: Mapping[int, float], products: Mapping[int, Any],
                   top_n: Optional[int] = 10) -> Dict[str, Ranking]:
    """Scores per product → ``{dimension: [(member, score)]}`` (top ``top_n`` each).

    ``products`` maps product id → ``Product`` (gender, season, subCategory, brand).
    Products missing from it still rank in ``products`` but in no other dimension;
    empty gender / season / brand / subCategory values form no dimension. ``products``,
    ``brands`` and ``subcategories`` are always present (possibly empty).
    """
    products = products or {}
    groups: Dict[str, List[Tuple[int, float]]] = defaultdict(list)
    brand_scores: Dict[str, List[float]] = defaultdict(list)
    sub_scores: Dict[str, List[float]] = defaultdict(list)
    for pid, score in scores.items():
        pid = int(pid)
        groups["products"].append((pid, score))
        p = products.get(pid)
        if p is None:
            continue
        gender, season = (p.gender or "").strip(), (p.season or "").strip()
        if gender:
            groups[dimension_key("products", gender=gender)].append((pid, score))
        if season:
            groups[dimension_key("products", season=season)].append((pid, score))
        if gender and season:
            groups[dimension_key("products", gender, season)].append((pid, score))
        if (p.brand or "").strip():
            brand_scores[p.brand.strip()].append(score)
        if (p.subCategory or "").strip():
            sub_scores[p.subCategory.strip()].append(score)
    out: Dict[str, Ranking] = {"products": [], "brands": [], "subcategories": []}
    for dim in sorted(groups):
        out[dim] = _ranked(groups[dim], top_n)
    # math.fsum is exactly rounded: a sum that does not depend on the order of products.
    out["brands"] = _ranked(((b, math.fsum(v)) for b, v in brand_scores.items()), top_n)
    out["subcategories"] = _ranked(((s, math.fsum(v)) for s, v in sub_scores.items()), top_n)
    return out


def make_snapshot(horizon: str, window_end_us: Optional[int], engagements: Mapping[int, Any],
                  products: Mapping[int, Any], weights: Mapping[str, float],
                  top_n: int = 50) -> Optional[RankingSnapshot]:
    """Score and rank one window's engagement table (None for an empty table).

    ``as_of_us`` = event time of the latest record counted, capped at the window end:
    a sliding window that ends after the data (bounded input, or a quiet hour) is then
    never "newer" than the window holding the last hour of data (it counts fewer
    records at the same ``as_of_us``), so Redis is not left with a near-empty ranking.
    """
    if not engagements:
        return None
    from transforms.slices import parts_of_table, snapshot_of_parts  # slices imports top_n

    # The same two stages as the live graph (per-shard parts, then the merge), so a
    # bounded replay and the streaming graph rank identically.
    parts = parts_of_table(engagements, horizon, window_end_us, products or {}, weights, top_n)
    return snapshot_of_parts(horizon, parts, products or {}, weights, top_n)


def _snapshot_from(source: Any, products: Mapping[int, Any],
                   weights: Optional[Mapping[str, float]], top_n: int) -> RankingSnapshot:
    if isinstance(source, RankingSnapshot) or hasattr(source, "rankings"):
        return source
    snap = make_snapshot("all", None, source, products,
                         weights if weights is not None else DEFAULT_WEIGHTS, max(top_n, 10))
    return snap if snap is not None else RankingSnapshot("all", 0, {}, {}, {}, 0, None, {}, {})


def top10_rows(snapshot: RankingSnapshot, table: str, top_n: int = 10) -> List[dict]:
    """Rows of one SPEC §4 top-10 table from a snapshot (normally of horizon ``all``)."""
    names, brands = snapshot.names or {}, snapshot.brands or {}
    rk = snapshot.rankings or {}
    if table == "top10_products":
        return [{"rank": i, "product_id": int(m), "productDisplayName": names.get(m),
                 "brand": brands.get(m), "popularity_score": s}
                for i, (m, s) in enumerate(rk.get("products", [])[:top_n], start=1)]
    if table == "top10_brands":
        return [{"rank": i, "brand": m, "popularity_score": s}
                for i, (m, s) in enumerate(rk.get("brands", [])[:top_n], start=1)]
    if table == "top10_subcategories":
        return [{"rank": i, "subCategory": m, "popularity_score": s}
                for i, (m, s) in enumerate(rk.get("subcategories", [])[:top_n], start=1)]
    if table == "top10_products_by_season_gender":
        rows = []
        for dim in sorted(rk):
            parts = dim.split(":")
            if len(parts) != 5 or parts[1] != "season" or parts[3] != "gender":
                continue
            season, gender = parts[2], parts[4]
            rows.extend({"season": season, "gender": gender, "rank": i, "product_id": int(m),
                         "productDisplayName": names.get(m), "popularity_score": s}
                        for i, (m, s) in enumerate(rk[dim][:top_n], start=1))
        return rows
    raise ValueError(f"unknown top-10 table {table!r}; expected one of {', '.join(TOP10_TABLES)}")


def product_engagement_rows(source: Any, products: Mapping[int, Any],
                            weights: Optional[Mapping[str, float]] = None) -> List[dict]:
    """``product_engagement`` rows (one per product) from a snapshot or an engagement
    table ``{pid: Engagement}``; scores are recomputed with ``weights`` when given."""
    products = products or {}
    if isinstance(source, RankingSnapshot) or hasattr(source, "rankings"):
        engagements = source.engagements or {}
        scores = source.scores
    else:
        engagements, scores = source, None
    if weights is not None or scores is None:
        scores = score_products(engagements, weights if weights is not None else DEFAULT_WEIGHTS)
    rows = []
    for pid in sorted(engagements):
        e, p = engagements[pid], products.get(int(pid))
        row = {f: getattr(e, f) for f in FEATURES}
        row.update(product_id=int(pid), popularity_score=scores.get(pid, 0.0),
                   brand=p.brand if p else None, subCategory=p.subCategory if p else None,
                   gender=p.gender if p else None, season=p.season if p else None,
                   productDisplayName=p.productDisplayName if p else None)
        rows.append(row)
    return rows


def warehouse_rows(source: Any, products: Mapping[int, Any],
                   weights: Optional[Mapping[str, float]] = None,
                   top_n: int = 10) -> Dict[str, List[dict]]:
    """All rankings-derived warehouse tables from the ``all`` horizon:
    ``{table: rows}`` for the four top-10 tables and ``product_engagement``.

    ``source`` is a :class:`RankingSnapshot` or an engagement table ``{pid: Engagement}``
    (then scored with ``weights``, default :data:`~transforms.scoring.DEFAULT_WEIGHTS`).
    """
    snap = _snapshot_from(source, products, weights, top_n)
    out = {t: top10_rows(snap, t, top_n) for t in TOP10_TABLES}
    out["product_engagement"] = product_engagement_rows(snap, products, weights)
    return out


# --------------------------------------------------------------------------- Beam
class _RankFn(beam.DoFn):
    def __init__(self, weights: Mapping[str, float], top_n: int,
                 products: Optional[Mapping[int, Any]] = None):
        self.weights = dict(weights)
        self.top_n = top_n
        self.products = products
        self.snapshots = Metrics.counter("shopstream", "ranking_snapshots")

    def process(self, element, products=None):
        horizon, end_us, table = element
        prods = products if products is not None else (self.products or {})
        snap = make_snapshot(horizon, end_us, table, prods, self.weights, self.top_n)
        if snap is not None:
            self.snapshots.inc()
            yield snap


def _keyed_product(p):
    if isinstance(p, Product):
        return [(p.id, p)]
    if isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], Product):
        return [(int(p[0]), p[1])]
    return []  # dead letters or anything else: not a product


class RankWindows(beam.PTransform):
    """``(horizon, window_end_us, {pid: Engagement})`` → :class:`RankingSnapshot`.

    ``products`` is the product table as a side input: an ``AsDict`` view of
    ``(id, Product)``, a PCollection of ``Product`` (or ``(id, Product)``) records, or a
    plain dict (tests). ``weights`` are popularity weights (default
    :data:`~transforms.scoring.DEFAULT_WEIGHTS`); ``top_n`` members kept per ranking.
    """

    def __init__(self, products: Union[beam.pvalue.AsSideInput, beam.PCollection,
                                       Mapping[int, Any], None],
                 weights: Optional[Mapping[str, float]] = None, top_n: int = 50,
                 label: Optional[str] = None):
        super().__init__(label)
        self.products = products
        self.weights = validate_weights(dict(weights if weights is not None else DEFAULT_WEIGHTS))
        if int(top_n) < 1:
            raise ValueError(f"top_n must be at least 1, got {top_n}")
        self.top_n = int(top_n)

    def expand(self, pcoll):
        products = self.products
        if isinstance(products, beam.pvalue.AsSideInput):
            return pcoll | "Rank" >> beam.ParDo(_RankFn(self.weights, self.top_n), products=products)
        if isinstance(products, beam.pvalue.PCollection):
            view = beam.pvalue.AsDict(products | "KeyProducts" >> beam.FlatMap(_keyed_product))
            return pcoll | "Rank" >> beam.ParDo(_RankFn(self.weights, self.top_n), products=view)
        return pcoll | "Rank" >> beam.ParDo(
            _RankFn(self.weights, self.top_n, dict(products or {})))
