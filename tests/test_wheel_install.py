"""What a worker has: the shopstream wheel installed --no-deps into a fresh folder outside
the source tree (as templates/Dockerfile installs it), running `shopstream replay`."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    wheels = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(wheels), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    (wheel,) = wheels.glob("shopstream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "transforms/schemas/events_enriched.json" in names
    assert "pipelines/launch.py" in names and "batch/data/id_provinces.json" in names
    assert not any(n.startswith("tests/") for n in names)
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                    "--target", str(target), str(wheel)], check=True, capture_output=True,
                   timeout=300)
    return target


def _run(installed: Path, cwd: Path, *argv, script=None):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(installed)
    cmd = [str(installed / "bin" / "shopstream"), *argv] if script is None else \
        [sys.executable, "-c", script]
    return subprocess.run(cmd, cwd=str(cwd), env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_installed_wheel_runs_replay_outside_the_tree(installed, tmp_path):
    from pipelines.generate import generate
    from transforms.warehouse import open_warehouse

    data = tmp_path / "data"
    generate(out_dir=str(data), customers=20, products=15, days=10, seed=3)
    where = _run(installed, tmp_path, script="import pipelines.launch, transforms.sinks; "
                 "print(pipelines.launch.__file__); print(transforms.sinks.__file__)")
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert line.startswith(str(installed)), line  # not the source tree
    wh = tmp_path / "replay.duckdb"
    proc = _run(installed, tmp_path, "replay", "--input", str(data), "--warehouse", str(wh),
                "--runner=DirectRunner")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "replay done" in proc.stdout
    with open_warehouse(str(wh)) as w:
        enriched = w.query("SELECT count(*) AS n FROM events_enriched")[0]["n"]
    with open(data / "click_stream.csv", newline="") as fh:
        generated = sum(1 for _ in csv.reader(fh)) - 1  # every generated event is valid
    assert enriched == generated > 0
