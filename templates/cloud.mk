# shopstream on Google Cloud — included by the top-level Makefile (`include templates/cloud.mk`).
# Every name comes from variables; put yours in .env (copy .env.example). Walk-through:
# README.md ("Deploying to Google Cloud"). Nothing here runs unless you call one of these targets.
-include .env

GCP_PROJECT ?=
GCP_REGION ?= asia-southeast2
GCS_BUCKET ?=
AR_REPO ?= shopstream
# The tag of both images; set it in .env to pin a release (default: the git commit).
IMAGE_TAG ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
IMAGE_TAG := $(IMAGE_TAG)
BQ_DATASET ?= shopstream
BQ_LOCATION ?= $(GCP_REGION)
CLICKS_TOPIC ?= shopstream-clicks
ORDERS_TOPIC ?= shopstream-orders
CLICKS_SUBSCRIPTION ?= shopstream-clicks-sub
ORDERS_SUBSCRIPTION ?= shopstream-orders-sub
REDIS_INSTANCE ?= shopstream-redis
REDIS_HOST ?=
# Not REDIS_PORT: that is the local redis-server's port in the Makefile that includes this.
MEMORYSTORE_PORT ?= 6379
DATAFLOW_SA ?=
SCHEDULER_SA ?=
SCHEDULER_REGION ?= $(GCP_REGION)
BATCH_SCHEDULE ?= 0 2 * * *
SCHEDULER_TIMEZONE ?= Asia/Jakarta
NETWORK ?= default
SUBNETWORK ?= regions/$(GCP_REGION)/subnetworks/default
MAX_WORKERS ?= 4
WORKER_MACHINE_TYPE ?= n2-standard-2
GCS_DATA ?= gs://$(GCS_BUCKET)/shopstream/data
GCS_MODELS ?= gs://$(GCS_BUCKET)/shopstream/models
WEIGHTS ?=
PUBLISH_INPUT ?= data/demo
PUBLISH_SPEEDUP ?= 60
# The live job keeps one name, so that template-update-streaming replaces it in place.
STREAMING_JOB ?= shopstream-streaming
# Renamed steps for an in-place update: OLD=NEW,... (gcloud --transform-name-mappings).
TRANSFORM_NAME_MAPPINGS ?=
# Secret Manager secret holding the Redis AUTH string (never a pipeline option value).
REDIS_SECRET ?=
# How often the live job rewrites the all-time BigQuery snapshot tables (seconds).
WAREHOUSE_REFRESH ?=

# ---- derived names
AR_HOST := $(GCP_REGION)-docker.pkg.dev
IMAGE_STREAMING ?= $(AR_HOST)/$(GCP_PROJECT)/$(AR_REPO)/shopstream-streaming:$(IMAGE_TAG)
IMAGE_BATCH ?= $(AR_HOST)/$(GCP_PROJECT)/$(AR_REPO)/shopstream-batch:$(IMAGE_TAG)
TEMPLATE_STREAMING ?= gs://$(GCS_BUCKET)/templates/shopstream-streaming.json
TEMPLATE_BATCH ?= gs://$(GCS_BUCKET)/templates/shopstream-batch.json
WAREHOUSE_BQ ?= bq://$(GCP_PROJECT).$(BQ_DATASET)
REDIS_URL_CLOUD ?= $(if $(REDIS_HOST),redis://$(REDIS_HOST):$(MEMORYSTORE_PORT)/0,)
TEMP_LOCATION ?= gs://$(GCS_BUCKET)/dataflow/tmp
STAGING_LOCATION ?= gs://$(GCS_BUCKET)/dataflow/staging
CLICKS_TOPIC_PATH := projects/$(GCP_PROJECT)/topics/$(CLICKS_TOPIC)
ORDERS_TOPIC_PATH := projects/$(GCP_PROJECT)/topics/$(ORDERS_TOPIC)
CLICKS_SUB_PATH := projects/$(GCP_PROJECT)/subscriptions/$(CLICKS_SUBSCRIPTION)
ORDERS_SUB_PATH := projects/$(GCP_PROJECT)/subscriptions/$(ORDERS_SUBSCRIPTION)
CLOUD_BUILD_DIR ?= build/cloud
SHOPSTREAM ?= $(if $(BIN),$(BIN)/shopstream,shopstream)
GCLOUD ?= gcloud
BQ ?= bq
PYTHON3 ?= python3
NOW = $(shell date -u +%Y%m%d-%H%M%S)

# $(call cloud-require,VAR ...): stop with a clear message when a variable is empty.
cloud-require = $(foreach v,$(1),$(if $(strip $($(v))),,$(error $(v) is not set: copy .env.example to .env and fill it in (see README.md ("Deploying to Google Cloud")))))

# Dataflow environment shared by every job (Memorystore is reached over NETWORK).
DATAFLOW_ENV = --region=$(GCP_REGION) --project=$(GCP_PROJECT) \
  --temp-location=$(TEMP_LOCATION) --staging-location=$(STAGING_LOCATION) \
  --network=$(NETWORK) --subnetwork=$(SUBNETWORK) --max-workers=$(MAX_WORKERS) \
  --worker-machine-type=$(WORKER_MACHINE_TYPE) \
  $(if $(DATAFLOW_SA),--service-account-email=$(DATAFLOW_SA),)

.PHONY: cloud-help cloud-env template-build template-build-streaming template-build-batch \
  template-run-streaming template-update-streaming template-run-batch replay-gcs schedule-batch bq-tables \
  publish-cloud batch-launch-body

cloud-help:  ## list the Google Cloud targets (templates/cloud.mk)
	@grep -E '^[a-zA-Z_-]+:.*?## ' templates/cloud.mk | awk -F':.*?## ' '{printf "  %-24s %s\n", $$1, $$2}'

cloud-env:  ## print the resolved Google Cloud settings
	$(call cloud-require,GCP_PROJECT GCS_BUCKET)
	@echo "project=$(GCP_PROJECT) region=$(GCP_REGION) bucket=$(GCS_BUCKET)"
	@echo "images: $(IMAGE_STREAMING) $(IMAGE_BATCH)"
	@echo "templates: $(TEMPLATE_STREAMING) $(TEMPLATE_BATCH)"
	@echo "warehouse=$(WAREHOUSE_BQ) redis=$(or $(REDIS_URL_CLOUD),-)"
	@echo "pubsub: $(CLICKS_SUB_PATH) $(ORDERS_SUB_PATH)"

# ---- images and Flex Templates
# Cloud Build builds templates/<kind>/Dockerfile with the repository as context (the upload
# honours .gitignore, so .venv and data stay home); then the template spec is written to GCS.
define CLOUDBUILD_YAML
steps:
- name: gcr.io/cloud-builders/docker
  args: ["build", "-f", "$${_DOCKERFILE}", "--build-arg", "PIPELINE=$${_PIPELINE}", "-t", "$${_IMAGE}", "."]
images: ["$${_IMAGE}"]
timeout: 3600s
endef
export CLOUDBUILD_YAML

template-build: template-build-streaming template-build-batch  ## build both images (Cloud Build) and Flex Template specs

# $(call template-build-one,KIND,IMAGE,TEMPLATE_SPEC)
define template-build-one
$(call cloud-require,GCP_PROJECT GCP_REGION GCS_BUCKET AR_REPO)
@mkdir -p $(CLOUD_BUILD_DIR)
@printf '%s\n' "$$CLOUDBUILD_YAML" > $(CLOUD_BUILD_DIR)/cloudbuild.yaml
$(GCLOUD) builds submit . --project=$(GCP_PROJECT) --region=$(GCP_REGION) \
  --config=$(CLOUD_BUILD_DIR)/cloudbuild.yaml \
  --substitutions=_DOCKERFILE=templates/Dockerfile,_PIPELINE=$(1),_IMAGE=$(2)
$(GCLOUD) dataflow flex-template build $(3) --project=$(GCP_PROJECT) \
  --sdk-language=PYTHON --image=$(2) --metadata-file=templates/$(1)/metadata.json
endef

template-build-streaming:  ## build the streaming image and its Flex Template spec
	$(call template-build-one,streaming,$(IMAGE_STREAMING),$(TEMPLATE_STREAMING))

template-build-batch:  ## build the batch image and its Flex Template spec
	$(call template-build-one,batch,$(IMAGE_BATCH),$(TEMPLATE_BATCH))

# The live job's launch arguments, shared by the first run and in-place updates.
STREAMING_RUN_ARGS = \
	  --template-file-gcs-location=$(TEMPLATE_STREAMING) $(DATAFLOW_ENV) \
	  --enable-streaming-engine \
	  --parameters=subscription=$(CLICKS_SUB_PATH) \
	  --parameters=orders_subscription=$(ORDERS_SUB_PATH) \
	  --parameters=products=$(GCS_DATA)/product.csv \
	  --parameters=warehouse=$(WAREHOUSE_BQ) \
	  $(if $(REDIS_URL_CLOUD),--parameters=redis=$(REDIS_URL_CLOUD),) \
	  $(if $(REDIS_SECRET),--parameters=redis_secret=$(REDIS_SECRET),) \
	  $(if $(WAREHOUSE_REFRESH),--parameters=warehouse_refresh=$(WAREHOUSE_REFRESH),) \
	  $(if $(WEIGHTS),--parameters=weights=$(WEIGHTS),--parameters=models=$(GCS_MODELS)) \
	  --parameters=sdk_container_image=$(IMAGE_STREAMING)

template-run-streaming:  ## launch the live streaming job (job name STREAMING_JOB) from its Flex Template
	$(call cloud-require,GCP_PROJECT GCS_BUCKET)
	$(GCLOUD) dataflow flex-template run $(STREAMING_JOB) $(STREAMING_RUN_ARGS)

template-update-streaming:  ## update the running live job in place (same name; TRANSFORM_NAME_MAPPINGS for renamed steps)
	$(call cloud-require,GCP_PROJECT GCS_BUCKET)
	$(GCLOUD) dataflow flex-template run $(STREAMING_JOB) $(STREAMING_RUN_ARGS) --update \
	  $(if $(TRANSFORM_NAME_MAPPINGS),--transform-name-mappings=$(TRANSFORM_NAME_MAPPINGS),)

template-run-batch:  ## launch the daily batch job once from its Flex Template
	$(call cloud-require,GCP_PROJECT GCS_BUCKET)
	$(GCLOUD) dataflow flex-template run shopstream-batch-$(NOW) \
	  --template-file-gcs-location=$(TEMPLATE_BATCH) $(DATAFLOW_ENV) \
	  --parameters=input=$(GCS_DATA) \
	  --parameters=warehouse=$(WAREHOUSE_BQ) \
	  --parameters=models=$(GCS_MODELS) \
	  $(if $(AS_OF),--parameters=as_of=$(AS_OF),) \
	  --parameters=sdk_container_image=$(IMAGE_BATCH)

replay-gcs:  ## replay gs:// files through the streaming pipeline on Dataflow (batch job, waits)
	$(call cloud-require,GCP_PROJECT GCS_BUCKET)
	$(SHOPSTREAM) replay --input $(GCS_DATA) --warehouse $(WAREHOUSE_BQ) \
	  $(if $(REDIS_URL_CLOUD),--redis $(REDIS_URL_CLOUD),) \
	  $(if $(WEIGHTS),--weights $(WEIGHTS),--models $(GCS_MODELS)) \
	  --runner=DataflowRunner --project=$(GCP_PROJECT) --region=$(GCP_REGION) \
	  --job_name=shopstream-replay-$(NOW) \
	  --temp_location=$(TEMP_LOCATION) --staging_location=$(STAGING_LOCATION) \
	  --sdk_container_image=$(IMAGE_STREAMING) --sdk_location=container \
	  --network=$(NETWORK) --subnetwork=$(SUBNETWORK) --max_num_workers=$(MAX_WORKERS) \
	  --machine_type=$(WORKER_MACHINE_TYPE) \
	  $(if $(DATAFLOW_SA),--service_account_email=$(DATAFLOW_SA),)

publish-cloud:  ## publish PUBLISH_INPUT into the Pub/Sub topics (event-time order, PUBLISH_SPEEDUP×)
	$(call cloud-require,GCP_PROJECT)
	$(SHOPSTREAM) publish --input $(PUBLISH_INPUT) --topic $(CLICKS_TOPIC_PATH) \
	  --orders-topic $(ORDERS_TOPIC_PATH) --speedup $(PUBLISH_SPEEDUP) --rebase-time

# ---- BigQuery tables from transforms/schemas (partitioning and clustering included)
define BQ_TABLE_ARGS
import json, sys
schema = json.load(open(sys.argv[1]))
json.dump(schema["fields"], open(sys.argv[2], "w"))
args = []
part = schema.get("timePartitioning")
if part:
    args += ["--time_partitioning_type=" + part["type"], "--time_partitioning_field=" + part["field"]]
if schema.get("clustering"):
    args.append("--clustering_fields=" + ",".join(schema["clustering"][:4]))
print(" ".join(args))
endef
export BQ_TABLE_ARGS

bq-tables:  ## create the BigQuery dataset and every SPEC §4 table that is missing
	$(call cloud-require,GCP_PROJECT BQ_DATASET)
	@$(BQ) --project_id=$(GCP_PROJECT) show --dataset $(GCP_PROJECT):$(BQ_DATASET) >/dev/null 2>&1 || \
	  $(BQ) --project_id=$(GCP_PROJECT) mk --dataset --location=$(BQ_LOCATION) $(GCP_PROJECT):$(BQ_DATASET)
	@mkdir -p $(CLOUD_BUILD_DIR)/schemas
	@for f in transforms/schemas/*.json; do \
	  t=$$(basename $$f .json); \
	  args=$$($(PYTHON3) -c "$$BQ_TABLE_ARGS" $$f $(CLOUD_BUILD_DIR)/schemas/$$t.json) || exit 1; \
	  if $(BQ) --project_id=$(GCP_PROJECT) show $(GCP_PROJECT):$(BQ_DATASET).$$t >/dev/null 2>&1; then \
	    echo "exists: $(BQ_DATASET).$$t"; \
	  else \
	    echo "$(BQ) mk --table $$args --schema $(CLOUD_BUILD_DIR)/schemas/$$t.json $(GCP_PROJECT):$(BQ_DATASET).$$t"; \
	    $(BQ) --project_id=$(GCP_PROJECT) mk --table $$args \
	      --schema $(CLOUD_BUILD_DIR)/schemas/$$t.json $(GCP_PROJECT):$(BQ_DATASET).$$t || exit 1; \
	  fi; \
	done

# ---- daily schedule: Cloud Scheduler → Dataflow flexTemplates:launch (REST)
define BATCH_LAUNCH_BODY
import json, os
env = {"tempLocation": os.environ["TEMP_LOCATION"], "stagingLocation": os.environ["STAGING_LOCATION"],
       "maxWorkers": int(os.environ["MAX_WORKERS"]), "machineType": os.environ["WORKER_MACHINE_TYPE"],
       "network": os.environ["NETWORK"], "subnetwork": os.environ["SUBNETWORK"]}
if os.environ.get("DATAFLOW_SA"):
    env["serviceAccountEmail"] = os.environ["DATAFLOW_SA"]
print(json.dumps({"launchParameter": {
    "jobName": "shopstream-batch-daily",
    "containerSpecGcsPath": os.environ["TEMPLATE_BATCH"],
    "parameters": {"input": os.environ["GCS_DATA"], "warehouse": os.environ["WAREHOUSE_BQ"],
                   "models": os.environ["GCS_MODELS"],
                   "sdk_container_image": os.environ["IMAGE_BATCH"]},
    "environment": env}}, indent=2))
endef
export BATCH_LAUNCH_BODY

batch-launch-body:  ## write the flexTemplates:launch request body of the daily batch job
	$(call cloud-require,GCP_PROJECT GCS_BUCKET)
	@mkdir -p $(CLOUD_BUILD_DIR)
	@TEMP_LOCATION='$(TEMP_LOCATION)' STAGING_LOCATION='$(STAGING_LOCATION)' MAX_WORKERS='$(MAX_WORKERS)' \
	  WORKER_MACHINE_TYPE='$(WORKER_MACHINE_TYPE)' NETWORK='$(NETWORK)' SUBNETWORK='$(SUBNETWORK)' \
	  DATAFLOW_SA='$(DATAFLOW_SA)' TEMPLATE_BATCH='$(TEMPLATE_BATCH)' GCS_DATA='$(GCS_DATA)' \
	  WAREHOUSE_BQ='$(WAREHOUSE_BQ)' GCS_MODELS='$(GCS_MODELS)' IMAGE_BATCH='$(IMAGE_BATCH)' \
	  $(PYTHON3) -c "$$BATCH_LAUNCH_BODY" > $(CLOUD_BUILD_DIR)/batch-launch.json
	@echo "wrote $(CLOUD_BUILD_DIR)/batch-launch.json"

schedule-batch: batch-launch-body  ## (re)create the Cloud Scheduler job launching the batch template daily
	$(call cloud-require,GCP_PROJECT GCS_BUCKET SCHEDULER_SA)
	-$(GCLOUD) scheduler jobs delete shopstream-batch-daily --project=$(GCP_PROJECT) \
	  --location=$(SCHEDULER_REGION) --quiet >/dev/null 2>&1
	$(GCLOUD) scheduler jobs create http shopstream-batch-daily \
	  --project=$(GCP_PROJECT) --location=$(SCHEDULER_REGION) \
	  --schedule="$(BATCH_SCHEDULE)" --time-zone="$(SCHEDULER_TIMEZONE)" \
	  --uri="https://dataflow.googleapis.com/v1b3/projects/$(GCP_PROJECT)/locations/$(GCP_REGION)/flexTemplates:launch" \
	  --http-method=POST --headers=Content-Type=application/json \
	  --oauth-service-account-email=$(SCHEDULER_SA) \
	  --oauth-token-scope=https://www.googleapis.com/auth/cloud-platform \
	  --message-body-from-file=$(CLOUD_BUILD_DIR)/batch-launch.json
