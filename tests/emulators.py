"""Real Google Cloud emulators on free loopback ports, for the tests.

* Pub/Sub: the emulator shipped with the google-cloud-cli Debian packages (Java).
* BigQuery: PyPI ``bqemulator`` (DuckDB-backed REST API), with DuckDB's spatial and avro
  extensions installed offline from their PyPI wheels into a private HOME.
* Cloud Storage: PyPI ``gcp-storage-emulator``.

Each ``start()`` skips the calling test (``pytest.skip``) with the precise reason when
the emulator's binary is absent, and fails it when the binary is there but does not
come up. Everything that bends a client towards an emulator (endpoints, anonymous
credentials, ``BASE_URL``) lives here and in the fixtures — never in product code.
Processes are started in their own process group and stopped by that group id only.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import pytest

from tests.conftest import free_port

PROJECT = "local-proj"
VENV_BIN = Path(sys.executable).parent
SDK_ROOTS = ("/usr/lib/google-cloud-sdk", "/usr/share/google-cloud-sdk",
             "/opt/google-cloud-sdk", "/google-cloud-sdk")


def _http_ok(url: str, timeout: float = 0.5) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _Process:
    """A child process in its own process group, with its log in ``workdir``."""

    name = "emulator"

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.workdir / f"{self.name}.log"

    def _spawn(self, argv: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(self.workdir), env={**os.environ, **(env or {})}, start_new_session=True)

    def _wait(self, ready, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            if ready():
                return
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        pytest.fail(f"{self.name} did not come up within {timeout:.0f}s; log:\n{tail}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group this object started
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        with contextlib.suppress(Exception):
            self._log.close()
        self.proc = None


# --------------------------------------------------------------------------- Pub/Sub
def pubsub_emulator_binary() -> Optional[str]:
    """The Cloud SDK's ``cloud-pubsub-emulator`` script, or None."""
    env = os.environ.get("PUBSUB_EMULATOR_BIN")
    if env and os.access(env, os.X_OK):
        return env
    rel = "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
    for root in SDK_ROOTS:
        if os.access(os.path.join(root, rel), os.X_OK):
            return os.path.join(root, rel)
    if shutil.which("gcloud"):
        try:
            root = subprocess.run(
                ["gcloud", "info", "--format=value(installation.sdk_root)"],
                capture_output=True, text=True, timeout=30,
                env={**os.environ, "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true"}).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            root = ""
        if root and os.access(os.path.join(root, rel), os.X_OK):
            return os.path.join(root, rel)
    return None


class PubSubEmulator(_Process):
    name = "pubsub-emulator"

    def __init__(self, workdir: Path, project: str = PROJECT):
        super().__init__(workdir)
        self.project = project
        self.port = free_port()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> "PubSubEmulator":
        binary = pubsub_emulator_binary()
        if not binary:
            pytest.skip("Pub/Sub emulator not installed: no platform/pubsub-emulator/bin/"
                        "cloud-pubsub-emulator in the Cloud SDK (apt-get install "
                        "google-cloud-cli-pubsub-emulator)")
        if not shutil.which("java"):
            pytest.skip("Pub/Sub emulator needs Java (>= 11) on PATH")
        self._spawn([binary, "--host=127.0.0.1", f"--port={self.port}"],
                    env={"CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true"})
        self._wait(lambda: _http_ok(f"http://{self.host}/"), timeout=60)
        return self

    @contextlib.contextmanager
    def env(self) -> Iterator[None]:
        """PUBSUB_EMULATOR_HOST set (and restored) around a block."""
        old = os.environ.get("PUBSUB_EMULATOR_HOST")
        os.environ["PUBSUB_EMULATOR_HOST"] = self.host
        try:
            yield
        finally:
            if old is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = old

    def create_topic(self, topic: str) -> str:
        from google.cloud import pubsub_v1

        name = f"projects/{self.project}/topics/{topic}"
        with self.env():
            pubsub_v1.PublisherClient().create_topic(name=name)
        return name

    def create_subscription(self, topic_path: str, sub: str) -> str:
        from google.cloud import pubsub_v1

        name = f"projects/{self.project}/subscriptions/{sub}"
        with self.env():
            client = pubsub_v1.SubscriberClient()
            with client:
                client.create_subscription(name=name, topic=topic_path, ack_deadline_seconds=60)
        return name

    def pull_all(self, subscription: str, expected: int, timeout: float = 30.0) -> list:
        """Pull (and ack) messages until ``expected`` arrived or nothing more comes."""
        from google.cloud import pubsub_v1

        got: list = []
        deadline = time.time() + timeout
        with self.env():
            client = pubsub_v1.SubscriberClient()
            with client:
                idle = 0
                while len(got) < expected and time.time() < deadline:
                    resp = client.pull(subscription=subscription, max_messages=1000,
                                       return_immediately=False, timeout=5)
                    if not resp.received_messages:
                        idle += 1
                        if idle >= 3 and got:
                            break
                        continue
                    idle = 0
                    got.extend(m.message for m in resp.received_messages)
                    client.acknowledge(subscription=subscription,
                                       ack_ids=[m.ack_id for m in resp.received_messages])
        return got


# --------------------------------------------------------------------------- BigQuery
def _site_packages_file(package: str, *parts: str) -> Optional[Path]:
    try:
        mod = __import__(package)
    except ImportError:
        return None
    root = Path(mod.__file__).parent if getattr(mod, "__file__", None) else Path(list(mod.__path__)[0])
    path = root.joinpath(*parts)
    return path if path.exists() else None


def install_duckdb_extensions(home: Path) -> None:
    """Install DuckDB's spatial (required by bqemulator) and avro extensions from their
    PyPI wheels into ``home``/.duckdb — offline, instead of the download at start."""
    import duckdb

    version = "v" + duckdb.__version__
    spatial = _site_packages_file("duckdb_extension_spatial", "extensions", version,
                                  "spatial.duckdb_extension")
    if spatial is None:
        pytest.skip(f"duckdb-extension-spatial for DuckDB {duckdb.__version__} is not installed "
                    "(pip install -r requirements-dev.txt); bqemulator cannot start offline")
    avro = _site_packages_file("duckdb_extension_avro", "extensions", version,
                               "avro.duckdb_extension")
    ext_dir = home / ".duckdb" / "extensions"
    con = duckdb.connect(config={"extension_directory": str(ext_dir)})
    try:
        con.execute(f"INSTALL '{spatial}'")
        if avro is not None:
            con.execute(f"INSTALL '{avro}'")
    finally:
        con.close()


class BigQueryEmulator(_Process):
    name = "bqemulator"

    def __init__(self, workdir: Path, project: str = PROJECT, gcs_root: Optional[Path] = None):
        """``gcs_root``: where load jobs find ``gs://bucket/path`` (as ``gcs_root/bucket/path``);
        a GCSEmulator's ``objects_root`` makes loads read what was written to it."""
        super().__init__(workdir)
        self.project = project
        self.port = free_port()
        self.gcs_root = Path(gcs_root) if gcs_root else None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "BigQueryEmulator":
        binary = shutil.which("bqemulator", path=str(VENV_BIN)) or shutil.which("bqemulator")
        if not binary:
            pytest.skip("bqemulator is not installed (pip install -r requirements-dev.txt)")
        home = self.workdir / "home"
        home.mkdir(exist_ok=True)
        install_duckdb_extensions(home)
        gcs_root = self.gcs_root or self.workdir / "gcs"
        gcs_root.mkdir(parents=True, exist_ok=True)
        self._spawn([binary, "start", "--project", self.project, "--rest-host", "127.0.0.1",
                     "--rest-port", str(self.port), "--grpc-host", "127.0.0.1",
                     "--grpc-port", "0", "--log-level", "warning"],
                    env={"HOME": str(home), "BQEMU_GCS_LOCAL_ROOT": str(gcs_root)})
        self._wait(lambda: _http_ok(
            f"{self.endpoint}/bigquery/v2/projects/{self.project}/datasets"), timeout=90)
        return self

    def client(self, retry_deadline: float = 20.0):
        """A google-cloud-bigquery client on the emulator: anonymous credentials, and a
        short retry deadline (the default retries a 500 for 10 minutes)."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        client = _short_retry_client_class()(
            project=self.project, credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint))
        client._shopstream_retry_deadline = retry_deadline
        return client


@functools.lru_cache(maxsize=None)
def _short_retry_client_class():
    # The class in google.cloud.bigquery.client, which tests never patch (they may patch
    # the google.cloud.bigquery.Client name that product code looks up).
    from google.cloud.bigquery.client import Client

    class ShortRetryClient(Client):
        _shopstream_retry_deadline = 20.0

        def _call_api(self, retry, *args, **kwargs):
            if retry is not None:
                retry = retry.with_deadline(self._shopstream_retry_deadline)
            return super()._call_api(retry, *args, **kwargs)

    return ShortRetryClient


def beam_bigquery_on_emulator(monkeypatch, emulator: "BigQueryEmulator") -> None:
    """Beam's BigQuery IO in this process (apitools and google-cloud-bigquery clients,
    and product code that makes ``bigquery.Client(project=...)``) → the emulator."""
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client

    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", emulator.endpoint)
    monkeypatch.setattr(bigquery_v2_client.BigqueryV2, "BASE_URL",
                        f"{emulator.endpoint}/bigquery/v2/")
    anonymous_google_auth(monkeypatch, emulator.project)
    patch_bigquery_client_for_emulator(monkeypatch)


def patch_bigquery_client_for_emulator(monkeypatch) -> None:
    """bqemulator refuses the ``*/*`` content type that google-cloud-bigquery gives the
    data part of a multipart load upload (the real service accepts it)."""
    import google.cloud.bigquery.client as bq_client

    monkeypatch.setattr(bq_client, "_GENERIC_CONTENT_TYPE", "application/octet-stream")


def anonymous_google_auth(monkeypatch, project: str = PROJECT) -> None:
    """``google.auth.default`` → anonymous credentials (no metadata-server probing, no
    ~30 s of Beam credential retries), and Beam's cached credentials reset."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr(google.auth, "default",
                        lambda *a, **k: (AnonymousCredentials(), project))
    with contextlib.suppress(ImportError):
        from apache_beam.internal.gcp import auth as beam_auth

        monkeypatch.setattr(beam_auth._Credentials, "_credentials_init", False)
        monkeypatch.setattr(beam_auth._Credentials, "_credentials", None)


# --------------------------------------------------------------------------- GCS
class GCSEmulator(_Process):
    name = "gcp-storage-emulator"

    def __init__(self, workdir: Path, project: str = PROJECT):
        super().__init__(workdir)
        self.project = project
        self.port = free_port()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def objects_root(self) -> Path:
        """Where the emulator keeps objects on disk: ``objects_root/bucket/name``."""
        return self.workdir / "data" / ".cloudstorage"

    def start(self) -> "GCSEmulator":
        binary = (shutil.which("gcp-storage-emulator", path=str(VENV_BIN))
                  or shutil.which("gcp-storage-emulator"))
        if not binary:
            pytest.skip("gcp-storage-emulator is not installed (pip install -r requirements-dev.txt)")
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        self._spawn([binary, "-d", str(data), "start", "--host", "127.0.0.1",
                     "--port", str(self.port), "-q"])
        self._wait(lambda: _http_ok(f"{self.endpoint}/storage/v1/b?project={self.project}"),
                   timeout=30)
        return self

    def activate(self, monkeypatch) -> None:
        """Point this process's storage clients (and Beam's gs:// filesystem) here."""
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", self.endpoint)
        anonymous_google_auth(monkeypatch, self.project)

    def client(self):
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        old = os.environ.get("STORAGE_EMULATOR_HOST")
        os.environ["STORAGE_EMULATOR_HOST"] = self.endpoint
        try:
            return storage.Client(project=self.project, credentials=AnonymousCredentials())
        finally:
            if old is None:
                os.environ.pop("STORAGE_EMULATOR_HOST", None)
            else:
                os.environ["STORAGE_EMULATOR_HOST"] = old

    def create_bucket(self, name: str):
        client = self.client()
        bucket = client.bucket(name)
        if not bucket.exists():
            client.create_bucket(name)
        return client.bucket(name)

    def upload_dir(self, local: Path, bucket: str, prefix: str) -> List[str]:
        """Upload the files of folder ``local`` (not sub-folders) to gs://bucket/prefix/."""
        b = self.create_bucket(bucket)
        names = []
        for path in sorted(Path(local).iterdir()):
            if path.is_file():
                name = f"{prefix.strip('/')}/{path.name}" if prefix.strip("/") else path.name
                b.blob(name).upload_from_filename(str(path))
                names.append(f"gs://{bucket}/{name}")
        return names

    def upload_text(self, bucket: str, name: str, text: str) -> str:
        self.create_bucket(bucket).blob(name).upload_from_string(text)
        return f"gs://{bucket}/{name}"


def dump_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj, indent=1))
    return path
