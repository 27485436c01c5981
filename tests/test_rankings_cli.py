"""`shopstream rankings` (SPEC §4) through pipelines.cli.main, against a real redis-server,
and the reusable readers read_ranking / read_meta."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.rankings import format_age
from tests.conftest import free_port
from transforms.ranking_store import read_meta, read_ranking
from transforms.redis_sink import RedisRankingWriter
from transforms.top_n import RankingSnapshot

S = 1_000_000
T0 = 1_567_785_600 * S  # 2019-09-06 16:00:00 UTC
ROOT = Path(__file__).resolve().parents[1]

RANKINGS = {
    "products": [("15315", 0.9), ("42", 0.5), ("7", 0.5), ("8", 0.25)],
    "brands": [("Puma", 1.4), ("Nike", 0.25)],
    "subcategories": [("Shoes", 1.65)],
    "products:gender:Men": [("15315", 0.9), ("7", 0.5)],
    "products:season:Summer": [("42", 0.5)],
    "products:season:Summer:gender:Women": [("42", 0.5)],
}
NAMES = {"15315": "Puma Men Blue Sneakers", "42": "Puma Women Pink Top",
         "7": "Nike Men Shoes", "8": "Nike Unisex Cap"}


@pytest.fixture
def filled(redis_server):
    w = RedisRankingWriter(redis_server.url, retry_seconds=5)
    assert w.write(RankingSnapshot("all", T0 + 3600 * S, RANKINGS, NAMES, {}, 20))
    assert w.write(RankingSnapshot("1h", T0 + 1800 * S, {"products": [("8", 2.0)]},
                                   NAMES, {}, 3, T0 + 1800 * S))
    return redis_server


def test_json_prints_exactly_read_ranking(filled, capsys):
    assert main(["rankings", "--redis", filled.url, "--json"]) == 0
    items = json.loads(capsys.readouterr().out)
    assert items == read_ranking(filled.client(), "products", "all")
    assert items == [
        {"rank": 1, "id": 15315, "name": "Puma Men Blue Sneakers", "score": 0.9},
        {"rank": 2, "id": 7, "name": "Nike Men Shoes", "score": 0.5},      # tie: by id
        {"rank": 3, "id": 42, "name": "Puma Women Pink Top", "score": 0.5},
        {"rank": 4, "id": 8, "name": "Nike Unisex Cap", "score": 0.25},
    ]


def test_filters_horizons_limit_and_brands(filled, capsys):
    url = filled.url
    assert main(["rankings", "products", "--gender", "men", "--redis", url, "--json"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)] == [15315, 7]
    assert main(["rankings", "--season", "Summer", "--gender", "Women", "--redis", url,
                 "--json"]) == 0
    assert [i["id"] for i in json.loads(capsys.readouterr().out)] == [42]
    assert main(["rankings", "--horizon", "1h", "--redis", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"rank": 1, "id": 8, "name": "Nike Unisex Cap", "score": 2.0}]
    assert main(["rankings", "brands", "--limit", "1", "--redis", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"rank": 1, "id": "Puma", "name": "Puma", "score": 1.4}]
    assert main(["rankings", "subcategories", "--redis", url, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == "Shoes"


def test_table_output_with_freshness(filled, capsys):
    assert main(["rankings", "products", "--redis", filled.url]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "Top 4 products — all time"
    assert lines[1].split() == ["rank", "id", "name", "score"]
    assert "15315  Puma Men Blue Sneakers" in lines[2] and lines[2].endswith("0.9000")
    assert lines[-1].startswith("current to 2019-09-06 17:00:00 UTC, written ")
    assert lines[-1].endswith(" ago")
    assert main(["rankings", "brands", "--redis", filled.url]) == 0
    assert capsys.readouterr().out.splitlines()[1].split() == ["rank", "brand", "score"]


def test_redis_url_from_environment(filled, capsys, monkeypatch):
    monkeypatch.setenv("REDIS_URL", filled.url)
    assert main(["rankings", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == 15315


def test_missing_ranking_is_a_clear_error(filled, capsys):
    assert main(["rankings", "--gender", "Girls", "--redis", filled.url]) == 1
    err = capsys.readouterr().err
    assert "no ranking shopstream:top:all:products:gender:Girls" in err
    assert "products:gender:Men" in err  # lists what exists
    assert "Traceback" not in err


def test_empty_redis_is_a_clear_error(redis_server, capsys):
    assert main(["rankings", "brands", "--horizon", "24h", "--redis", redis_server.url]) == 1
    err = capsys.readouterr().err
    assert "no ranking shopstream:top:24h:brands" in err and "shopstream replay" in err


def test_unreachable_redis_is_a_clear_error_without_password(capsys):
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    assert main(["rankings", "--redis", url]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Redis at redis://:***@127.0.0.1" in err
    assert "hunter2" not in err and "Traceback" not in err


def test_usage_errors(capsys):
    assert main(["rankings", "brands", "--gender", "Men", "--redis", "redis://127.0.0.1:1/0"]) == 2
    assert "apply only to the products ranking" in capsys.readouterr().err
    assert main(["rankings", "--redis", "http://127.0.0.1/0"]) == 2
    assert "redis:// or rediss://" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["rankings", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--horizon" in out and "--json" in out and "REDIS_URL" in out


def test_read_meta_and_read_ranking_api(filled):
    c = filled.client()
    meta = read_meta(c)
    assert meta["current_to_us"] == T0 + 3600 * S
    assert meta["current_to"] == "2019-09-06T17:00:00.000000Z"
    assert set(meta["horizons"]) == {"all", "1h"}
    assert meta["horizons"]["1h"]["window_end_us"] == T0 + 1800 * S
    assert meta["horizons"]["all"]["window_end_us"] is None
    assert read_ranking(c, "products:gender:Men", "all", limit=1)[0]["id"] == 15315
    assert read_ranking(c, "brands", "1h") == []  # not written: empty, no error
    with pytest.raises(ValueError):
        read_ranking(c, "products", "7d")
    c.flushall()
    assert read_meta(c) == {}


def test_format_age():
    assert [format_age(s) for s in (5, 65, 3700, 90000)] == ["5s", "1m 05s", "1h 01m", "1d 1h"]


def test_rankings_command_does_not_import_beam():
    code = ("import sys, pipelines.rankings, pipelines.cli; "
            "pipelines.cli.build_parser(['rankings']); "
            "print('apache_beam' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
