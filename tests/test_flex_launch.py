"""Both Flex Templates launched as Dataflow's Flex launcher launches them, offline.

The launcher runs ``FLEX_TEMPLATE_PYTHON_PY_FILE`` in the template image with the image's
environment, the template parameters as ``--name=value`` and the job's own options, among
them ``--template_location=gs://…/template_launches/<id>/job_object``: the program writes
the job there (and stages the portable pipeline beside the staging files) and must exit
0. Here the shim ``templates/launcher.py`` is copied to the image's WORKDIR layout outside
the source tree and run as a subprocess against the GCS emulator, with the real argument
shape. The one stand-in: the launcher VM's service account is replaced by anonymous
credentials (a ``sitecustomize`` on the subprocess's path), because offline there is
none and google-auth would otherwise retry for ~30 s before going anonymous.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.test_templates import ROOT, example, image_env, metadata

pytestmark = [pytest.mark.emulator, pytest.mark.slow]

IMAGE = {k: f"asia-southeast2-docker.pkg.dev/my-project/shopstream/shopstream-{k}:t1"
         for k in ("streaming", "batch")}
BUCKET = "launch-bucket"


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A GCS emulator holding what the template example values point at."""
    from pipelines.generate import generate
    from tests.emulators import GCSEmulator

    emu = GCSEmulator(tmp_path_factory.mktemp("gcs")).start()
    data = tmp_path_factory.mktemp("launch-data")
    generate(out_dir=str(data), customers=30, products=25, days=20, seed=9)
    emu.upload_dir(data, "my-bucket", "shopstream/data")
    emu.upload_text("my-bucket", "shopstream/weights.json", json.dumps(
        {"click_count": 1, "item_detail_count": 1, "add_to_cart_count": 2,
         "homepage_count": 0.5, "total_dwell_seconds": 1, "purchases": 3}))
    emu.upload_text("my-bucket", "shopstream/models/README", "models go here\n")
    emu.create_bucket(BUCKET)
    yield emu
    emu.stop()


ANONYMOUS_AUTH = """
import os
import google.auth
from google.auth.credentials import AnonymousCredentials

google.auth.default = lambda *a, **k: (AnonymousCredentials(), os.environ.get("GOOGLE_CLOUD_PROJECT"))
"""


@pytest.fixture(scope="module")
def image_root(tmp_path_factory) -> Path:
    """The image's WORKDIR: only the launcher shim, no source tree."""
    workdir = tmp_path_factory.mktemp("template")
    (workdir / "templates").mkdir()
    shutil.copy(ROOT / "templates" / "launcher.py", workdir / "templates" / "launcher.py")
    (workdir / "offline-auth").mkdir()  # on PYTHONPATH of the subprocess only
    (workdir / "offline-auth" / "sitecustomize.py").write_text(ANONYMOUS_AUTH)
    return workdir


def flex_launch(gcs, image_root: Path, kind: str, params: dict, job_name: str):
    """Run the template program as the Flex launcher does; returns (proc, job_object URL,
    staging URL)."""
    env_image = image_env(kind)
    py_file = Path(env_image["FLEX_TEMPLATE_PYTHON_PY_FILE"])
    local_py = image_root / py_file.relative_to("/template")
    launch_id = uuid.uuid4().hex[:12]
    base = f"gs://{BUCKET}/{job_name}-{launch_id}"
    job_object = f"{base}/template_launches/{launch_id}/job_object"
    argv = [f"--{k}={v}" for k, v in params.items()] + [
        "--runner=DataflowRunner", "--project=fake-proj", "--region=asia-southeast2",
        f"--job_name={job_name}", f"--temp_location={base}/tmp",
        f"--staging_location={base}/staging", f"--template_location={job_object}",
        "--sdk_location=container"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SHOPSTREAM_PIPELINE", "PYTHONSTARTUP")}
    env.update(env_image)
    env.update({"STORAGE_EMULATOR_HOST": gcs.endpoint, "NO_GCE_CHECK": "true",
                "GCE_METADATA_HOST": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9",
                "GOOGLE_CLOUD_PROJECT": "fake-proj", "PYTHONPATH": str(image_root / "offline-auth")})
    proc = subprocess.run([sys.executable, str(local_py), *argv], cwd=str(image_root), env=env,
                          capture_output=True, text=True, timeout=300)
    return proc, job_object, f"{base}/staging"


def read_gcs(gcs, url: str) -> bytes:
    bucket, _, name = url[len("gs://"):].partition("/")
    return gcs.client().bucket(bucket).blob(name).download_as_bytes()


def params_for(kind: str, skip=()) -> dict:
    out = {p["name"]: example(p) for p in metadata(kind)["parameters"] if p["name"] not in skip}
    out["sdk_container_image"] = IMAGE[kind]
    return out


def staged_pipeline(gcs, job: dict):
    """The portable pipeline the job_object points at (Runner v2 holds no steps)."""
    from apache_beam.portability.api import beam_runner_api_pb2

    url = job["environment"]["sdkPipelineOptions"]["options"]["pipelineUrl"]
    return beam_runner_api_pb2.Pipeline.FromString(read_gcs(gcs, url))


def stateful_steps(pipeline) -> list:
    from apache_beam.portability.api import beam_runner_api_pb2

    out = []
    for t in pipeline.components.transforms.values():
        if t.spec.urn == "beam:transform:pardo:v1":
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            if payload.state_specs or payload.timer_family_specs:
                out.append(t.unique_name)
    return out


def container_images(pipeline) -> set:
    from apache_beam.portability.api import beam_runner_api_pb2

    return {beam_runner_api_pb2.DockerPayload.FromString(e.payload).container_image
            for e in pipeline.components.environments.values() if e.payload}


def check_job(gcs, proc, job_object, kind, job_type):
    assert proc.returncode == 0, proc.stderr[-4000:]
    i = proc.stderr.find("Traceback")
    assert i < 0, proc.stderr[max(0, i - 3000):i + 3000]
    job = json.loads(read_gcs(gcs, job_object))
    assert job["type"] == job_type
    opts = job["environment"]["sdkPipelineOptions"]["options"]
    assert opts["sdk_container_image"] == IMAGE[kind]
    assert opts["sdk_location"] == "container"
    return job


def test_streaming_template_launches_a_streaming_job(gcs, image_root):
    params = params_for("streaming", skip={"input"})
    proc, job_object, staging = flex_launch(gcs, image_root, "streaming", params,
                                            "shopstream-streaming")
    job = check_job(gcs, proc, job_object, "streaming", "JOB_TYPE_STREAMING")
    pipeline = staged_pipeline(gcs, job)
    assert any(n.startswith("Sessionize/") for n in stateful_steps(pipeline)), \
        stateful_steps(pipeline)
    assert container_images(pipeline) == {IMAGE["streaming"]}
    names = {t.unique_name for t in pipeline.components.transforms.values()}
    for label in ("ReadClicks", "ReadOrders", "WriteRedis", "WriteEnriched", "WriteDeadLetter"):
        assert label in names, label
    # Dataflow dedups Pub/Sub redeliveries by the event_id attribute (id_label)
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2

    reads = [t for t in pipeline.components.transforms.values()
             if t.spec.urn == common_urns.composites.PUBSUB_READ.urn]
    ids = {beam_runner_api_pb2.PubSubReadPayload.FromString(t.spec.payload).id_attribute
           for t in reads}
    assert "event_id" in ids, ids


def test_streaming_template_replays_gcs_files_as_a_batch_job(gcs, image_root):
    params = params_for("streaming", skip={"subscription", "orders_subscription"})
    proc, job_object, staging = flex_launch(gcs, image_root, "streaming", params,
                                            "shopstream-replay")
    job = check_job(gcs, proc, job_object, "streaming", "JOB_TYPE_BATCH")
    pipeline = staged_pipeline(gcs, job)
    names = {t.unique_name for t in pipeline.components.transforms.values()}
    assert {"ReadClicks", "Sessionize", "DeleteSpill"} <= names, sorted(names)[:40]
    assert container_images(pipeline) == {IMAGE["streaming"]}


def test_batch_template_launches_a_batch_job_with_in_job_loads(gcs, image_root):
    proc, job_object, staging = flex_launch(gcs, image_root, "batch", params_for("batch"),
                                            "shopstream-batch")
    job = check_job(gcs, proc, job_object, "batch", "JOB_TYPE_BATCH")
    pipeline = staged_pipeline(gcs, job)
    names = {t.unique_name for t in pipeline.components.transforms.values()}
    assert {"ReadTransactions", "SessionActivity", "GroupByCustomer", "WriteSalesFacts",
            "LoadStaged/LoadWarehouse"} <= names
    assert container_images(pipeline) == {IMAGE["batch"]}


def test_a_bad_parameter_is_a_message_and_exit_2(gcs, image_root):
    params = params_for("batch")
    del params["sdk_container_image"]
    proc, _job, _staging = flex_launch(gcs, image_root, "batch", params, "shopstream-batch")
    assert proc.returncode == 2
    assert "sdk_container_image is required" in proc.stderr
    assert "Traceback" not in proc.stderr
