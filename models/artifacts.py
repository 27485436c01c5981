"""Versioned model artifacts in a local folder or on GCS.

Layout (SPEC §3 "models: local folder | GCS folder")::

    {models_dir}/{model}/{version}/...files...   (e.g. model.joblib, weights.json)
    {models_dir}/{model}/{version}/metadata.json (metrics, training window, trained_at)
    {models_dir}/{model}/LATEST                  (the current version's name, one line)

A version is ``{window_start}_{window_end}-{hash}``: the training window (YYYYMMDD) and
the first 12 hex digits of a SHA-256 of the artifact's content (its files, or — for
pickled models, whose bytes are not stable — of the training data, features and
parameters), so the same model trained on the same data gets the same name and a
retrain on other data never overwrites another version.
Files are written first, ``metadata.json`` next and ``LATEST`` last, so a reader that
follows ``LATEST`` never sees a half-written version. ``gs://`` paths go through
``apache_beam.io.filesystems.FileSystems``; local writes are atomic renames.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import tempfile
from typing import IO, Any, Dict, Mapping, Optional, Tuple

from apache_beam.io.filesystems import FileSystems

LATEST = "LATEST"
METADATA = "metadata.json"


def is_remote(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def write_bytes(path: str, data: bytes) -> None:
    if is_remote(path):
        with FileSystems.create(path) as fh:
            fh.write(data)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_bytes(path: str) -> bytes:
    if is_remote(path):
        with FileSystems.open(path) as fh:
            return fh.read()
    with open(path, "rb") as fh:
        return fh.read()


def exists(path: str) -> bool:
    if is_remote(path):
        return FileSystems.exists(path)
    return os.path.exists(path)


def open_text(path: str, name: str) -> Tuple[str, IO[str]]:
    """(resolved path, text stream) of ``path`` itself or, when ``path`` is a folder,
    of ``path/name`` — local or on any Beam filesystem (``gs://``). Used for a generated
    data set's ``ground_truth/`` files; a missing file is a FileNotFoundError naming it."""
    inner = join(path, name)
    if os.path.isdir(path) or (is_remote(path) and FileSystems.exists(inner)):
        path = inner
    if not (os.path.isfile(path) if not is_remote(path) else FileSystems.exists(path)):
        raise FileNotFoundError(f"no ground-truth file at {path}")
    if not is_remote(path):
        return path, open(path, newline="", encoding="utf-8")
    raw = FileSystems.open(path)              # .gz and friends by the file name
    return path, io.TextIOWrapper(raw, encoding="utf-8", newline="")


def content_hash(files: Mapping[str, bytes]) -> str:
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(b"\0")
        h.update(hashlib.sha256(files[name]).digest())
    return h.hexdigest()


def make_version(window_start: dt.date, window_end: dt.date, files: Mapping[str, bytes],
                 digest: Optional[str] = None) -> str:
    """``{start}_{end}-{hash}``; ``digest`` replaces the hash of ``files`` when the
    serialised model is not byte-stable (pickles): e.g. a hash of the training data and
    parameters, which identifies the model as well."""
    return f"{window_start:%Y%m%d}_{window_end:%Y%m%d}-{(digest or content_hash(files))[:12]}"


def _json_default(v: Any):
    if isinstance(v, (dt.datetime, dt.date)):
        return v.isoformat()
    if hasattr(v, "item"):          # numpy scalars
        return v.item()
    if hasattr(v, "tolist"):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def save(models_dir: str, model: str, version: str, files: Mapping[str, bytes],
         metadata: Dict[str, Any], make_latest: bool = True) -> str:
    """Write a version's files, its metadata.json, then point LATEST at it."""
    folder = join(models_dir, model, version)
    for name, data in files.items():
        write_bytes(join(folder, name), data)
    meta = dict(metadata, model=model, version=version, files=sorted(files))
    write_bytes(join(folder, METADATA), dumps(meta))
    if make_latest:
        write_bytes(join(models_dir, model, LATEST), (version + "\n").encode())
    return folder


def latest_version(models_dir: str, model: str) -> Optional[str]:
    path = join(models_dir, model, LATEST)
    if not exists(path):
        return None
    version = read_bytes(path).decode().strip()
    return version or None


def version_dir(models_dir: str, model: str, version: Optional[str] = None) -> str:
    version = version or latest_version(models_dir, model)
    if not version:
        raise FileNotFoundError(f"no {model} model under {models_dir} (no {LATEST} file)")
    return join(models_dir, model, version)


def load_metadata(models_dir: str, model: str, version: Optional[str] = None) -> Dict[str, Any]:
    return json.loads(read_bytes(join(version_dir(models_dir, model, version), METADATA)))


def load_file(models_dir: str, model: str, name: str, version: Optional[str] = None) -> bytes:
    return read_bytes(join(version_dir(models_dir, model, version), name))


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def metric_rows(model: str, version: str, trained_at: dt.datetime,
                metrics: Mapping[str, Any]) -> list:
    """``model_metrics`` rows for the numeric entries of ``metrics``."""
    rows = []
    for name, value in sorted(metrics.items()):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if value != value:  # NaN
            continue
        rows.append({"model": model, "model_version": version, "trained_at": trained_at,
                     "metric": name, "value": float(value)})
    return rows
