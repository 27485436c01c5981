"""The live page and the report as a person sees them: headless Chromium, real Redis,
`shopstream serve` (uvicorn) on a free loopback port. Screenshots land in tmp_path."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until_healthy
from tests.test_report import TOP_PRODUCT_ID, fill_warehouse
from tests.test_serve import PRODUCTS, fill_redis

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"{CHROMIUM} is absent: apt-get install -y chromium "
                              "(Debian package) to run the browser tests"),
    pytest.mark.slow,
]


def chromium(url: str, tmp_path: Path, name: str, budget_ms: int = 5000,
             size: str = "1280,900") -> str:
    """Load url, let its JS run for budget_ms of virtual time, save a screenshot and
    return the rendered DOM. Hosts other than loopback do not resolve."""
    profile = tmp_path / f"chromium-{name}"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={profile}",
           "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
           f"--virtual-time-budget={budget_ms}", f"--window-size={size}",
           f"--screenshot={tmp_path / (name + '.png')}", "--dump-dom", url]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / f"{name}.png").stat().st_size > 1000
    return proc.stdout


@pytest.fixture
def served(redis_server, tmp_path):
    """`shopstream serve` in a subprocess against the real Redis; yields its base URL."""
    fill_redis(redis_server.client())
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--redis", redis_server.url,
         "--host", "127.0.0.1", "--port", str(port), "--access-log"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, base, lambda: (tmp_path / "serve.log").read_text())
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _rows(dom: str, dimension: str) -> list:
    body = re.search(rf'<tbody id="rows-{dimension}">(.*?)</tbody>', dom, re.S)
    assert body, f"table rows-{dimension} missing"
    return re.findall(r'<tr class="item" data-id="([^"]+)">', body.group(1))


def test_live_page_renders_and_refreshes(served, redis_server, tmp_path):
    dom = chromium(f"{served}/?horizon=all&every=1", tmp_path, "live-page", budget_ms=5000)
    products = _rows(dom, "products")
    assert products[0] == "15315" and len(products) == 10  # the top product id, after JS ran
    assert "Puma Men Blue Shoes" in dom
    assert _rows(dom, "brands") == ["Puma", "Nike", "Adidas"]
    assert _rows(dom, "subcategories") == ["Shoes", "Topwear"]
    status = re.search(r'<p id="status"[^>]*>(.*?)</p>', dom, re.S).group(1)
    assert "current to 2022-03-31 10:15:00 UTC" in status
    assert re.search(r"updated \d+ s ago", status), status
    # fetched at least twice: the page refreshes by itself (the server's access log)
    fetches = re.findall(r'"GET /api/rankings/products(?:\?\S*)? HTTP/1.1" 200',
                         (tmp_path / "serve.log").read_text())
    assert len(fetches) >= 2, (tmp_path / "serve.log").read_text()[-2000:]


def test_live_page_filters_from_the_url(served, tmp_path):
    dom = chromium(f"{served}/?horizon=24h&gender=Women&season=Summer", tmp_path, "filtered")
    assert _rows(dom, "products") == ["54728", "20002"]
    assert PRODUCTS[54728][0] in dom
    assert re.search(r'<span class="filters" id="product-filters">Women · Summer</span>', dom)


def test_live_page_says_when_redis_is_down(served, redis_server, tmp_path):
    redis_server.stop()
    dom = chromium(f"{served}/", tmp_path, "redis-down", budget_ms=3000)
    status = re.search(r'<p id="status"[^>]*>(.*?)</p>', dom, re.S).group(1)
    assert "refresh failed" in status and "Redis is unreachable" in status


def test_report_charts_render_offline(tmp_path):
    from pipelines.report import write_report

    wh = fill_warehouse(tmp_path / "wh.duckdb")
    out = write_report(str(wh), str(tmp_path / "report.html"))
    dom = chromium(out.as_uri(), tmp_path, "report", budget_ms=8000, size="1280,5600")
    charts = re.split(r'<div id="(chart-[\w-]+)"', dom)[1:]
    rendered = {charts[i]: 'class="main-svg"' in charts[i + 1] for i in range(0, len(charts), 2)}
    assert len(rendered) >= 20 and all(rendered.values()), rendered
    for chart in ("chart-churn-eval", "chart-churn-calibration", "chart-churn-gains",
                  "chart-churn-importance", "chart-popularity-eval"):
        assert rendered.get(chart), chart
    assert str(TOP_PRODUCT_ID) in dom
    for sid in ("sales", "top", "map", "churn", "model", "popularity"):
        assert f'<section id="{sid}" data-status="ok">' in dom
