"""The bounded replay's spill folder: session payloads written by the parser and read
back after the one shuffle, named after the owner's pid so that the next run can remove
the folders of runs that were killed."""
from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from typing import List

from apache_beam.io.filesystems import FileSystems

log = logging.getLogger(__name__)


def read_payload(ref) -> bytes:
    """A shuffled session payload: the bytes, or ``(file, offset, length)`` of a spill."""
    if isinstance(ref, bytes):
        return ref
    path, offset, length = ref
    with FileSystems.open(path, compression_type="uncompressed") as fh:
        fh.seek(offset)
        return fh.read(length)


SPILL_PREFIX = "shopstream-replay-"
_SPILL_RE = re.compile(re.escape(SPILL_PREFIX) + r"(\d+)-[0-9a-f]+$")


def new_spill_dir(base: str) -> str:
    """A fresh spill folder name under ``base``, carrying this process's pid
    (``shopstream-replay-{pid}-{random}``); spill folders of dead processes under a
    local ``base`` — replays killed before they could clean up — are removed first."""
    remove_stale_spills(base)
    return f"{base.rstrip('/')}/{SPILL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_spills(base: str) -> List[str]:
    """Delete ``shopstream-replay-{pid}-*`` folders under a local ``base`` whose pid is no
    longer running; returns them. (On gs:// a pid says nothing about another machine:
    a bucket lifecycle rule on the temp prefix cleans those.)"""

    if "://" in base or not os.path.isdir(base):
        return []
    removed = []
    for name in os.listdir(base):
        m = _SPILL_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            path = os.path.join(base, name)
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log.info("removed the spill folder of a replay that did not finish: %s", path)
    return removed


def delete_spill(spill_dir: str) -> None:
    try:
        if "://" in spill_dir:
            # An object store has no folders: delete every object under the prefix
            # (``exists()`` of a bare prefix is False).
            if FileSystems.match([spill_dir.rstrip("/") + "/*"])[0].metadata_list:
                FileSystems.delete([spill_dir.rstrip("/") + "/"])
        elif FileSystems.exists(spill_dir):
            FileSystems.delete([spill_dir])
    except Exception as exc:  # noqa: BLE001 - leftovers are only disk space
        log.warning("could not delete %s: %s", spill_dir, exc)
