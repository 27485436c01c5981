"""The batch job's staging folder: where its Parquet output goes, the run's data window
(``run.json``), loading the staged tables into the warehouse, and removing the folder."""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import uuid
from typing import Dict, Optional, Tuple

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from batch import churn_features as cf
from pipelines.batch_options import ShopstreamBatchOptions
from transforms.table_io import load_staged_table

log = logging.getLogger(__name__)

#: --write-mode window: the column that places a row in the run's data window.
WINDOW_COLUMNS = {"sales_facts": "date", "daily_sales": "date", "churn_features": "month"}


def join(base: str, *parts: str) -> str:
    return FileSystems.join(base, *parts) if "://" in base else os.path.join(base, *parts)


def staging_for(opts: PipelineOptions) -> str:
    """A fresh folder for this run's staged output: under ``--staging``, else a local
    temporary folder (local runners) or ``TEMP_LOCATION/shopstream-batch`` (remote)."""
    o = opts.view_as(ShopstreamBatchOptions)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
    if o.staging:
        return join(o.staging, run_id)
    runner = str(opts.view_as(StandardOptions).runner or "")
    temp = opts.view_as(GoogleCloudOptions).temp_location
    if "Direct" in runner or not runner or "FnApi" in runner:
        return tempfile.mkdtemp(prefix="shopstream-batch-")
    if not temp:
        raise ValueError("a remote runner needs --staging or --temp_location (gs://...)")
    return join(temp, "shopstream-batch", run_id)


def cleanup(staging: str) -> None:
    """Remove the staging folder (on gs:// every object under the prefix)."""
    try:
        if "://" in staging:
            FileSystems.delete([staging.rstrip("/") + "/"])
        else:
            shutil.rmtree(staging, ignore_errors=True)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not delete staging folder %s: %s", staging, exc)


def read_run_info(staging: str) -> Dict[str, Optional[str]]:
    try:
        with FileSystems.open(join(staging, "run.json")) as fh:
            return json.loads(fh.read().decode().strip() or "{}")
    except Exception:  # noqa: BLE001
        return {}


def data_window(table: str, info: Dict[str, Optional[str]]) -> Optional[Tuple[str, dt.date, dt.date]]:
    """``(column, lo, hi)``: the rows of ``table`` a ``window`` run replaces (dates first
    booking..as_of; months first booking month..last complete month), or None when the
    table has no window or the run has none (then rows are upserted by key)."""
    column = WINDOW_COLUMNS.get(table)
    if column is None or not info.get("as_of") or not info.get("first_date"):
        return None
    as_of = dt.date.fromisoformat(info["as_of"])
    first = dt.date.fromisoformat(info["first_date"])
    if column == "month":
        lo, hi = cf.month_start(first), cf.last_complete_month(as_of)
    else:
        lo, hi = first, as_of
    return None if lo > hi else (column, lo, hi)


def write_table(wh, table: str, pattern: str, mode: str, info: Dict[str, Optional[str]]) -> int:
    """Load one staged table. ``window`` replaces the rows of the run's data window — so
    groups that no longer exist (a fixed brand, a corrected booking) disappear too — and
    upserts tables without a window (churn_predictions); dead_letter is appended."""
    if table == "dead_letter":
        return load_staged_table(wh, table, pattern, "append")
    if mode != "window":
        return load_staged_table(wh, table, pattern, mode)
    window = data_window(table, info)
    if window is None:
        return load_staged_table(wh, table, pattern, "upsert")
    return load_staged_table(wh, table, pattern, "window", window)
