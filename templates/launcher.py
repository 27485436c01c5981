"""Flex Template entry point: builds the streaming or the batch pipeline from the
template parameters and submits it — without waiting for it to finish.

The Dataflow Flex Template launcher runs this file (``FLEX_TEMPLATE_PYTHON_PY_FILE``)
inside the template image with the parameters as ``--name=value`` arguments, plus the
job's own (``--runner``, ``--project``, ``--region``, ``--temp_location`` …). Which
pipeline it builds comes from ``SHOPSTREAM_PIPELINE`` (set by each image's Dockerfile) or
a leading ``streaming`` / ``batch`` argument:

    python templates/launcher.py streaming --subscription=projects/P/subscriptions/S ...
    python templates/launcher.py batch --input=gs://B/data --warehouse=bq://P.D ...

Workers run the same image (``sdk_container_image``), which already holds shopstream
and its pinned dependencies, so nothing is staged but the job graph
(``--sdk_location=container``).

The batch job's CLI driver loads its staged Parquet output into the warehouse after the
job has finished. A template launch must not wait for that, so here the loading runs
inside the job: one step per table that starts when that table's files are final, and
a last step that removes the staging folder.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

log = logging.getLogger("shopstream.launcher")

PIPELINES = ("streaming", "batch")
#: Boolean (store_true) options: a template passes them as --name=true|false.
FLAG_OPTIONS = {"batch": ("geocode", "keep_staging"), "streaming": ()}
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
    kind = os.environ.get("SHOPSTREAM_PIPELINE", "")
    if kind not in PIPELINES:
        raise SystemExit("launcher: say which pipeline: SHOPSTREAM_PIPELINE=streaming|batch "
                         "or a first argument 'streaming' or 'batch'")
    return kind, argv


def pipeline_options(kind: str, argv: Sequence[str]):
    """PipelineOptions for ``kind`` with the launcher's defaults: DataflowRunner, the SDK
    from the container, no main session, streaming when reading Pub/Sub."""
    from apache_beam.options.pipeline_options import (PipelineOptions, SetupOptions,
                                                      StandardOptions, WorkerOptions)

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
        from pipelines.streaming_options import ShopstreamStreamingOptions

        if opts.view_as(ShopstreamStreamingOptions).subscription:
            std.streaming = True
    return opts


# --------------------------------------------------------------------------- streaming
def build_streaming(opts):
    import apache_beam as beam

    from pipelines.streaming import build_pipeline
    from pipelines.streaming_options import ShopstreamStreamingOptions

    p = beam.Pipeline(options=opts)
    build_pipeline(p, opts.view_as(ShopstreamStreamingOptions))
    return p


# --------------------------------------------------------------------------- batch
def load_staged_tables(_, warehouse: str, globs: Dict[str, str], write_mode: str,
                       staging: str, keep_staging: bool, header_dead: Sequence[dict],
                       *written_files) -> Dict[str, int]:
    """Load every staged table into the warehouse, as the batch CLI driver does after
    its job, then remove the staging folder. Runs once, on a worker, after all staged
    files are final (``written_files`` are side inputs that make it wait)."""
    from pipelines import batch
    from transforms.warehouse import open_warehouse

    info = batch._read_run_info(staging)
    written: Dict[str, int] = {}
    with open_warehouse(warehouse) as wh:
        for table, pattern in globs.items():
            written[table] = batch.write_table(wh, table, pattern, write_mode, info)
        if header_dead:
            written["dead_letter"] = written.get("dead_letter", 0) + wh.write(
                "dead_letter", list(header_dead), "append")
    if not keep_staging:
        batch._cleanup(staging)
    logging.getLogger("shopstream.launcher").info(
        "batch: as_of=%s rows written: %s", info.get("as_of"),
        " ".join(f"{t}={n}" for t, n in written.items()))
    return written


def _outputs_by_label(pipeline, labels) -> Dict[str, object]:
    """The output PCollection of each top-level applied transform named in ``labels``."""
    from apache_beam.pipeline import PipelineVisitor

    found: Dict[str, object] = {}

    class Visitor(PipelineVisitor):
        def enter_composite_transform(self, node):
            self.visit_transform(node)

        def visit_transform(self, node):
            if node.full_label in labels and node.outputs:
                found[node.full_label] = next(iter(node.outputs.values()))

    pipeline.visit(Visitor())
    return found


#: The batch graph's file writes that the load waits for: one per staged table
#: (Write + CamelCase table name) and the run's data window (WriteRunInfo).
def _write_labels(globs: Dict[str, str]) -> List[str]:
    return ["Write" + "".join(w.capitalize() for w in t.split("_")) for t in globs] + ["WriteRunInfo"]


def add_batch_loads(p, globs: Dict[str, str], warehouse: str, write_mode: str,
                    staging: str, keep_staging: bool, header_dead: Sequence[dict] = ()):
    """Add the warehouse load to the batch graph: one step that waits for every staged
    file write, loads the tables and removes the staging folder."""
    import apache_beam as beam

    labels = _write_labels(globs)
    found = _outputs_by_label(p, labels)
    missing = [label for label in labels if label not in found]
    if missing:
        raise RuntimeError(f"the batch graph has no write step(s) {', '.join(missing)}: "
                           "update templates/launcher.py")
    waits = [beam.pvalue.AsSingleton(found[label] | f"Done{label}" >> beam.combiners.Count.Globally())
             for label in labels]
    return (p | "StartLoad" >> beam.Create([None])
            | "LoadWarehouse" >> beam.Map(load_staged_tables, warehouse, dict(globs), write_mode,
                                          staging, keep_staging, list(header_dead), *waits))


def build_batch(opts):
    import apache_beam as beam

    from pipelines import batch
    from transforms import records

    o = opts.view_as(batch.ShopstreamBatchOptions)
    if not o.input or not o.warehouse:
        raise ValueError("--input and --warehouse are required")
    inputs = batch.find_inputs(o.input)
    header_dead = []
    for kind, paths in inputs.items():
        good = []
        for path in paths:
            reason = batch.check_header(path, kind)
            if reason:
                log.error(reason)
                header_dead.append(batch.dead_row(records.dead_letter(f"batch:{kind}", path, reason)))
            else:
                good.append(path)
        inputs[kind] = good
    churn_version = None
    if o.models:
        from models import artifacts

        churn_version = o.churn_model_version or artifacts.latest_version(o.models, "churn")
    staging, _ = batch._staging_for(opts)
    p = beam.Pipeline(options=opts)
    globs = batch.build_pipeline(p, opts, inputs, staging, churn_version)
    add_batch_loads(p, globs, o.warehouse, o.write_mode, staging, o.keep_staging, header_dead)
    return p


# --------------------------------------------------------------------------- main
def build(kind: str, argv: Sequence[str]):
    """The pipeline object for ``kind`` built from template-style arguments."""
    opts = pipeline_options(kind, argv)
    return build_streaming(opts) if kind == "streaming" else build_batch(opts)


def launch(kind: str, argv: Sequence[str]):
    """Build and submit; returns (pipeline, result). Never waits for the job."""
    p = build(kind, argv)
    result = p.run()
    job_id = getattr(result, "job_id", None)
    log.info("submitted %s pipeline%s", kind, f": job {job_id()}" if callable(job_id) else "")
    return p, result


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    kind, rest = split_pipeline(sys.argv[1:] if argv is None else argv)
    launch(kind, rest)
    return 0


if __name__ == "__main__":
    # Run as a script by the Flex Template launcher. Re-import this file as the module
    # templates.launcher (the image puts its folder on PYTHONPATH, for the workers too),
    # so that the load step is pickled by reference, not as a __main__ function.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from templates.launcher import main as _main

    sys.exit(_main())
