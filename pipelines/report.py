"""`shopstream report`: one self-contained HTML analytics report from the warehouse.

It replaces the original project's Tableau dashboard. Reads only the SPEC §4 tables
(``daily_sales``, ``sales_facts``, ``top10_*``, ``product_engagement``, ``churn_features``,
``churn_predictions``, ``model_metrics``) from DuckDB or BigQuery with portable SELECTs, and
writes one HTML file with plotly.js embedded (interactive, works offline, no external URL).
A section whose tables are missing or empty says "not available yet" instead of failing.

The province map is a longitude/latitude scatter over Indonesia's bounding box, drawn on
plain axes: plotly's geographic base maps (``scatter_geo``) download their topojson from a
CDN at view time, which an offline report cannot do.
"""
from __future__ import annotations

import datetime as dt
import html
import logging
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from pipelines import report_queries as Q
from pipelines.report_queries import AGE_BANDS, Source, Unavailable, WarehouseUnavailable, num, segments
from transforms.warehouse import open_warehouse, parse_target

log = logging.getLogger(__name__)

# Indonesia's bounding box (with a small margin), for the lat/long "map".
INDONESIA_LON = (94.0, 142.0)
INDONESIA_LAT = (-11.5, 6.5)
HEADLINE_METRICS = ("roc_auc", "pr_auc", "brier")
PLOT_CONFIG = {"displaylogo": False, "responsive": True}
COLORS = {"model": "#2660c9", "baseline": "#9aa5b8", "oracle": "#2e9d5b",
          "observed": "#d9822b", "predicted": "#2660c9", "revenue": "#2660c9",
          "orders": "#d9822b"}


# --------------------------------------------------------------------------- helpers
def _fmt_int(v: Any) -> str:
    return f"{int(round(num(v))):,}"


def _fmt_pct(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _fig_html(fig, div_id: str, height: int = 420) -> str:
    fig.update_layout(height=height, margin=dict(l=60, r=30, t=70, b=50),
                      template="plotly_white", font=dict(size=12))
    return fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                       config=PLOT_CONFIG)


def _kpis(pairs: Sequence[Tuple[str, str]]) -> str:
    cells = "".join(f'<div class="kpi"><div class="v">{html.escape(v)}</div>'
                    f'<div class="k">{html.escape(k)}</div></div>' for k, v in pairs)
    return f'<div class="kpis">{cells}</div>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('' if c is None else str(c))}</td>"
                                    for c in r) + "</tr>" for r in rows)
    return f'<table class="data {cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _go():
    import plotly.graph_objects as go
    return go


# --------------------------------------------------------------------------- sections
def section_sales(src: Source) -> List[str]:
    """Revenue and orders over time (daily_sales; order counts from sales_facts)."""
    go = _go()
    from plotly.subplots import make_subplots

    src.need("daily_sales")
    daily = Q.daily_totals(src)
    orders_note = None
    if src.has("sales_facts"):
        rows = Q.orders_by_day(src)
        by_day = {str(r["date"]): int(num(r["orders"])) for r in rows}
        orders = [by_day.get(str(r["date"]), 0) for r in daily]
    else:
        orders = [int(num(r["orders"])) for r in daily]
        orders_note = ("Orders are summed over daily_sales breakdown rows (sales_facts is not "
                       "available), so an order spanning several categories counts more than once.")
    dates = [r["date"] for r in daily]
    revenue = [num(r["revenue"]) for r in daily]

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=dates, y=revenue, name="revenue (IDR)",
                         marker_color=COLORS["revenue"], opacity=0.75), secondary_y=False)
    fig.add_trace(go.Scatter(x=dates, y=orders, name="orders", mode="lines",
                             line=dict(color=COLORS["orders"], width=1.5)), secondary_y=True)
    fig.update_layout(title="Daily revenue and orders", hovermode="x unified",
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02,
                                  yanchor="bottom"),
                      xaxis=dict(rangeslider=dict(visible=True), type="date"))
    fig.update_yaxes(title_text="revenue (IDR)", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title_text="orders", secondary_y=True, showgrid=False, rangemode="tozero",
                     tickmode="auto", tickformat=",d")
    parts = [_kpis([
        ("revenue (IDR)", _fmt_int(sum(revenue))),
        ("orders", _fmt_int(sum(orders))),
        ("units", _fmt_int(sum(num(r["units"]) for r in daily))),
        ("promo (IDR)", _fmt_int(sum(num(r["promo"]) for r in daily))),
        ("days", f"{dates[0]} → {dates[-1]}"),
    ]), _fig_html(fig, "chart-sales-daily", 460)]
    if orders_note:
        parts.append(_note(orders_note))

    cat = Q.revenue_by_category_day(src)
    monthly: Dict[str, Dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in cat:
        month = str(r["date"])[:7]
        monthly[r["category"] or "unknown"][month] += num(r["revenue"])
    months = sorted({m for c in monthly.values() for m in c})
    fig = go.Figure()
    for c in sorted(monthly, key=lambda c: -sum(monthly[c].values())):
        fig.add_trace(go.Bar(x=months, y=[monthly[c].get(m, 0.0) for m in months], name=c))
    fig.update_layout(barmode="stack", title="Monthly revenue by master category",
                      yaxis_title="revenue (IDR)")
    parts.append(_fig_html(fig, "chart-sales-category"))

    pay = Q.revenue_by_payment(src)
    fig = go.Figure(go.Bar(x=[r["payment_method"] or "unknown" for r in pay],
                           y=[num(r["revenue"]) for r in pay], marker_color=COLORS["revenue"]))
    fig.update_layout(title="Revenue by payment method", yaxis_title="revenue (IDR)")
    parts.append(_fig_html(fig, "chart-sales-payment", 360))
    return parts


def _top_from(src: Source) -> Dict[str, Tuple[List[Tuple[str, float]], str]]:
    """label → ([(name, score)], source table) for products, brands, sub-categories."""
    out: Dict[str, Tuple[List[Tuple[str, float]], str]] = {}
    pe = src.has("product_engagement")
    if src.has("top10_products"):
        rows = Q.top_products(src)
        out["products"] = ([(f"{r['productDisplayName'] or r['product_id']} (#{r['product_id']})",
                             num(r["popularity_score"])) for r in rows], "top10_products")
    elif pe:
        rows = Q.top_products_by_engagement(src)
        out["products"] = ([(f"{r['productDisplayName'] or r['product_id']} (#{r['product_id']})",
                             num(r["popularity_score"])) for r in rows], "product_engagement")
    for label, table, col in (("brands", "top10_brands", "brand"),
                              ("sub-categories", "top10_subcategories", "subCategory")):
        if src.has(table):
            rows = Q.top_names(src, table, col)
            out[label] = ([(str(r["name"]), num(r["popularity_score"])) for r in rows], table)
        elif pe:
            rows = Q.top_names_by_engagement(src, col)
            out[label] = ([(str(r["name"]), num(r["popularity_score"])) for r in rows],
                          "product_engagement")
    return out


def section_top(src: Source) -> List[str]:
    """Top products, brands and sub-categories; season × gender leaders; engagement funnel."""
    go = _go()
    tops = _top_from(src)
    if not tops:
        raise Unavailable("tables top10_products, top10_brands, top10_subcategories and "
                          "product_engagement do not exist yet (or are empty)")
    parts: List[str] = []
    for label in ("products", "brands", "sub-categories"):
        if label == "brands":
            parts.append('<div class="grid2">')
        if label not in tops:
            parts.append(f'<div><h3>Top {label}</h3>{_note("not available yet")}</div>')
            continue
        items, table = tops[label]
        items = list(reversed(items))  # best on top of a horizontal bar chart
        fig = go.Figure(go.Bar(x=[s for _, s in items], y=[n for n, _ in items],
                               orientation="h", marker_color=COLORS["model"],
                               texttemplate="%{x:.4g}", textposition="auto"))
        fig.update_layout(title=dict(text=f"Top {label}<br><sup>from {table}</sup>", y=0.97),
                          xaxis_title="popularity score", yaxis=dict(automargin=True))
        slug = label.replace("-", "")
        parts.append(f"<div>{_fig_html(fig, f'chart-top-{slug}', 420)}</div>")
    parts.append("</div>")

    if src.has("top10_products_by_season_gender"):
        rows = Q.season_gender_leaders(src)
        seasons = sorted({r["season"] for r in rows if r["season"]})
        genders = sorted({r["gender"] for r in rows if r["gender"]})
        cell = {(r["season"], r["gender"]): f"{r['productDisplayName'] or ''} (#{r['product_id']})"
                for r in rows}
        parts.append("<h3>Most popular product by season and gender</h3>")
        parts.append(_table(["season"] + genders,
                            [[s] + [cell.get((s, g), "–") for g in genders] for s in seasons],
                            "season-gender"))
    if src.has("product_engagement"):
        t = Q.engagement_totals(src)[0]
        steps = ["homepage", "click", "item_detail", "add_to_cart", "purchases"]
        fig = go.Figure(go.Bar(x=steps, y=[num(t[s]) for s in steps],
                               marker_color=[COLORS["baseline"]] * 4 + [COLORS["model"]],
                               texttemplate="%{y:,}", textposition="outside"))
        fig.update_layout(title="Engagement over all products: events carrying (or inferred "
                                "to carry) a product, and units purchased",
                          yaxis=dict(rangemode="tozero"))
        parts.append(_fig_html(fig, "chart-engagement", 340))
    return parts


def section_map(src: Source) -> List[str]:
    """Customers and revenue by province on a longitude/latitude scatter of Indonesia."""
    go = _go()
    src.need("sales_facts")
    rows = Q.province_facts(src)
    rows = [r for r in rows if r["lat"] is not None and r["lon"] is not None]
    if not rows:
        raise Unavailable("sales_facts has no rows with a province and latitude/longitude")
    rows.sort(key=lambda r: -num(r["revenue"]))
    homes = Q.customer_homes(src)
    homes = [h for h in homes if h["lat"] is not None and h["lon"] is not None]
    top_rev = max(num(r["revenue"]) for r in rows) or 1.0

    fig = go.Figure()
    if homes:
        fig.add_trace(go.Scatter(
            x=[num(h["lon"]) for h in homes], y=[num(h["lat"]) for h in homes],
            mode="markers", name="customer homes (sample)", hoverinfo="skip",
            marker=dict(size=4, color="#7d8799", opacity=0.5)))
    fig.add_trace(go.Scatter(
        x=[num(r["lon"]) for r in rows], y=[num(r["lat"]) for r in rows],
        mode="markers+text", name="province (size = revenue)",
        text=[r["province"] for r in rows], textposition="top center",
        textfont=dict(size=9),
        customdata=[[_fmt_int(r["revenue"]), _fmt_int(r["customers"]), _fmt_int(r["orders"])]
                    for r in rows],
        hovertemplate="<b>%{text}</b><br>revenue IDR %{customdata[0]}<br>"
                      "customers %{customdata[1]}<br>orders %{customdata[2]}<extra></extra>",
        marker=dict(size=[8 + 42 * math.sqrt(num(r["revenue"]) / top_rev) for r in rows],
                    color=[num(r["customers"]) for r in rows], colorscale="Blues",
                    showscale=True, colorbar=dict(title="customers"),
                    line=dict(width=1, color="#1d2330"), opacity=0.85)))
    fig.update_layout(
        title="Customers and revenue by province (longitude/latitude over Indonesia)",
        legend=dict(orientation="h", y=-0.15),
        xaxis=dict(title="longitude", range=list(INDONESIA_LON), zeroline=False),
        yaxis=dict(title="latitude", range=list(INDONESIA_LAT), zeroline=False,
                   scaleanchor="x", scaleratio=1))
    parts = [_fig_html(fig, "chart-map", 520),
             _note("Plain longitude/latitude axes over Indonesia's bounding box: plotly's "
                   "geographic base maps load their coastlines from a CDN, which an offline "
                   "report cannot reach. Grey dots are customers' home locations (a sample).")]
    fig = go.Figure(go.Bar(x=[r["province"] for r in rows], y=[num(r["revenue"]) for r in rows],
                           marker_color=COLORS["revenue"],
                           customdata=[_fmt_int(r["customers"]) for r in rows],
                           hovertemplate="%{x}<br>revenue IDR %{y:,}<br>customers %{customdata}"
                                         "<extra></extra>"))
    fig.update_layout(title="Revenue by province", yaxis_title="revenue (IDR)",
                      xaxis=dict(tickangle=-45, automargin=True))
    parts.append(_fig_html(fig, "chart-province-revenue", 420))
    return parts


def section_churn(src: Source) -> List[str]:
    """Observed churn rate and predicted churn risk, overall and by segment."""
    go = _go()
    from plotly.subplots import make_subplots

    has_f, has_p, has_sf = (src.has("churn_features"), src.has("churn_predictions"),
                            src.has("sales_facts"))
    if not has_f and not has_p:
        raise Unavailable("tables churn_features and churn_predictions do not exist yet "
                          "(or are empty)")
    parts: List[str] = []
    kpis: List[Tuple[str, str]] = []
    observed: Dict[str, Dict[str, Tuple[float, float]]] = {}
    predicted: Dict[str, Dict[str, Tuple[float, float]]] = {}

    if has_f:
        trend = Q.churn_trend(src)
        n_all = sum(num(r["n"]) for r in trend)
        kpis.append(("observed churn rate (labelled customer-months)",
                     _fmt_pct(sum(num(r["churned"]) for r in trend) / n_all if n_all else None)))
        if trend:
            fig = go.Figure(go.Scatter(
                x=[r["month"] for r in trend],
                y=[num(r["churned"]) / num(r["n"], 1) for r in trend], mode="lines+markers",
                line=dict(color=COLORS["observed"]),
                customdata=[int(num(r["n"])) for r in trend],
                hovertemplate="%{x|%Y-%m}: %{y:.1%} of %{customdata} customers<extra></extra>"))
            fig.update_layout(title="Observed churn rate by month (no purchase in the next "
                                    "3 months)", yaxis=dict(tickformat=".0%", rangemode="tozero"),
                              xaxis=dict(type="date", dtick="M1", tickformat="%b %Y"))
            parts.append(_fig_html(fig, "chart-churn-trend", 340))
        else:
            parts.append(_note("No month has a complete 3-month label horizon yet."))
        if has_sf and trend:
            rows = Q.observed_churn_by_customer(src)
            observed = segments(rows, lambda r: (num(r["churned"]), num(r["n"])))
    if has_p:
        latest = Q.latest_prediction_month(src)[0]["month"]
        stats = Q.latest_prediction_stats(src)[0]
        kpis += [(f"mean predicted churn risk ({str(latest)[:7]})", _fmt_pct(num(stats["mean_p"]))),
                 ("customers scored", _fmt_int(stats["n"])),
                 ("model version", str(stats["version"]))]
        buckets = Q.risk_buckets(src)
        counts = [0] * 20
        for r in buckets:
            counts[min(19, max(0, int(num(r["b"]))))] += int(num(r["n"]))
        fig = go.Figure(go.Bar(x=[f"{i * 5}–{i * 5 + 5}%" for i in range(20)], y=counts,
                               marker_color=COLORS["predicted"]))
        fig.update_layout(title=f"Predicted churn risk, customers scored for {str(latest)[:7]}",
                          xaxis_title="churn probability", yaxis_title="customers", bargap=0.05)
        parts.append(_fig_html(fig, "chart-churn-risk-distribution", 340))
        if has_sf:
            rows = Q.predicted_risk_by_customer(src)
            predicted = segments(rows, lambda r: (num(r["p"]), num(r["n"])))
    parts.insert(0, _kpis(kpis))

    if not has_sf:
        parts.append(_note("Churn by gender, age band and province: not available yet "
                           "(table sales_facts, which carries the customer attributes, "
                           "does not exist yet or is empty)."))
        return parts

    def bars(fig, kind: str, row: int, col: int, horizontal: bool = False, legend: bool = False):
        segs = sorted(set(observed.get(kind, {})) | set(predicted.get(kind, {})))
        if kind == "age band":
            order = [b[2] for b in AGE_BANDS] + ["unknown"]
            segs = [s for s in order if s in segs]
        elif kind == "province":
            segs.sort(key=lambda s: (predicted.get(kind, {}).get(s, (0, 0))[0]
                                     / (predicted.get(kind, {}).get(s, (0, 1))[1] or 1),
                                     s))
        for label, data, color in (("observed churn rate", observed, COLORS["observed"]),
                                   ("mean predicted risk", predicted, COLORS["predicted"])):
            if not data:
                continue
            vals = [(data[kind][s][0] / data[kind][s][1]) if data[kind].get(s, (0, 0))[1] else None
                    for s in segs]
            ns = [int(data[kind].get(s, (0, 0))[1]) for s in segs]
            kw = dict(x=vals, y=segs, orientation="h") if horizontal else dict(x=segs, y=vals)
            fig.add_trace(go.Bar(name=label, marker_color=color, showlegend=legend,
                                 legendgroup=label, customdata=ns,
                                 hovertemplate="%{" + ("y" if horizontal else "x") + "}: %{"
                                 + ("x" if horizontal else "y") + ":.1%} (n=%{customdata})"
                                 "<extra>" + label + "</extra>", **kw), row=row, col=col)

    fig = make_subplots(rows=1, cols=2, subplot_titles=("by gender", "by age band"))
    bars(fig, "gender", 1, 1, legend=True)
    bars(fig, "age band", 1, 2)
    fig.update_layout(title="Churn by segment", barmode="group",
                      legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.12,
                                  yanchor="top"))
    fig.update_yaxes(tickformat=".0%", rangemode="tozero")
    parts.append(_fig_html(fig, "chart-churn-segments", 380))
    n_prov = len(set(observed.get("province", {})) | set(predicted.get("province", {})))
    fig = make_subplots(rows=1, cols=1)
    bars(fig, "province", 1, 1, horizontal=True, legend=True)
    fig.update_layout(title="Churn by province (sorted by predicted risk)", barmode="group",
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.0,
                                  yanchor="bottom"), yaxis=dict(automargin=True))
    fig.update_xaxes(tickformat=".0%", rangemode="tozero")
    parts.append(_fig_html(fig, "chart-churn-province", max(360, 60 + 26 * n_prov)))
    parts.append(_note("Observed: share of labelled customer-months followed by three calendar "
                       "months without a successful purchase. Predicted: mean churn probability "
                       "of the latest scored month. Segments use the customer's gender, latest "
                       "age and province from sales_facts."))
    return parts


def _roc_points(metrics: Dict[str, float]) -> List[Tuple[float, float]]:
    """ROC points stored as metrics: ``roc_fpr_{i}``/``roc_tpr_{i}`` (also ``roc_curve_``
    prefixed) or ``tpr_at_fpr_{x}``."""
    import re

    fpr, tpr, pts = {}, {}, []
    for name, v in metrics.items():
        m = re.fullmatch(r"(?:roc_curve_|roc_)?(fpr|tpr)_(\d+)", name)
        if m and name.startswith("roc"):
            (fpr if m.group(1) == "fpr" else tpr)[int(m.group(2))] = v
            continue
        m = re.fullmatch(r"(?:roc_)?tpr_at_fpr_([0-9.]+)", name)
        if m:
            try:
                pts.append((float(m.group(1)), v))
            except ValueError:
                pass
    pts += [(fpr[i], tpr[i]) for i in fpr if i in tpr]
    return sorted(set(pts))


def _pair_baselines(metrics: Dict[str, float]) -> Dict[str, Tuple[str, float]]:
    """``baseline_[name_]METRIC`` rows → {METRIC: (name or "baseline", value)}, matching the
    longest model metric the baseline's name ends with (``baseline_recency_roc_auc`` →
    ``roc_auc``, baseline "recency")."""
    own = [m for m in metrics if not m.startswith("baseline_")]
    out: Dict[str, Tuple[str, float]] = {}
    for name, v in metrics.items():
        if not name.startswith("baseline_"):
            continue
        rest = name[len("baseline_"):]
        match = max((m for m in own if rest == m or rest.endswith("_" + m)), key=len, default=None)
        if match is None:
            out[rest] = ("baseline", v)
        else:
            out[match] = (rest[: -len(match)].rstrip("_") or "baseline", v)
    return out


#: metric rows drawn by their own charts (curves, importances, the oracle)
_OWN_CHARTS = ("oracle_", "gains_", "calibration_", "importance_")


def _chartable(metric: str) -> bool:
    """Scores worth a bar (not row counts or rates of the data, not curve points)."""
    return not (metric.endswith("_rows") or "_rows_" in metric or "positive_rate" in metric
                or metric.startswith(("n_", "count") + _OWN_CHARTS)
                or metric in ("mean_predicted", "oracle_coverage"))


def section_model(src: Source) -> List[str]:
    """The churn model's metrics on a later time slice, next to the baseline's."""
    go = _go()
    src.need("model_metrics")
    rows = Q.model_metrics(src)
    churn = [r for r in rows if str(r["model"]).lower() == "churn"] or \
        [r for r in rows if "churn" in str(r["model"]).lower()]
    if not churn:
        raise Unavailable("model_metrics has no rows for the churn model yet "
                          f"(models present: {', '.join(sorted({str(r['model']) for r in rows}))})")
    latest = max(churn, key=lambda r: (str(r["trained_at"] or ""), str(r["model_version"])))
    model, version = latest["model"], latest["model_version"]
    cur = {r["metric"]: num(r["value"]) for r in churn
           if r["model"] == model and r["model_version"] == version}
    roc = _roc_points(cur)
    roc_names = {n for n in cur if n.startswith(("roc_fpr", "roc_tpr", "roc_curve_"))
                 or "tpr_at_fpr" in n}
    base = _pair_baselines({n: v for n, v in cur.items() if n not in roc_names
                            and not n.startswith(_OWN_CHARTS)})
    own = {n: v for n, v in cur.items() if not n.startswith(("baseline_",) + _OWN_CHARTS)
           and n not in roc_names}
    names = [m for m in HEADLINE_METRICS + ("log_loss",) if m in own]
    names += sorted(m for m in own if m not in names and _chartable(m)
                    and (m in base or "auc" in m or "brier" in m))
    kinds = sorted({b[0] for m, b in base.items() if m in names})
    parts = [_kpis([("model", str(model)), ("version", str(version)),
                    ("trained at", str(latest["trained_at"] or "–")[:19])]
                   + [(m, f"{own[m]:.3f}") for m in HEADLINE_METRICS if m in own]
                   + [(f"baseline {base[m][0]} {m}", f"{base[m][1]:.3f}")
                      for m in HEADLINE_METRICS if m in base])]
    if names:
        fig = go.Figure()
        def label(vals):
            return ["" if v is None else f"{v:.3f}" for v in vals]

        ys = [own.get(m) for m in names]
        fig.add_trace(go.Bar(name=f"{model} model {version}", x=names, y=ys, text=label(ys),
                             marker_color=COLORS["model"], textposition="outside"))
        if base:
            ys = [base[m][1] if m in base else None for m in names]
            fig.add_trace(go.Bar(name="baseline" + (f" ({', '.join(kinds)})" if kinds else ""),
                                 x=names, y=ys, text=label(ys), marker_color=COLORS["baseline"],
                                 textposition="outside"))
        fig.update_layout(barmode="group", title="Churn model on a later time slice vs the "
                          "baseline (AUCs: higher is better; brier, log loss: lower)",
                          yaxis=dict(rangemode="tozero"),
                          legend=dict(orientation="h", x=1, xanchor="right", y=1.02,
                                      yanchor="bottom"))
        parts.append(_fig_html(fig, "chart-model-metrics", 420))
        if not base:
            parts.append(_note("No baseline_* metric rows are stored for this model version."))
    versions = sorted({(str(r["trained_at"] or ""), r["model_version"]) for r in churn
                       if r["model"] == model})
    if len(versions) > 1:
        by = {(r["model_version"], r["metric"]): num(r["value"]) for r in churn}
        fig = go.Figure([go.Scatter(x=[v for _, v in versions],
                                    y=[by.get((v, m)) for _, v in versions],
                                    mode="lines+markers", name=m)
                         for m in HEADLINE_METRICS if any((v, m) in by for _, v in versions)])
        fig.update_layout(title="Churn model metrics by version", xaxis_title="model version",
                          xaxis_type="category")
        parts.append(_fig_html(fig, "chart-model-versions", 340))
    if roc:
        xs, ys = [0.0] + [p[0] for p in roc] + [1.0], [0.0] + [p[1] for p in roc] + [1.0]
        fig = go.Figure([go.Scatter(x=xs, y=ys, mode="lines+markers", name="model",
                                    line=dict(color=COLORS["model"])),
                         go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                                    line=dict(color=COLORS["baseline"], dash="dash"))])
        fig.update_layout(title="ROC curve (later time slice)", xaxis_title="false positive rate",
                          yaxis_title="true positive rate",
                          xaxis=dict(range=[0, 1]), yaxis=dict(range=[0, 1.02]))
        parts.append(_fig_html(fig, "chart-model-roc", 420))
    else:
        parts.append(_note("ROC curve points are not stored in model_metrics; the bar chart "
                           "shows the summary metrics."))
    parts += _churn_evaluation(cur)
    parts.append("<h3>All stored model metrics</h3>")
    parts.append(_table(["model", "version", "trained at", "metric", "value"],
                        [[r["model"], r["model_version"], str(r["trained_at"])[:19], r["metric"],
                          f"{num(r['value']):.4f}"] for r in rows], "metrics"))
    return parts

def _fmt3(v: Optional[float]) -> str:
    return "–" if v is None else f"{v:.4f}"


def _churn_evaluation(values: Dict[str, float]) -> List[str]:
    """Model / recency floor / oracle ceiling side by side, calibration, gains and lift,
    feature importances: each chart only when its metric rows are stored."""
    go = _go()
    from plotly.subplots import make_subplots

    parts: List[str] = ["<h3>Model, floor and ceiling on the later time slice</h3>"]
    side = Q.churn_side_by_side(values)
    scorers = [label for _, label in Q.CHURN_SCORERS]
    present = [label for label in scorers
               if any(v is not None for _, _, s, v in side if s == label)]
    keys = list(dict.fromkeys((p, m) for p, m, _, _ in side))
    rows = [[p, m] + [_fmt3(v) for pp, mm, sc, v in side if (pp, mm) == (p, m) and sc in present]
            for p, m in keys]
    parts.append(_table(["customers", "metric"] + present, rows, "churn-eval"))
    if "oracle_roc_auc" not in values:
        parts.append(_note("No oracle rows: the ceiling exists only for generated data "
                           "(train churn --ground-truth DIR/ground_truth)."))
    fig = go.Figure()
    colors = {scorers[0]: COLORS["model"], scorers[1]: COLORS["baseline"],
              scorers[2]: COLORS["oracle"]}
    xs = [f"{m} · {p}" for p, m in keys if m != "Brier"]
    for label in present:
        ys = [v for p, m, s, v in side if s == label and m != "Brier"]
        fig.add_trace(go.Bar(name=label, x=xs, y=ys, marker_color=colors[label],
                             text=["" if v is None else f"{v:.3f}" for v in ys],
                             textposition="outside"))
    fig.update_layout(barmode="group", title="Churn model between the recency baseline and "
                      "the oracle (higher is better)", yaxis=dict(range=[0, 1.05]),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02,
                                  yanchor="bottom"))
    parts.append(_fig_html(fig, "chart-churn-eval", 420))

    bins = Q.calibration_bins(values)
    if bins:
        fig = go.Figure([
            go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfectly calibrated",
                       line=dict(color=COLORS["baseline"], dash="dash")),
            go.Scatter(x=[b[0] for b in bins], y=[b[1] for b in bins], mode="lines+markers",
                       name="model", line=dict(color=COLORS["model"]),
                       customdata=[int(b[2]) for b in bins],
                       hovertemplate="predicted %{x:.1%}, observed %{y:.1%} "
                                     "(%{customdata} rows)<extra></extra>")])
        fig.update_layout(title="Calibration: observed churn rate per bin of predicted "
                          "probability (equal-count bins)", xaxis_title="mean predicted",
                          yaxis_title="observed", xaxis=dict(range=[0, 1], tickformat=".0%"),
                          yaxis=dict(range=[0, 1.02], tickformat=".0%"))
        parts.append(_fig_html(fig, "chart-churn-calibration", 420))
    curves = Q.gains(values)
    if curves:
        names = {"model": scorers[0], "baseline_recency": scorers[1], "oracle": scorers[2]}
        fig = make_subplots(rows=1, cols=2, subplot_titles=(
            "cumulative gains: churners captured", "lift: vs contacting at random"))
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="random",
                                 line=dict(color="#c8ced8", dash="dash")), row=1, col=1)
        for key in ("model", "baseline_recency", "oracle"):
            if key not in curves:
                continue
            pts = curves[key]
            label = names[key]
            fig.add_trace(go.Scatter(x=[0.0] + [x for x, _ in pts], y=[0.0] + [y for _, y in pts],
                                     mode="lines+markers", name=label, legendgroup=label,
                                     line=dict(color=colors[label])), row=1, col=1)
            fig.add_trace(go.Bar(x=[f"top {x:.0%}" for x, _ in pts],
                                 y=[y / x if x else None for x, y in pts], name=label,
                                 legendgroup=label, showlegend=False,
                                 marker_color=colors[label]), row=1, col=2)
        fig.update_layout(title="Gains and lift on the later time slice (customers ranked by "
                          "score)", barmode="group",
                          legend=dict(orientation="h", x=0.5, xanchor="center", y=-0.18,
                                      yanchor="top"))
        fig.update_xaxes(tickformat=".0%", row=1, col=1)
        fig.update_yaxes(tickformat=".0%", row=1, col=1)
        parts.append(_fig_html(fig, "chart-churn-gains", 440))
    imp = Q.importances(values)
    if imp:
        imp = list(reversed(imp))
        fig = go.Figure(go.Bar(x=[v for _, v in imp], y=[f for f, _ in imp], orientation="h",
                               marker_color=COLORS["model"]))
        fig.update_layout(title="Feature importance: ROC-AUC lost when the feature is "
                          "shuffled (later time slice)", xaxis_title="ROC-AUC drop",
                          yaxis=dict(automargin=True))
        parts.append(_fig_html(fig, "chart-churn-importance", max(320, 60 + 22 * len(imp))))
    return parts


def section_popularity(src: Source) -> List[str]:
    """Does the popularity score predict next-period purchases? Beside carts and the truth."""
    go = _go()
    src.need("model_metrics")
    latest = Q.latest_model_metrics(Q.model_metrics(src), "popularity")
    if latest is None:
        raise Unavailable("model_metrics has no rows for the popularity model yet")
    side = Q.popularity_side_by_side(latest.values)
    if all(v is None for _, _, v in side):
        raise Unavailable(f"popularity model {latest.version} has no ranking evaluation rows "
                          "(retrain it with this version of shopstream)")
    scorers = [label for _, label in Q.POPULARITY_SCORERS]
    present = [s for s in scorers if any(v is not None for _, sc, v in side if sc == s)]
    n = latest.values.get("ranking_eval_periods")
    parts = [_kpis([("model", str(latest.model)), ("version", str(latest.version)),
                    ("evaluated periods", _fmt_int(n) if n is not None else "–")])]
    metrics = list(dict.fromkeys(m for m, _, _ in side))
    parts.append(_table(["metric"] + present,
                        [[m] + [_fmt3(v) for mm, s, v in side if mm == m and s in present]
                         for m in metrics], "popularity-eval"))
    colors = dict(zip(scorers, (COLORS["model"], COLORS["baseline"], COLORS["oracle"])))
    fig = go.Figure()
    for label in present:
        ys = [v for _, s, v in side if s == label]
        fig.add_trace(go.Bar(name=label, x=metrics, y=ys, marker_color=colors[label],
                             text=["" if v is None else f"{v:.3f}" for v in ys],
                             textposition="outside"))
    fig.update_layout(barmode="group", title="Ranking a period's products vs the next "
                      "period's purchases (mean over the later periods)",
                      yaxis=dict(range=[0, 1.05]),
                      legend=dict(orientation="h", x=1, xanchor="right", y=1.02,
                                  yanchor="bottom"))
    parts.append(_fig_html(fig, "chart-popularity-eval", 400))
    parts.append(_note("Spearman: rank correlation over all products active in the period. "
                       "NDCG@10: how much of the next period's purchases the top 10 hold, "
                       "against the best possible top 10. The true demand is the simulator's "
                       "expected purchases (generated data only): the ceiling."))
    return parts


SECTIONS: List[Tuple[str, str, Callable[[Source], List[str]]]] = [
    ("sales", "Revenue and orders over time", section_sales),
    ("top", "Top products, brands and sub-categories", section_top),
    ("map", "Customers and revenue by province", section_map),
    ("churn", "Churn rate and predicted churn risk by segment", section_churn),
    ("model", "Churn model quality", section_model),
    ("popularity", "Popularity model quality", section_popularity),
]
ALL_TABLES = ("daily_sales", "sales_facts", "top10_products", "top10_brands",
              "top10_subcategories", "top10_products_by_season_gender", "product_engagement",
              "churn_features", "churn_predictions", "model_metrics")

#: The report's stylesheet, inlined into the HTML (the file stays self-contained).
_CSS = (Path(__file__).parent / "web" / "report.css").read_text()


def build_report(target_or_wh, generated_at: Optional[dt.datetime] = None) -> str:
    """The report's HTML for a warehouse TARGET (or an open warehouse)."""
    import plotly
    from plotly.offline import get_plotlyjs

    own = isinstance(target_or_wh, str)
    if own:
        kind, *rest = parse_target(target_or_wh)
        if kind == "duckdb" and rest[0] != ":memory:" and not Path(rest[0]).exists():
            raise FileNotFoundError(f"warehouse file not found: {rest[0]}")
        try:
            wh = open_warehouse(target_or_wh)
        except Exception as exc:  # e.g. a DuckDB file locked by a running pipeline
            raise WarehouseUnavailable(f"cannot open warehouse {target_or_wh}: {exc}") from exc
    else:
        wh = target_or_wh
    try:
        src = Source(wh)
        generated_at = generated_at or dt.datetime.now(dt.timezone.utc)
        body, nav = [], []
        for sid, title, fn in SECTIONS:
            try:
                inner = "\n".join(fn(src))
                status = "ok"
            except Unavailable as exc:
                inner = f'<p class="unavailable">Not available yet: {html.escape(str(exc))}.</p>'
                status = "unavailable"
            except Exception as exc:  # a broken section must not sink the whole report
                log.exception("report section %s failed", sid)
                inner = (f'<p class="unavailable">Not available: this section could not be '
                         f'built ({html.escape(type(exc).__name__)}: {html.escape(str(exc))}).</p>')
                status = "error"
            nav.append(f'<a href="#{sid}">{html.escape(title)}</a>')
            body.append(f'<section id="{sid}" data-status="{status}"><h2>{html.escape(title)}</h2>'
                        f"\n{inner}\n</section>")
        tables = _table(["table", "rows"],
                        [[t, "missing" if src.count(t) is None else f"{src.count(t):,}"]
                         for t in ALL_TABLES], "inventory")
        target = getattr(wh, "target", "")
    finally:
        if own:
            wh.close()
    stamp = generated_at.strftime("%Y-%m-%d %H:%M UTC")
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>shopstream analytics report — {stamp}</title><style>{_CSS}</style>"
        f"<script type=\"text/javascript\">{get_plotlyjs()}</script></head><body>"
        f"<header><h1>shopstream analytics report</h1><p>warehouse {html.escape(str(target))}"
        f" · generated {stamp}</p></header><nav>{''.join(nav)}</nav><main>"
        + "\n".join(body)
        + f'<section id="tables"><h2>Warehouse tables</h2>{tables}</section></main>'
        f"<footer>Self-contained: plotly.js {html.escape(plotly.__version__)} (python) is "
        "embedded; the file needs no network.</footer></body></html>\n")


def write_report(target: str, out: str) -> Path:
    html_text = build_report(target)
    path = Path(out)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html_text, encoding="utf-8")
    tmp.replace(path)
    return path.resolve()


def register(subparsers, name: str = "report"):
    p = subparsers.add_parser(
        name, help="write the self-contained HTML analytics report",
        description="Write one self-contained HTML report (interactive plotly charts, works "
                    "offline) from the warehouse tables: sales over time, top products/brands/"
                    "sub-categories, a province map, churn by segment and churn model metrics.")
    p.add_argument("--warehouse", required=True, help="DuckDB file path or bq://PROJECT.DATASET")
    p.add_argument("--out", default="report.html", help="output HTML file (default %(default)s)")
    p.set_defaults(func=run)
    return p


def run(args) -> int:
    try:
        path = write_report(args.warehouse, args.out)
    except FileNotFoundError as exc:
        print(f"shopstream report: {exc}", file=sys.stderr, flush=True)
        return 2
    except WarehouseUnavailable as exc:
        print(f"shopstream report: {exc}", file=sys.stderr, flush=True)
        return 1
    print(path, flush=True)
    return 0
