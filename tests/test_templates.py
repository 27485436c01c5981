"""Flex Templates without a cloud: Dockerfiles, metadata ↔ pipeline options, and both
pipelines translated for the DataflowRunner offline (``--dry_run``) from the template
parameters' example values (the ``Example: ...`` at the end of each helpText).

docker has no engine here, so the images are checked by reading their Dockerfiles.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
KINDS = ("streaming", "batch")
#: Standard Beam / Dataflow options a template may declare besides the pipeline's own.
BEAM_PARAMETERS = {"sdk_container_image"}
GCLOUD_MESSAGES = Path("/usr/lib/google-cloud-sdk/lib/googlecloudsdk/generated_clients/apis/"
                       "dataflow/v1b3/dataflow_v1b3_messages.py")


def _has(module: str, attr: str) -> bool:
    """Whether ``module`` defines ``attr`` — read from its source, not imported, so that
    collecting this file registers no PipelineOptions class."""
    try:
        spec = importlib.util.find_spec(module)
    except ImportError:
        return False
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return False
    return bool(re.search(rf"^(def|class) {attr}\b", Path(spec.origin).read_text(), re.M))


needs_streaming = pytest.mark.skipif(
    not _has("pipelines.streaming_job", "build_pipeline"),
    reason="pipelines/streaming_job.py with build_pipeline(p, options) is not there yet")
needs_batch = pytest.mark.skipif(
    not _has("pipelines.batch_options", "ShopstreamBatchOptions"),
    reason="pipelines/batch_options.py with ShopstreamBatchOptions is not there yet")


def load_launcher():
    """The launcher module inside the package (templates/launcher.py is a shim over it)."""
    return importlib.import_module("pipelines.launch")


def metadata(kind: str) -> dict:
    return json.loads((TEMPLATES / kind / "metadata.json").read_text())


def example(param: dict) -> str:
    m = re.search(r"Example: (\S+)$", param["helpText"])
    assert m, f"{param['name']}: helpText must end with 'Example: VALUE'"
    return m.group(1)


def options_class(kind: str):
    if kind == "streaming":
        from pipelines.streaming_options import ShopstreamStreamingOptions
        return ShopstreamStreamingOptions
    from pipelines.batch_options import ShopstreamBatchOptions
    return ShopstreamBatchOptions


def declared_options(cls) -> dict:
    """dest → argparse action of the options the class itself declares."""
    parser = argparse.ArgumentParser()
    cls._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.dest != "help"}


def _kind_param(kind):
    marks = [needs_streaming] if kind == "streaming" else [needs_batch]
    return pytest.param(kind, marks=marks, id=kind)


ALL_KINDS = [_kind_param(k) for k in KINDS]


# --------------------------------------------------------------------------- Dockerfile
DOCKERFILE = TEMPLATES / "Dockerfile"


def dockerfile(kind: str) -> list:
    """Instructions of templates/Dockerfile built with ``--build-arg PIPELINE=kind``, as
    (KEYWORD, text) with continuation lines joined and ``${ARG}``s of FROM/ENV expanded."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, args = [], {"PIPELINE": kind}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            word, rest = word.upper(), rest.strip()
            if word == "ARG":
                name, eq, default = rest.partition("=")
                args.setdefault(name, default if eq else args.get(name, ""))
            if word in ("FROM", "ENV"):
                rest = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), rest)
            out.append((word, rest))
    return out


def image_env(kind: str) -> dict:
    """The ENV of the final image built for ``kind``."""
    env = {}
    for word, rest in dockerfile(kind):
        if word == "ENV":
            key, _, value = rest.partition("=")
            env[key.strip()] = value.strip().strip('"')
    return env


def _requirement_version(name: str) -> str:
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        m = re.match(rf"^{re.escape(name)}(\[[^\]]*\])?==(\S+)", line.strip())
        if m:
            return m.group(2)
    raise AssertionError(f"{name} is not pinned in requirements.txt")


def test_one_dockerfile_for_both_pipelines():
    assert DOCKERFILE.is_file()
    assert not list(TEMPLATES.glob("*/Dockerfile")), "one templates/Dockerfile with ARG PIPELINE"
    assert ("ARG", "PIPELINE") in dockerfile("batch")


@pytest.mark.parametrize("kind", KINDS)
def test_dockerfile_base_images_pinned_and_launcher_copied(kind):
    ins = dockerfile(kind)
    froms = [rest.split()[0] for word, rest in ins if word == "FROM"]
    for image in froms:
        name, _, tag = image.rpartition(":")
        assert "@sha256:" in image or (name and tag and "/" not in tag), f"{image} not pinned"
        assert tag != "latest", f"{image}: pin a version, not latest"
    beam = _requirement_version("apache-beam")
    assert froms[-1] == f"apache/beam_python3.11_sdk:{beam}"  # the final stage = SDK image
    launcher = [f for f in froms if f.startswith(
        "gcr.io/dataflow-templates-base/python311-template-launcher-base")]
    assert len(launcher) == 1, froms
    alias = dict((rest.split()[0], rest.split()[-1]) for w, rest in ins
                 if w == "FROM" and " AS " in rest.upper())
    copies = [rest for word, rest in ins if word == "COPY" and rest.startswith("--from=")]
    launcher_stage = alias.get(launcher[0], launcher[0])
    assert any(c.startswith(f"--from={launcher_stage} /opt/google/dataflow/python_template_launcher")
               for c in copies), copies
    assert "list-tags" in DOCKERFILE.read_text()  # how to move the launcher base


@pytest.mark.parametrize("kind", KINDS)
def test_dockerfile_installs_constrained_requirements_then_the_wheel_without_deps(kind):
    ins = dockerfile(kind)
    final = max(i for i, (w, _r) in enumerate(ins) if w == "FROM")
    runs = [(i, rest) for i, (word, rest) in enumerate(ins) if word == "RUN" and i > final]
    req = [i for i, r in runs
           if re.search(r"pip install .*-r requirements\.txt -c constraints\.txt", r)]
    pkg = [i for i, r in runs if re.search(r"pip install [^&]*--no-deps /wheels/\S*\.whl", r)]
    assert req and pkg and req[0] < pkg[0], runs
    assert any("pip check" in r for _, r in runs)
    # the worker image holds no API server / report libraries
    worker_reqs = (ROOT / "requirements.txt").read_text().lower()
    for name in ("fastapi", "uvicorn", "plotly"):
        assert name not in worker_reqs, name
    # every COPY source exists in the repository (the build context is the repo root)
    for word, rest in ins:
        if word == "COPY" and not rest.startswith("--from="):
            *sources, _dest = rest.split()
            for src in sources:
                assert (ROOT / src).exists(), f"COPY {src}: not in the repository"


def test_constraints_pin_every_installed_distribution():
    """constraints.txt (make constraints) holds the version of every distribution of
    the tested venv, and make install uses it."""
    from importlib import metadata as md

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    for req in ("requirements.txt", "requirements-serve.txt", "requirements-dev.txt"):
        for line in (ROOT / req).read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?==(\S+)", line.strip())
            if m:
                assert pins.get(re.sub(r"[-_.]+", "-", m.group(1)).lower()) == m.group(3), line
    for dist in md.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        if name in ("shopstream", "pip", "setuptools", "wheel"):
            continue
        assert pins.get(name) == dist.version, f"{name} {dist.version}: run make constraints"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_dockerfile_flex_template_env_and_beam_entrypoint(kind):
    ins = dockerfile(kind)
    env = image_env(kind)
    args = dict(rest.split("=", 1) for word, rest in ins if word == "ARG" and "=" in rest)
    py_file = env["FLEX_TEMPLATE_PYTHON_PY_FILE"]
    workdir = args.get("WORKDIR", "/")
    rel = Path(py_file).relative_to(workdir)
    assert (ROOT / rel).is_file(), py_file
    copied = [rest.split()[-1] for word, rest in ins if word == "COPY"]
    assert any(c.rstrip("/").lstrip("./") in (str(rel), str(rel.parent)) for c in copied), copied
    assert env["SHOPSTREAM_PIPELINE"] == kind
    assert "PYTHONPATH" not in env  # shopstream is an installed package, not a folder
    entry = [rest for word, rest in ins if word == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["/opt/apache/beam/boot"]


def test_launcher_never_waits_for_the_job():
    src = (ROOT / "pipelines" / "launch.py").read_text()
    code = "\n".join(ln for ln in src.splitlines() if not ln.strip().startswith("#"))
    code = re.sub(r'"""[\s\S]*?"""', "", code)
    assert "wait_until_finish" not in code
    assert ".run()" in code


# --------------------------------------------------------------------------- metadata
@pytest.mark.parametrize("kind", KINDS)
def test_metadata_shape(kind):
    meta = metadata(kind)
    assert meta["name"] and meta["description"]
    assert meta["streaming"] is (kind == "streaming")
    names = [p["name"] for p in meta["parameters"]]
    assert len(names) == len(set(names))
    for p in meta["parameters"]:
        assert set(p) >= {"name", "label", "helpText", "regexes"}, p["name"]
        assert re.fullmatch(r"[a-z][a-z0-9_]*", p["name"])
        for rx in p["regexes"]:
            re.compile(rx)
        value = example(p)
        assert any(re.fullmatch(rx, value) for rx in p["regexes"]), (p["name"], value)


@pytest.mark.skipif(not GCLOUD_MESSAGES.exists(),
                    reason="the Cloud SDK's Dataflow API message definitions are not installed")
@pytest.mark.parametrize("kind", KINDS)
def test_metadata_is_a_valid_dataflow_template_metadata_message(kind):
    """Parse with the Dataflow v1b3 API messages shipped in the Cloud SDK: every field
    and enum value (paramType) must be known to the API."""
    from apitools.base.py import encoding

    msgs = _gcloud_messages()
    text = (TEMPLATES / kind / "metadata.json").read_text()
    msg = encoding.JsonToMessage(msgs.TemplateMetadata, text)
    assert not msg.all_unrecognized_fields()
    for p in msg.parameters:
        assert not p.all_unrecognized_fields(), p.name
        assert p.paramType is not None, p.name
    assert len(msg.parameters) == len(metadata(kind)["parameters"])


def _gcloud_messages():
    """The Dataflow v1b3 API message classes shipped in the Cloud SDK."""
    name = "shopstream_test_dataflow_v1b3_messages"
    msgs = sys.modules.get(name)
    if msgs is None:
        spec = importlib.util.spec_from_file_location(name, GCLOUD_MESSAGES)
        msgs = importlib.util.module_from_spec(spec)
        sys.modules[name] = msgs  # apitools resolves nested message types by module name
        spec.loader.exec_module(msgs)
    return msgs


REJECT = {
    "subscription": ["projects/p/topics/t", "my-sub", "projects//subscriptions/s",
                     "projects/p/subscriptions/s/extra"],
    "orders_subscription": ["projects/p/topics/orders"],
    "input": ["/local/folder", "s3://bucket/data", "gs://"],
    "products": ["gs://bucket", "product.csv"],
    "weights": ["weights.json"],
    "models": ["models/"],
    "staging": ["/tmp/staging"],
    "warehouse": ["my-project.shopstream", "bq://my-project", "bq://my-project.a.b",
                  "warehouse/demo.duckdb", "bq://P.shopstream"],
    "redis": ["10.0.0.3:6379", "http://redis", "redis://:s3cret@10.0.0.3:6379/0",
              "redis://user:pw@10.0.0.3:6379"],
    "redis_secret": ["s3cret", "projects/p/secrets", "projects/p/secrets/s/versions"],
    "warehouse_refresh": ["15m", "-900"],
    "visit_gap": ["-5", "abc", "30m"],
    "lookback": ["1.5", "-1"],
    "dedup_ttl": ["1h"],
    "top_n": ["0", "ten"],
    "as_of": ["31/07/2022", "2022-7-31"],
    "geocode": ["yes", "1"],
    "keep_staging": ["True"],
    "write_mode": ["append", "merge"],
    "sdk_container_image": ["shopstream streaming", ""],
    "churn_model_version": ["v 1", "a/b"],
    "geocode_cache": ["", "cache file.json", "geocode.txt"],
}


@pytest.mark.parametrize("kind", KINDS)
def test_regexes_reject_bad_values(kind):
    for p in metadata(kind)["parameters"]:
        for bad in REJECT.get(p["name"], []):
            assert not any(re.fullmatch(rx, bad) for rx in p["regexes"]), (p["name"], bad)
    names = {p["name"] for p in metadata(kind)["parameters"]}
    assert names <= set(REJECT), f"add rejected samples for {names - set(REJECT)}"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_parameters_match_pipeline_options_both_ways(kind):
    from apache_beam.options.pipeline_options import PipelineOptions, WorkerOptions

    declared = declared_options(options_class(kind))
    params = {p["name"]: p for p in metadata(kind)["parameters"]}
    for name in params:
        assert name in declared or name in BEAM_PARAMETERS, \
            f"template parameter {name!r} is not an option of {options_class(kind).__name__}"
    for dest, action in declared.items():
        if action.default is None:
            assert dest in params, f"option {dest!r} has no default and no template parameter"
    for name, action in declared.items():
        if name in params:
            # required in the template ⇔ the pipeline cannot run without it
            if not params[name].get("isOptional"):
                assert action.default is None, name
    assert "sdk_container_image" in declared_options(WorkerOptions)
    # every example value parses into the option (booleans as the launcher passes them)
    launcher = load_launcher()
    argv = [f"--{n}={example(p)}" for n, p in params.items()]
    opts = PipelineOptions(launcher.normalise_args(argv, launcher.FLAG_OPTIONS[kind]))
    view = opts.view_as(options_class(kind))
    for n, p in params.items():
        got = getattr(view, n, None) if n in declared else opts.view_as(WorkerOptions).sdk_container_image
        assert got is not None, n
        if isinstance(got, bool):
            assert got == (example(p) == "true"), n
        elif isinstance(got, (int, float)):
            assert got == float(example(p)), n
        else:
            assert str(got) == example(p), n


def test_launcher_boolean_parameters():
    launcher = load_launcher()
    flags = ("geocode", "keep_staging")
    assert launcher.normalise_args(["--geocode=true", "--keep_staging=false", "--input=gs://b/x"],
                                   flags) == ["--geocode", "--input=gs://b/x"]
    assert launcher.normalise_args(["--keep-staging=TRUE"], flags) == ["--keep_staging"]
    with pytest.raises(ValueError):
        launcher.normalise_args(["--geocode=maybe"], flags)


def test_launcher_requires_a_worker_image_on_dataflow(monkeypatch):
    launcher = load_launcher()
    monkeypatch.delenv(launcher.IMAGE_ENV, raising=False)
    with pytest.raises(ValueError, match="sdk_container_image"):
        launcher.pipeline_options("streaming", ["--runner=DataflowRunner"])
    monkeypatch.setenv(launcher.IMAGE_ENV, "r-docker.pkg.dev/p/r/i:1")
    from apache_beam.options.pipeline_options import SetupOptions, WorkerOptions
    opts = launcher.pipeline_options("streaming", ["--runner=DataflowRunner"])
    assert opts.view_as(WorkerOptions).sdk_container_image == "r-docker.pkg.dev/p/r/i:1"
    assert opts.view_as(SetupOptions).sdk_location == "container"
    with pytest.raises(SystemExit):
        monkeypatch.delenv("SHOPSTREAM_PIPELINE", raising=False)
        launcher.split_pipeline(["--input=x"])
    assert launcher.split_pipeline(["batch", "--input=x"]) == ("batch", ["--input=x"])


@needs_streaming
@needs_batch
def test_both_pipelines_options_can_live_in_one_process():
    """Beam builds ONE argparse parser from every PipelineOptions subclass that is
    imported (Pipeline.run → get_all_options). The streaming and batch options classes
    both declare --input, --warehouse, --models, --staging and --visit_gap, so once both
    modules are imported every pipeline run in that process fails with "conflicting
    option string". (The Flex Template images import only one; the CLI loads only the
    command's module; a test session imports both.)"""
    from apache_beam.options.pipeline_options import PipelineOptions

    importlib.import_module("pipelines.streaming_options")
    importlib.import_module("pipelines.batch_options")
    try:
        PipelineOptions(["--input=gs://b/x", "--visit_gap=60"]).get_all_options()
    except argparse.ArgumentError as exc:
        pytest.fail(f"{exc}: ShopstreamStreamingOptions and ShopstreamBatchOptions declare "
                    "the same flags; let their _both() helpers skip a flag that is already "
                    "on the parser (same dest, type and default in both classes)")


# --------------------------------------------------------------------------- launches
# The Flex Template launches themselves: tests/test_flex_launch.py.


@pytest.mark.slow
@needs_batch
def test_batch_template_loads_like_the_cli_driver(tmp_path):
    """The in-job load, run for real on the DirectRunner with local paths, leaves the
    same tables as `shopstream batch` (which loads after the job) and removes the
    staging folder."""
    from pipelines.batch import options_from_args, register, run_pipeline
    from pipelines.generate import generate
    from transforms.warehouse import open_warehouse

    launcher = load_launcher()
    data = tmp_path / "data"
    generate(out_dir=str(data), customers=30, products=25, days=100, seed=9)
    staging = tmp_path / "staging"
    p, result = launcher.launch("batch", [
        "--runner=DirectRunner", f"--input={data}", f"--warehouse={tmp_path / 'tpl.duckdb'}",
        f"--staging={staging}", "--keep_staging=false", "--geocode=false"])
    result.wait_until_finish()  # the launcher itself never waits; the test does
    assert not list(staging.rglob("*.parquet"))

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args, extra = parser.parse_known_args(["batch", f"--input={data}",
                                           f"--warehouse={tmp_path / 'cli.duckdb'}"])
    args.beam_args = extra
    run_pipeline(options_from_args(args))

    def counts(path):
        with open_warehouse(str(path)) as wh:
            return {t: wh.query(f"SELECT count(*) AS n FROM {t}")[0]["n"]
                    for t in ("sales_facts", "daily_sales", "churn_features", "dead_letter")}

    got = counts(tmp_path / "tpl.duckdb")
    assert got == counts(tmp_path / "cli.duckdb")
    assert got["sales_facts"] > 0 and got["churn_features"] > 0


# --------------------------------------------------------------------------- cloud.mk
CLOUD_VARS = {
    "GCP_PROJECT": "my-project", "GCP_REGION": "asia-southeast2", "GCS_BUCKET": "my-bucket",
    "IMAGE_TAG": "t1", "REDIS_HOST": "10.0.0.3", "DATAFLOW_SA": "df@my-project.iam.gserviceaccount.com",
    "SCHEDULER_SA": "sched@my-project.iam.gserviceaccount.com", "AS_OF": "2022-07-31",
}


@pytest.fixture
def cloud_make(tmp_path):
    """Run a cloud.mk target as users do (through the top-level Makefile, which includes
    it) with gcloud/bq/shopstream replaced by recording stubs."""
    import shutil
    import subprocess

    if not shutil.which("make"):
        pytest.skip("GNU make is not installed")
    log = tmp_path / "calls.jsonl"
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, rc in (("gcloud", 0), ("bq", 0), ("shopstream", 0)):
        stub = stubs / name
        stub.write_text(
            f"#!{sys.executable}\nimport json, sys\n"
            f"open({str(log)!r}, 'a').write(json.dumps([{name!r}] + sys.argv[1:]) + '\\n')\n"
            # `bq show` answers "not found" so that bq-tables creates everything
            f"sys.exit(1 if {name!r} == 'bq' and 'show' in sys.argv else {rc})\n")
        stub.chmod(0o755)

    def run(target, **extra):
        variables = {**CLOUD_VARS, "GCLOUD": str(stubs / "gcloud"), "BQ": str(stubs / "bq"),
                     "SHOPSTREAM": str(stubs / "shopstream"), "PYTHON3": sys.executable,
                     "CLOUD_BUILD_DIR": str(tmp_path / "build"), **extra}
        proc = subprocess.run(["make", "--no-print-directory", target]
                              + [f"{k}={v}" for k, v in variables.items()],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        calls = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
        log.unlink(missing_ok=True)
        return proc, calls

    run.build = tmp_path / "build"
    return run


def _params(call) -> dict:
    out = {}
    for arg in call:
        if arg.startswith("--parameters="):
            k, _, v = arg[len("--parameters="):].partition("=")
            out[k] = v
    return out


def test_cloud_mk_requires_settings(cloud_make):
    proc, calls = cloud_make("template-run-batch", GCP_PROJECT="")
    assert proc.returncode != 0 and not calls
    assert "GCP_PROJECT is not set" in proc.stderr


def test_cloud_mk_template_build_both_images_and_specs(cloud_make):
    proc, calls = cloud_make("template-build")
    assert proc.returncode == 0, proc.stderr
    builds = [c for c in calls if c[1:3] == ["builds", "submit"]]
    specs = [c for c in calls if c[1:4] == ["dataflow", "flex-template", "build"]]
    assert len(builds) == 2 and len(specs) == 2
    for kind, build, spec in zip(KINDS, builds, specs):
        image = f"asia-southeast2-docker.pkg.dev/my-project/shopstream/shopstream-{kind}:t1"
        assert (f"--substitutions=_DOCKERFILE=templates/Dockerfile,_PIPELINE={kind},"
                f"_IMAGE={image}") in build
        assert spec[4] == f"gs://my-bucket/templates/shopstream-{kind}.json"
        assert f"--image={image}" in spec and "--sdk-language=PYTHON" in spec
        assert f"--metadata-file=templates/{kind}/metadata.json" in spec
    config = (cloud_make.build / "cloudbuild.yaml").read_text()
    assert ('"-f", "${_DOCKERFILE}", "--build-arg", "PIPELINE=${_PIPELINE}", '
            '"-t", "${_IMAGE}", "."') in config
    assert 'images: ["${_IMAGE}"]' in config


@pytest.mark.parametrize("kind", KINDS)
def test_cloud_mk_template_run_passes_valid_template_parameters(cloud_make, kind):
    proc, calls = cloud_make(f"template-run-{kind}")
    assert proc.returncode == 0, proc.stderr
    (call,) = calls
    assert call[1:4] == ["dataflow", "flex-template", "run"]
    assert f"--template-file-gcs-location=gs://my-bucket/templates/shopstream-{kind}.json" in call
    assert "--region=asia-southeast2" in call
    assert "--service-account-email=df@my-project.iam.gserviceaccount.com" in call
    assert ("--enable-streaming-engine" in call) is (kind == "streaming")
    declared = {p["name"]: p for p in metadata(kind)["parameters"]}
    params = _params(call)
    assert params["sdk_container_image"].endswith(f"/shopstream-{kind}:t1")
    for name, value in params.items():
        assert name in declared, name
        assert any(re.fullmatch(rx, value) for rx in declared[name]["regexes"]), (name, value)
    required = {n for n, p in declared.items() if not p.get("isOptional")}
    assert required <= set(params)
    if kind == "streaming":
        assert params["subscription"] == "projects/my-project/subscriptions/shopstream-clicks-sub"
        assert params["redis"] == "redis://10.0.0.3:6379/0"
    else:
        assert params["as_of"] == "2022-07-31"


@needs_streaming
def test_cloud_mk_replay_gcs_runs_replay_on_dataflow(cloud_make):
    from apache_beam.options.pipeline_options import (
        GoogleCloudOptions,
        PipelineOptions,
        StandardOptions,
        WorkerOptions,
    )

    from pipelines.cli import build_parser

    proc, calls = cloud_make("replay-gcs")
    assert proc.returncode == 0, proc.stderr
    (call,) = calls
    argv = call[1:]
    args, extra = build_parser(argv).parse_known_args(argv)
    assert args.command == "replay"
    assert args.input == "gs://my-bucket/shopstream/data"
    assert args.warehouse == "bq://my-project.shopstream"
    assert args.redis == "redis://10.0.0.3:6379/0"
    opts = PipelineOptions(extra)
    assert opts.view_as(StandardOptions).runner == "DataflowRunner"
    gco = opts.view_as(GoogleCloudOptions)
    assert (gco.project, gco.region) == ("my-project", "asia-southeast2")
    assert gco.temp_location.startswith("gs://my-bucket/")
    assert opts.view_as(WorkerOptions).sdk_container_image.endswith("/shopstream-streaming:t1")


def test_cloud_mk_bq_tables_from_schemas(cloud_make):
    from transforms.warehouse import TABLES, table_schema

    proc, calls = cloud_make("bq-tables")
    assert proc.returncode == 0, proc.stderr
    made = {c[-1].split(".")[-1]: c for c in calls if "mk" in c and "--table" in c}
    assert set(made) == set(TABLES)
    assert any("--dataset" in c and "mk" in c for c in calls)
    for table, call in made.items():
        schema = table_schema(table)
        part = schema.get("timePartitioning")
        if part:
            assert f"--time_partitioning_field={part['field']}" in call
            assert f"--time_partitioning_type={part['type']}" in call
        else:
            assert not any(a.startswith("--time_partitioning") for a in call)
        if schema.get("clustering"):
            assert f"--clustering_fields={','.join(schema['clustering'])}" in call
        schema_file = Path(call[call.index("--schema") + 1])
        assert json.loads(schema_file.read_text()) == schema["fields"]
        assert call[-1] == f"my-project:shopstream.{table}"


def test_cloud_mk_schedule_batch_posts_a_valid_launch_request(cloud_make):
    proc, calls = cloud_make("schedule-batch")
    assert proc.returncode == 0, proc.stderr
    create = [c for c in calls if c[1:5] == ["scheduler", "jobs", "create", "http"]]
    assert len(create) == 1
    call = create[0]
    assert ("--uri=https://dataflow.googleapis.com/v1b3/projects/my-project/locations/"
            "asia-southeast2/flexTemplates:launch") in call
    assert "--schedule=0 2 * * *" in call and "--http-method=POST" in call
    assert "--oauth-service-account-email=sched@my-project.iam.gserviceaccount.com" in call
    body_file = next(a.split("=", 1)[1] for a in call if a.startswith("--message-body-from-file="))
    body = json.loads(Path(body_file).read_text())
    launch = body["launchParameter"]
    assert launch["containerSpecGcsPath"] == "gs://my-bucket/templates/shopstream-batch.json"
    declared = {p["name"]: p for p in metadata("batch")["parameters"]}
    for name, value in launch["parameters"].items():
        assert any(re.fullmatch(rx, value) for rx in declared[name]["regexes"]), (name, value)
    assert {n for n, p in declared.items() if not p.get("isOptional")} <= set(launch["parameters"])
    if GCLOUD_MESSAGES.exists():  # every field known to the Dataflow API
        from apitools.base.py import encoding

        msgs = _gcloud_messages()
        req = encoding.JsonToMessage(msgs.LaunchFlexTemplateRequest, json.dumps(body))
        assert not req.all_unrecognized_fields()
        assert not req.launchParameter.all_unrecognized_fields()
        assert not req.launchParameter.environment.all_unrecognized_fields()
        assert req.launchParameter.environment.serviceAccountEmail == CLOUD_VARS["DATAFLOW_SA"]


def test_readme_deploy_table_list_matches_the_schemas():
    from transforms.warehouse import TABLES, table_schema

    rows = {}
    for line in (TEMPLATES.parent / "README.md").read_text().splitlines():
        m = re.match(r"^\| `(\w+)` \| (.+?) \| (.+?) \| (.+?) \|$", line)
        if m and not m.group(1).endswith("_SA"):  # not the IAM role table
            rows[m.group(1)] = m.groups()[1:]
    assert set(rows) == set(TABLES)
    for table, (part, clustering, key) in rows.items():
        schema = table_schema(table)
        p = schema.get("timePartitioning")
        assert part == (f"{p['type']} on `{p['field']}`" if p else "—"), table
        assert clustering == (", ".join(schema.get("clustering") or []) or "—"), table
        assert key == (", ".join(schema.get("key") or []) or "— (append)"), table


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_metadata_enums_and_defaults_are_the_options(kind):
    """An ENUM parameter offers exactly the option's choices, and a helpText that names a
    default ("X (default)" or "(default X)") names the option's default."""
    declared = declared_options(options_class(kind))
    for p in metadata(kind)["parameters"]:
        action = declared.get(p["name"])
        if action is None:
            continue
        if p.get("paramType") == "ENUM" or action.choices:
            assert [o["value"] for o in p.get("enumOptions", [])] == list(action.choices), p["name"]
            assert p["regexes"] == [f"^({'|'.join(action.choices)})$"], p["name"]
        said = (re.findall(r"(\S+) \(default\)", p["helpText"])
                + re.findall(r"\(default:? ([^)\s]+)\)", p["helpText"]))
        for value in said:
            value = value.rstrip(":,")
            if isinstance(action.default, bool):
                assert value == str(action.default).lower(), (p["name"], value)
            elif isinstance(action.default, float):
                assert float(value) == action.default, (p["name"], value)
            else:
                assert value == str(action.default), (p["name"], value, action.default)


def test_cloud_mk_streaming_job_has_one_name_and_updates_in_place(cloud_make):
    proc, calls = cloud_make("template-run-streaming")
    assert proc.returncode == 0, proc.stderr
    (run,) = calls
    assert run[4] == "shopstream-streaming" and "--update" not in run
    proc, calls = cloud_make("template-update-streaming",
                             TRANSFORM_NAME_MAPPINGS="OldWrite=WriteRedis")
    assert proc.returncode == 0, proc.stderr
    (update,) = calls
    assert update[1:5] == ["dataflow", "flex-template", "run", "shopstream-streaming"]
    assert "--update" in update
    assert "--transform-name-mappings=OldWrite=WriteRedis" in update
    # the same template parameters as the first run
    assert _params(update) == _params(run)
    proc, calls = cloud_make("template-update-streaming")
    assert not any(a.startswith("--transform-name-mappings") for a in calls[0])
