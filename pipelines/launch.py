"""Flex Template launch: build the streaming or the batch pipeline from the template
parameters and submit it — never waiting for it to finish.

Dataflow's Flex launcher runs ``FLEX_TEMPLATE_PYTHON_PY_FILE`` (``templates/launcher.py``,
a shim over :func:`main`) inside the template image with the parameters as
``--name=value`` arguments, plus the job's own (``--runner``, ``--project``, ``--region``,
``--temp_location`` …) and ``--template_location=gs://…/job_object``: the run then only
*writes* the job (the launcher submits it), so there is no job id to report.

Which pipeline: ``SHOPSTREAM_PIPELINE`` (set by the image) or a leading ``streaming`` /
``batch`` argument. Workers run the same image (``sdk_container_image``), which already
holds shopstream and its pinned dependencies (``--sdk_location=container``).

The batch job's CLI driver loads its staged output after the job; a launch must not
wait, so here the load runs inside the job (``batch_job.LoadStagedTables``).
"""
from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    GoogleCloudOptions,
    PipelineOptions,
    SetupOptions,
    StandardOptions,
    WorkerOptions,
)

from batch.inputs import usable_inputs
from pipelines import batch_job, streaming_job
from pipelines.batch import churn_version_for
from pipelines.batch_options import ShopstreamBatchOptions
from pipelines.batch_staging import staging_for
from pipelines.streaming_options import ShopstreamStreamingOptions
from transforms.spill import delete_spill

log = logging.getLogger("shopstream.launch")

PIPELINES = ("streaming", "batch")
#: Boolean (store_true) options: a template passes them as --name=true|false.
FLAG_OPTIONS = {"batch": ("geocode", "keep_staging"), "streaming": ()}
PIPELINE_ENV = "SHOPSTREAM_PIPELINE"
IMAGE_ENV = "SHOPSTREAM_SDK_CONTAINER_IMAGE"


# --------------------------------------------------------------------------- arguments
def normalise_args(argv: Sequence[str], flags: Sequence[str]) -> List[str]:
    """Turn ``--flag=true`` into ``--flag`` and drop ``--flag=false`` for store_true
    options (Flex Templates pass every parameter as ``--name=value``)."""
    out: List[str] = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        bare = name[2:].replace("-", "_") if name.startswith("--") else None
        if bare in flags and eq:
            v = value.strip().lower()
            if v in ("true", "1", "yes"):
                out.append(f"--{bare}")
            elif v in ("false", "0", "no", ""):
                continue
            else:
                raise ValueError(f"--{bare} must be true or false, got {value!r}")
        else:
            out.append(arg)
    return out


def split_pipeline(argv: Sequence[str]) -> Tuple[str, List[str]]:
    argv = list(argv)
    if argv and argv[0] in PIPELINES:
        return argv[0], argv[1:]
    kind = os.environ.get(PIPELINE_ENV, "")
    if kind not in PIPELINES:
        raise SystemExit(f"launcher: say which pipeline: {PIPELINE_ENV}=streaming|batch "
                         "or a first argument 'streaming' or 'batch'")
    return kind, argv


def pipeline_options(kind: str, argv: Sequence[str]) -> PipelineOptions:
    """PipelineOptions for ``kind`` with the launcher's defaults: DataflowRunner, the SDK
    from the container, no main session, streaming when reading Pub/Sub."""
    args = normalise_args(argv, FLAG_OPTIONS[kind])
    opts = PipelineOptions(args)
    std = opts.view_as(StandardOptions)
    if not std.runner:
        std.runner = "DataflowRunner"
    setup = opts.view_as(SetupOptions)
    setup.save_main_session = False
    if "Dataflow" in str(std.runner):
        if not any(a.startswith("--sdk_location") for a in args):
            setup.sdk_location = "container"
        worker = opts.view_as(WorkerOptions)
        if not worker.sdk_container_image and os.environ.get(IMAGE_ENV):
            worker.sdk_container_image = os.environ[IMAGE_ENV]
        if not worker.sdk_container_image:
            raise ValueError("sdk_container_image is required on Dataflow: the workers must "
                             "run the shopstream image (pass it as a template parameter)")
    if kind == "streaming":
        so = opts.view_as(ShopstreamStreamingOptions)
        if so.redis and urlsplit(so.redis).password:
            raise ValueError("the Redis URL holds a password, which would show in the job's "
                             "options: put it in Secret Manager and pass redis_secret "
                             "(projects/P/secrets/S) instead")
        if so.subscription:
            std.streaming = True
    return opts


# --------------------------------------------------------------------------- pipelines
class DeleteSpillWhenRead(beam.PTransform):
    """A bounded replay spills session payloads to a folder that the CLI deletes after
    the run; a launched job has no one waiting, so this step deletes it once every
    payload has been read (``done``: the output of the step that reads them)."""

    def __init__(self, spill_dir: str):
        super().__init__()
        self.spill_dir = spill_dir

    def expand(self, done):
        read = beam.pvalue.AsSingleton(done | "CountRead" >> beam.combiners.Count.Globally())
        return (done.pipeline | "Start" >> beam.Create([self.spill_dir])
                | "Delete" >> beam.Map(lambda folder, _n: delete_spill(folder), read))


def build_streaming(opts: PipelineOptions) -> beam.Pipeline:
    p = beam.Pipeline(options=opts)
    built = streaming_job.build_pipeline(p, opts.view_as(ShopstreamStreamingOptions))
    if built.get("spill_dir"):
        built["enriched"] | "DeleteSpill" >> DeleteSpillWhenRead(built["spill_dir"])
    return p


def build_batch(opts: PipelineOptions) -> beam.Pipeline:
    o = opts.view_as(ShopstreamBatchOptions)
    if not o.input or not o.warehouse:
        raise ValueError("--input and --warehouse are required")
    inputs, header_dead = usable_inputs(o.input)
    for d in header_dead:
        log.error(d.reason)
    p = beam.Pipeline(options=opts)
    batch_job.build_pipeline(p, opts, inputs, staging_for(opts), churn_version_for(o),
                   load=batch_job.InJobLoad(o.warehouse, o.write_mode, o.keep_staging, header_dead))
    return p


def build(kind: str, argv: Sequence[str]) -> beam.Pipeline:
    """The pipeline object for ``kind`` built from template-style arguments."""
    opts = pipeline_options(kind, argv)
    return build_streaming(opts) if kind == "streaming" else build_batch(opts)


def launch(kind: str, argv: Sequence[str]):
    """Build and submit (or, with ``--template_location``, write the job for the Flex
    launcher to submit); returns (pipeline, result). Never waits for the job."""
    p = build(kind, argv)
    result = p.run()
    template = p.options.view_as(GoogleCloudOptions).template_location
    if template:
        log.info("%s pipeline: job written to %s", kind, template)
    else:
        # A DataflowPipelineResult holds no job in dry-run or template mode.
        has_job = getattr(result, "has_job", False)
        log.info("submitted %s pipeline%s", kind, f": job {result.job_id()}" if has_job else "")
    return p, result


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kind, rest = split_pipeline(sys.argv[1:] if argv is None else argv)
    try:
        launch(kind, rest)
    except ValueError as exc:  # bad template parameters: a message, not a traceback
        log.error("%s launch failed: %s", kind, exc)
        return 2
    return 0
