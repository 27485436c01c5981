"""Secrets read where they are used (on the workers), never carried in pipeline options."""
from __future__ import annotations

import re

_SECRET = re.compile(r"^projects/[^/]+/secrets/[^/]+(/versions/[^/]+)?$")


def secret_version_name(name: str) -> str:
    """``projects/P/secrets/S`` → ``projects/P/secrets/S/versions/latest``."""
    if not _SECRET.match(name or ""):
        raise ValueError(f"not a Secret Manager secret name "
                         f"(projects/P/secrets/S[/versions/V]): {name!r}")
    return name if "/versions/" in name else f"{name}/versions/latest"


def read_secret(name: str, client=None) -> str:
    """The payload of a Secret Manager secret version, as text."""
    if client is None:
        from google.cloud import secretmanager

        client = secretmanager.SecretManagerServiceClient()
    response = client.access_secret_version(request={"name": secret_version_name(name)})
    return response.payload.data.decode("utf-8")
