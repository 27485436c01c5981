"""pipelines/launch.py and the faults only a launched (Dataflow) job shows: compressed
input, the replay's spill folder, the Redis sink's settings and its password."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

from tests.emulators import GCSEmulator

GZ_TABLES = ("click_stream", "transactions")


@pytest.fixture(scope="module")
def plain_data(tmp_path_factory) -> Path:
    from pipelines.generate import generate

    out = tmp_path_factory.mktemp("plain")
    generate(out_dir=str(out), customers=30, products=25, days=30, seed=5)
    return out


@pytest.fixture(scope="module")
def gz_data(plain_data, tmp_path_factory) -> Path:
    """The same data set with click_stream and transactions gzipped (.csv.gz)."""
    out = tmp_path_factory.mktemp("gz")
    for path in plain_data.iterdir():
        if not path.is_file():
            continue
        if path.stem in GZ_TABLES:
            with path.open("rb") as src, gzip.open(out / (path.name + ".gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(path, out / path.name)
    return out


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    emu = GCSEmulator(tmp_path_factory.mktemp("gcs")).start()
    emu.create_bucket("launch-test")
    yield emu
    emu.stop()


def _counts(warehouse: Path, tables) -> dict:
    from transforms.warehouse import open_warehouse

    with open_warehouse(str(warehouse)) as wh:
        return {t: wh.query(f"SELECT count(*) AS n FROM {t}")[0]["n"] for t in tables}


def _cli(*argv) -> int:
    from pipelines.cli import main

    return main(list(argv))


@pytest.fixture(scope="module")
def plain_counts(plain_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("plain-wh")
    assert _cli("replay", "--input", str(plain_data), "--warehouse", str(out / "r.duckdb"),
                "--runner=DirectRunner") == 0
    assert _cli("batch", "--input", str(plain_data), "--warehouse", str(out / "b.duckdb")) == 0
    return {"replay": _counts(out / "r.duckdb", ["events_enriched"]),
            "batch": _counts(out / "b.duckdb", ["sales_facts", "churn_features"])}


@pytest.mark.slow
@pytest.mark.parametrize("where", ["local", pytest.param("gs", marks=pytest.mark.emulator)])
def test_gz_input_replays_and_batches_like_plain_input(where, gz_data, plain_counts, gcs,
                                                       monkeypatch, tmp_path):
    """A .gz file is one split of unknown length, read whole (it used to crash graph
    construction with max(0, None))."""
    root = str(gz_data)
    if where == "gs":
        gcs.activate(monkeypatch)
        gcs.upload_dir(gz_data, "launch-test", "gz")
        root = "gs://launch-test/gz"
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert _cli("replay", "--input", root, "--warehouse", str(tmp_path / "r.duckdb"),
                "--runner=DirectRunner") == 0
    assert _counts(tmp_path / "r.duckdb", ["events_enriched"]) == plain_counts["replay"]
    assert plain_counts["replay"]["events_enriched"] > 100
    assert _cli("batch", "--input", root, "--warehouse", str(tmp_path / "b.duckdb")) == 0
    assert _counts(tmp_path / "b.duckdb", ["sales_facts", "churn_features"]) == \
        plain_counts["batch"]


@pytest.mark.emulator
def test_spill_folder_on_gcs_is_deleted(gcs, monkeypatch):
    """gs:// has no folders: ``exists()`` of the spill prefix is False, so the objects
    under it must be deleted by prefix."""
    from transforms.spill import delete_spill

    gcs.activate(monkeypatch)
    for name in ("tmp/shopstream-replay-abc/0001.bin", "tmp/shopstream-replay-abc/0002.bin",
                 "tmp/keep.txt"):
        gcs.upload_text("launch-test", name, "x")
    delete_spill("gs://launch-test/tmp/shopstream-replay-abc")
    left = sorted(b.name for b in gcs.client().list_blobs("launch-test", prefix="tmp/"))
    assert left == ["tmp/keep.txt"]


@pytest.mark.slow
def test_launched_replay_deletes_its_spill_folder(plain_data, tmp_path):
    """A template launch returns at once, so the job itself deletes its spill folder."""
    from pipelines.launch import launch

    temp = tmp_path / "temp"
    temp.mkdir()
    p, result = launch("streaming", ["--runner=DirectRunner", f"--input={plain_data}",
                                     f"--temp_location={temp}"])
    result.wait_until_finish()  # the launcher itself never waits; the test does
    names = {t.unique_name for t in p.to_runner_api().components.transforms.values()}
    assert "DeleteSpill" in names
    assert not list(temp.glob("shopstream-replay-*")), list(temp.iterdir())


def _applied(p, label):
    from apache_beam.pipeline import PipelineVisitor

    found = []

    class Visitor(PipelineVisitor):
        def enter_composite_transform(self, node):
            if node.full_label == label:
                found.append(node.transform)

    p.visit(Visitor())
    assert found, f"no step {label}"
    return found[0]


def test_redis_sink_gets_top_n_and_the_secret_name(plain_data):
    from pipelines.launch import build

    p = build("streaming", ["--runner=DirectRunner", f"--input={plain_data}",
                            "--redis=redis://10.0.0.3:6379/0", "--top_n=17",
                            "--redis_secret=projects/p/secrets/redis-auth"])
    sink = _applied(p, "WriteRedis")
    assert sink.top_n == 17
    assert sink.password_secret == "projects/p/secrets/redis-auth"
    assert "redis-auth" not in sink.redis_url


def test_a_redis_password_in_the_options_is_refused():
    from pipelines.launch import pipeline_options

    with pytest.raises(ValueError, match="redis_secret"):
        pipeline_options("streaming", ["--runner=DirectRunner",
                                       "--redis=redis://:s3cret@10.0.0.3:6379/0"])


def test_the_redis_password_is_read_from_secret_manager_on_the_worker(monkeypatch):
    from transforms import redis_sink, secrets

    class FakeSecretManager:
        calls = []

        def access_secret_version(self, request):
            self.calls.append(request["name"])

            class Payload:
                data = b"s3cret"

            class Response:
                payload = Payload()

            return Response()

    fake = FakeSecretManager()
    assert secrets.read_secret("projects/p/secrets/s", client=fake) == "s3cret"
    assert fake.calls == ["projects/p/secrets/s/versions/latest"]
    with pytest.raises(ValueError):
        secrets.secret_version_name("redis-password")

    # setenv (not delenv) so that monkeypatch removes what setup() sets afterwards
    monkeypatch.setenv("REDIS_PASSWORD", "")
    monkeypatch.setattr(secrets, "read_secret", lambda name: f"from {name}")
    fn = redis_sink._WriteRankingsFn("redis://127.0.0.1:1/0", "shopstream", 10, 1.0, 1.0,
                                     password_secret="projects/p/secrets/s")
    fn.setup()  # the writer connects lazily: nothing is contacted here
    import os

    assert os.environ["REDIS_PASSWORD"] == "from projects/p/secrets/s"
