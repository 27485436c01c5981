"""The batch job's input files: which files hold each table, and whether a CSV file
starts with the expected header."""
from __future__ import annotations

from typing import Dict, List, Optional

from transforms import records
from transforms.sources import file_format, find_table_files, first_csv_record

#: The four Fashion Campus tables the batch job reads.
KINDS = ("transactions", "customer", "product", "click_stream")


def find_inputs(root: str) -> Dict[str, List[str]]:
    """The files of each table under ``root`` (see transforms.sources.find_table_files)."""
    return {kind: find_table_files(root, kind) for kind in KINDS}


def check_header(path: str, kind: str) -> Optional[str]:
    """None if a CSV file can be read (the expected header, no header, or empty), else
    the reason (a header of other columns: see ``records.header_kind``)."""
    if file_format(path) != "csv":
        return None
    try:
        first = first_csv_record(path)
    except Exception as exc:  # noqa: BLE001
        return f"cannot read {path}: {exc}"
    if first is not None and records.header_kind(kind, first) == records.WRONG_HEADER:
        return records.wrong_header_reason(kind, path)
    return None


def usable_inputs(root: str):
    """``(inputs, header_dead)``: the files of each table under ``root`` whose header is
    right, and a DeadLetter (source ``batch:KIND``, the path, the reason) per file
    whose header is not."""
    inputs = find_inputs(root)
    header_dead = []
    for kind, paths in inputs.items():
        good = []
        for path in paths:
            reason = check_header(path, kind)
            if reason:
                header_dead.append(records.dead_letter(f"batch:{kind}", path, reason))
            else:
                good.append(path)
        inputs[kind] = good
    return inputs, header_dead
