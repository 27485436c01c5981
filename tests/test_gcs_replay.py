"""`shopstream replay --input gs://...` on a real GCS API (gcp-storage-emulator) — the
same reads Dataflow does for `make replay-gcs`, here on the DirectRunner."""
from __future__ import annotations

import csv
import importlib.util
import re
from pathlib import Path

import pytest

from tests.emulators import GCSEmulator
from transforms import records

pytestmark = pytest.mark.emulator


def _has_replay() -> bool:
    """pipelines/streaming.py defines the replay command and pipelines/streaming_job.py
    its graph (read, not imported)."""
    for module, name in (("pipelines.streaming", "register"),
                         ("pipelines.streaming_job", "build_pipeline")):
        try:
            spec = importlib.util.find_spec(module)
        except ImportError:
            return False
        if spec is None or not spec.origin:
            return False
        if not re.search(rf"^def {name}\b", Path(spec.origin).read_text(), re.M):
            return False
    return True


needs_replay = pytest.mark.skipif(not _has_replay(),
                                  reason="pipelines/streaming.py (replay command) is not there yet")

BAD_ROW = ["s-bad", "TELEPORT", "2021-01-05T10:00:00.000000Z", "e-bad", "WEB", ""]


@pytest.fixture(scope="module")
def gcs_data(tmp_path_factory):
    """A bucket holding a small generated data set (plus one bad click row)."""
    from pipelines.generate import generate

    emu = GCSEmulator(tmp_path_factory.mktemp("gcs")).start()
    local = tmp_path_factory.mktemp("replay-data")
    generate(out_dir=str(local), customers=30, products=25, days=20, seed=21)
    with (local / "click_stream.csv").open("a", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerow(BAD_ROW)
    uploaded = emu.upload_dir(local, "shopstream-test", "data")
    yield emu, local, uploaded
    emu.stop()


def test_emulator_serves_the_bucket_through_beam_filesystems(gcs_data, monkeypatch):
    from apache_beam.io.filesystems import FileSystems

    from transforms.sources import find_table_files

    emu, local, uploaded = gcs_data
    emu.activate(monkeypatch)
    assert "gs://shopstream-test/data/click_stream.csv" in uploaded
    assert find_table_files("gs://shopstream-test/data", "click_stream") == [
        "gs://shopstream-test/data/click_stream.csv"]
    with FileSystems.open("gs://shopstream-test/data/product.csv") as fh:
        assert fh.read() == (local / "product.csv").read_bytes()


@needs_replay
@pytest.mark.slow
def test_replay_reads_gs_input(gcs_data, monkeypatch, tmp_path, capsys):
    from pipelines.cli import main
    from transforms.warehouse import open_warehouse

    emu, local, _ = gcs_data
    emu.activate(monkeypatch)
    monkeypatch.delenv("REDIS_URL", raising=False)
    warehouse = tmp_path / "replay.duckdb"
    rc = main(["replay", "--input", "gs://shopstream-test/data", "--warehouse", str(warehouse),
               "--runner=DirectRunner"])
    out = capsys.readouterr()
    assert rc == 0, out.err

    valid = {r.event_id for r in records.read_csv_records(str(local / "click_stream.csv"),
                                                           "click_stream")
             if not isinstance(r, records.DeadLetter)}
    with open_warehouse(str(warehouse)) as wh:
        got = {r["event_id"] for r in wh.query("SELECT event_id FROM events_enriched")}
        dead = wh.query("SELECT source, raw, reason FROM dead_letter")
        engaged = wh.query("SELECT count(*) AS n FROM product_engagement")[0]["n"]
    assert got == valid and len(valid) > 100
    assert any("TELEPORT" in d["raw"] for d in dead), dead
    assert engaged > 0


@needs_replay
@pytest.mark.slow
def test_replay_from_gcs_into_bigquery(gcs_data, monkeypatch, tmp_path, capsys):
    """`make replay-gcs` in miniature: gs:// input, bq:// warehouse (Beam's FILE_LOADS
    through the GCS emulator's bucket, and the snapshot tables through BigQueryWarehouse),
    DirectRunner in-process."""
    from google.cloud import bigquery

    from pipelines.cli import main
    from tests.emulators import BigQueryEmulator, beam_bigquery_on_emulator

    emu, local, _ = gcs_data
    bq = BigQueryEmulator(tmp_path / "bq", gcs_root=emu.objects_root).start()
    try:
        emu.activate(monkeypatch)
        beam_bigquery_on_emulator(monkeypatch, bq)
        monkeypatch.delenv("REDIS_URL", raising=False)
        emu.create_bucket("shopstream-tmp")
        client = bq.client()
        client.create_dataset(f"{bq.project}.replay")
        rc = main(["replay", "--input", "gs://shopstream-test/data",
                   "--warehouse", f"bq://{bq.project}.replay", "--runner=DirectRunner",
                   f"--project={bq.project}", "--temp_location=gs://shopstream-tmp/tmp"])
        out = capsys.readouterr()
        assert rc == 0, out.err

        def q(sql):
            return [dict(r.items()) for r in client.query(sql).result()]

        valid = {r.event_id for r in records.read_csv_records(str(local / "click_stream.csv"),
                                                               "click_stream")
                 if not isinstance(r, records.DeadLetter)}
        got = {r["event_id"] for r in q(f"SELECT event_id FROM `{bq.project}.replay.events_enriched`")}
        assert got == valid
        dead = q(f"SELECT raw FROM `{bq.project}.replay.dead_letter`")
        assert any("TELEPORT" in d["raw"] for d in dead)
        top = q(f"SELECT rank FROM `{bq.project}.replay.top10_products` ORDER BY rank")
        assert [r["rank"] for r in top] == list(range(1, len(top) + 1)) and top
        assert isinstance(client, bigquery.Client)
    finally:
        bq.stop()
