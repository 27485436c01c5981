"""Shared fixtures: real services on loopback, small generated data sets."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

# Nothing may leave loopback: stop google-auth probing the metadata server.
os.environ.setdefault("NO_GCE_CHECK", "true")
os.environ.setdefault("GCE_METADATA_HOST", "127.0.0.1:9")
os.environ.setdefault("GCE_METADATA_IP", "127.0.0.1:9")
os.environ.setdefault("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "true")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(proc, base: str, describe_failure, timeout: float = 30.0) -> None:
    """Poll ``base``/healthz until it answers 200; fail if ``proc`` exits or time runs out
    (``describe_failure()`` says why, e.g. the server's log)."""
    import httpx

    deadline = time.time() + timeout
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"shopstream serve did not start: {describe_failure()}")
        time.sleep(0.1)


class RedisServer:
    """A real `redis-server` process on a free loopback port (no persistence)."""

    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        binary = shutil.which("redis-server")
        if not binary:
            pytest.fail("redis-server is not on PATH: run `make install` (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def client(self):
        import redis
        return redis.Redis.from_url(self.url, decode_responses=True)


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory) -> Path:
    """A small generated Fashion Campus data set shared by the pipeline tests."""
    from pipelines.generate import generate

    out = tmp_path_factory.mktemp("data")
    generate(out_dir=str(out), customers=300, products=120, days=150, seed=11)
    return out


@pytest.fixture(scope="module")
def bq_emulator(tmp_path_factory):
    """The local BigQuery-API emulator (bqemulator) for one test module."""
    from tests.emulators import BigQueryEmulator

    emu = BigQueryEmulator(tmp_path_factory.mktemp("bqemu")).start()
    yield emu
    emu.stop()


@pytest.fixture
def bq_target(bq_emulator, monkeypatch):
    """A fresh ``bq://`` dataset; ``open_warehouse`` gets a client on the emulator."""
    import uuid

    from google.cloud import bigquery

    from tests.emulators import PROJECT, patch_bigquery_client_for_emulator

    patch_bigquery_client_for_emulator(monkeypatch)
    monkeypatch.setattr(bigquery, "Client", lambda *a, **k: bq_emulator.client())
    return f"bq://{PROJECT}.t_{uuid.uuid4().hex[:10]}"
