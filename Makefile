# shopstream — the front door. `make demo` and `make test` work on a fresh Debian + Python 3.11.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
DEMO_DIR ?= data/demo
DEMO_WAREHOUSE ?= warehouse/demo.duckdb
DEMO_MODELS ?= artifacts/models
DEMO_REPORT ?= warehouse/report.html
DEMO_GENERATE ?= --customers 1500 --products 400 --days 400 --seed 7
REDIS_PORT ?= 6390
REDIS_URL ?= redis://127.0.0.1:$(REDIS_PORT)/0
PYTEST_ARGS ?=

.PHONY: help install constraints system-deps test-deps bench-deps demo demo-data demo-redis lint test bench clean redis-stop

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(VENV)/.installed: setup.py requirements.txt requirements-serve.txt requirements-dev.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "installing shopstream and its pinned dependencies into $(VENV)…"
	@$(PY) -m pip install -qq --upgrade pip
	@$(PY) -m pip install -qq -c constraints.txt -e '.[serve,test]'
	@touch $@

constraints: bench-deps  ## re-pin constraints.txt (every transitive version) from the tested .venv
	@{ echo "# Every installed version of the tested venv (make constraints); used by make install"; \
	   echo "# and the Flex Template image (templates/Dockerfile). Regenerate after changing requirements*.txt."; \
	   $(PY) -m pip freeze --exclude-editable | grep -v '^shopstream=='; } > constraints.txt
	@echo "wrote constraints.txt ($$(grep -vc '^#' constraints.txt) pins)"

install: $(VENV)/.installed system-deps  ## create .venv with shopstream and its pinned deps

system-deps:  ## make sure a real redis-server is on PATH (Debian package)
	@command -v redis-server >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "shopstream needs redis-server (Redis >= 6) on PATH: install it with your package manager" >&2; exit 1; }; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  [ -z "$$SUDO" ] || command -v sudo >/dev/null || { echo "shopstream needs redis-server: run 'sudo apt-get install -y redis-server' as an administrator" >&2; exit 1; }; \
	  echo "installing redis-server (Debian package)…"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null || \
	    { echo "could not install redis-server: run 'sudo apt-get install -y redis-server' and retry" >&2; exit 1; }; }

demo-data: install  ## generate a small Fashion Campus data set under $(DEMO_DIR)
	@test -f $(DEMO_DIR)/transactions.csv || $(BIN)/shopstream generate --out $(DEMO_DIR) $(DEMO_GENERATE)

demo-redis: system-deps  ## start a local redis-server on $(REDIS_PORT) (no persistence)
	@redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 || \
	  redis-server --port $(REDIS_PORT) --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
	    --pidfile /tmp/shopstream-redis-$(REDIS_PORT).pid >/dev/null
	@for i in $$(seq 50); do redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.1; done
	@echo "redis-server listening on $(REDIS_URL)"

redis-stop:  ## stop the demo redis-server
	-redis-cli -p $(REDIS_PORT) shutdown nosave

demo: install demo-data demo-redis  ## install, generate data, replay into DuckDB + Redis, batch job, models, live rankings, report
	@mkdir -p $(dir $(DEMO_WAREHOUSE)) $(DEMO_MODELS)
	@echo "== 1/6 streaming pipeline: replay the click stream and orders into DuckDB and Redis"
	@$(BIN)/shopstream replay --input $(DEMO_DIR) --warehouse $(DEMO_WAREHOUSE) --redis $(REDIS_URL)
	@echo "== 2/6 daily batch job: sales facts, daily sales, churn features"
	@$(BIN)/shopstream batch --input $(DEMO_DIR) --warehouse $(DEMO_WAREHOUSE)
	@echo "== 3/6 models: popularity weights (XGBoost) and churn (RandomForest)"
	@$(BIN)/shopstream train popularity --warehouse $(DEMO_WAREHOUSE) --models $(DEMO_MODELS) \
	  $$(test -f $(DEMO_DIR)/ground_truth/product_demand.csv && echo --ground-truth $(DEMO_DIR)/ground_truth)
	@$(BIN)/shopstream train churn --warehouse $(DEMO_WAREHOUSE) --models $(DEMO_MODELS) --force \
	  $$(test -f $(DEMO_DIR)/ground_truth/customer_months.csv && echo --ground-truth $(DEMO_DIR)/ground_truth)
	@$(BIN)/shopstream predict churn --warehouse $(DEMO_WAREHOUSE) --models $(DEMO_MODELS)
	@echo "== 4/6 replay again with the trained popularity weights"
	@$(BIN)/shopstream replay --input $(DEMO_DIR) --warehouse $(DEMO_WAREHOUSE) --redis $(REDIS_URL) --models $(DEMO_MODELS)
	@echo "== 5/6 live rankings from Redis"
	@$(BIN)/shopstream rankings products --horizon all --redis $(REDIS_URL)
	@$(BIN)/shopstream rankings brands --horizon 24h --redis $(REDIS_URL)
	@$(BIN)/shopstream rankings subcategories --horizon 1h --redis $(REDIS_URL)
	@echo "== 6/6 analytics report"
	@$(BIN)/shopstream report --warehouse $(DEMO_WAREHOUSE) --out $(DEMO_REPORT)
	@echo
	@echo "Done. Open next:"
	@echo "  the report     $(abspath $(DEMO_REPORT))"
	@echo "  the live page  $(BIN)/shopstream serve --redis $(REDIS_URL) --warehouse $(DEMO_WAREHOUSE), then http://127.0.0.1:8080/"
	@echo "  the rankings   $(BIN)/shopstream rankings --help"
	@echo "  the design     docs/ARCHITECTURE.md"

test-deps: system-deps  ## headless Chromium for the browser tests (Debian package)
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  echo "installing chromium (Debian package) for the browser tests…"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || \
	    echo "could not install chromium: the browser tests will be skipped" >&2; }

lint: install  ## ruff checks and the layer contract (transforms <- batch <- models <- pipelines)
	$(BIN)/ruff check --quiet .
	@$(BIN)/lint-imports --no-cache 2>&1 | grep -E "KEPT|BROKEN|^Contracts|->|imports" || true
	@$(BIN)/lint-imports --no-cache >/dev/null 2>&1 || { echo "layer contract broken: run $(BIN)/lint-imports" >&2; exit 1; }

test: install test-deps lint  ## lint, then the test suite (starts its own redis-server and emulators)
	@set +e; $(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose"; exit 1; fi; exit $$rc

$(VENV)/.bench-installed: requirements-bench.txt constraints.txt $(VENV)/.installed
	@echo "installing the bench extra (PySpark local, requirements-bench.txt) into $(VENV)…"
	@$(PY) -m pip install -qq -c constraints.txt -r requirements-bench.txt
	@touch $@

bench-deps: $(VENV)/.bench-installed  ## the bench extra: PySpark local and a Java 17 runtime (Debian package)
	@command -v java >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "the PySpark bench needs Java 17+ (java on PATH): install a JRE" >&2; exit 1; }; \
	  SUDO=""; [ "$$(id -u)" -eq 0 ] || SUDO="sudo"; \
	  echo "installing a Java 17 runtime (Debian package) for the PySpark bench…"; \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null || \
	    { echo "could not install Java: run 'sudo apt-get install -y openjdk-17-jre-headless' and retry" >&2; exit 1; }; }

bench: install bench-deps  ## benchmarks (throughput, memory) printed as tables
	$(PY) -m tests.bench.run $(BENCH_ARGS)

clean:  ## remove generated data, warehouses and artifacts (keeps .venv)
	rm -rf data warehouse artifacts bench-results

# Google Cloud targets (template-build, template-run-*, replay-gcs, schedule-batch)
-include templates/cloud.mk
