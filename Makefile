# Two commands: `make run` runs the demo pipeline end to end, `make test` runs every test.
# Both create .venv and install the project from constraints.txt on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/arrests.yaml
SERVE ?= 1
# Two test processes, one per core of the CI machine; a test that is free takes the next one
# (worksteal), so the long end-to-end runs do not queue behind each other.
PYTEST_WORKERS ?= -n 2 --dist worksteal
PYTEST_ARGS ?=

.PHONY: help install kubectl chromium databases podman images run loop compile test test-fast lint format lock clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3, 11), (3, 12)), "Python 3.11 or 3.12 is needed"'
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || { apt-get update && apt-get install -y python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	@touch $@

install: $(STAMP) ## Create .venv and install the project from the lock

# The manifest tests render manifests/ with `kubectl kustomize`. The machine image has the apt
# package `kubectl` (v1.32, kustomize v5); install it only where it is missing.
kubectl:
	@command -v kubectl >/dev/null || { apt-get update && apt-get install -y kubectl; } \
		|| echo "warning: no kubectl; the manifest rendering tests skip (and fail under CI=true)"

# The run report is checked as a person sees it: rendered in Debian's Chromium (through Playwright).
chromium:
	@command -v chromium >/dev/null || { apt-get update && apt-get install -y --no-install-recommends chromium; } \
		|| echo "warning: no chromium; the report rendering test skips (and fails under CI=true)"

# The ETL tests start a real PostgreSQL and MariaDB on 127.0.0.1 (tests/components/
# test_etl_databases.py): Debian's postgresql and mariadb-server, installed only where missing
# (Debian keeps PostgreSQL's programs in /usr/lib/postgresql/<version>/bin, off PATH). No system
# service is started (a policy-rc.d that says no, if there is none) or enabled: the tests start
# their own servers.
databases:
	@missing=; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing=postgresql; \
	command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	[ -z "$$missing" ] || { \
		policy=/usr/sbin/policy-rc.d; ours=; \
		[ -e $$policy ] || { printf '#!/bin/sh\nexit 101\n' > $$policy && chmod +x $$policy && ours=1; }; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
		status=$$?; \
		[ -z "$$ours" ] || rm -f $$policy; \
		for package in $$missing; do \
			systemctl disable --quiet $${package%-server}.service 2>/dev/null || true; \
		done; \
		[ $$status = 0 ] || echo "warning: no$$missing; the database ETL tests skip (and fail under CI=true)"; \
	}

# The container tests (tests/containers) build the images and run them with podman, which needs no
# Docker engine: Debian's podman with runc (docker/containers.conf says why runc), and
# debootstrap for the Debian base that docker/build_images.py makes where no registry answers.
# Installed only where missing.
podman:
	@missing=; \
	for tool in podman:podman runc:runc fuse-overlayfs:fuse-overlayfs newuidmap:uidmap debootstrap:debootstrap; do \
		command -v $${tool%%:*} >/dev/null || [ -x /usr/sbin/$${tool%%:*} ] || missing="$$missing $${tool#*:}"; \
	done; \
	[ -z "$$missing" ] || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $$missing; } \
		|| echo "warning: no$$missing; the container tests skip (and fail under CI=true)"

# Both images from docker/, with docker when its engine answers, else podman (ENGINE=podman to
# choose). BASE_IMAGE: auto (the Dockerfiles' pinned base if it can be had, else a Debian bookworm
# base made here), pinned, local or an image name.
ENGINE ?=
BASE_IMAGE ?= auto
images: $(STAMP) ## Build both images (docker/) with docker, else podman; BASE_IMAGE=auto|pinned|local|NAME
	$(BIN)/python docker/build_images.py $(if $(ENGINE),--engine $(ENGINE)) --base-image $(BASE_IMAGE)

# The demo's second run is a deliberately weak challenger (one shallow five-tree forest): the gate
# registers it as the candidate but does not bless it, and the champion from the first run stays.
CHALLENGER := --set tuning.families=[random_forest] --set tuning.num_trials=1 \
	--set 'tuning.space.random_forest={n_estimators: 5, max_depth: 2}'

run: $(STAMP) ## Run the demo: a model, the monitor on its logged smoke traffic, then a weaker challenger the gate refuses; SERVE=0 to exit
	$(BIN)/mlpipe demo-data --config $(CONFIG)
	$(BIN)/mlpipe run --config $(CONFIG) --no-serve
	$(BIN)/mlpipe monitor --config $(CONFIG) --window-days 1
	@echo "Score the demo lake with the champion: $(BIN)/mlpipe predict --config $(CONFIG) --output mlpipe-output/batch-predictions"
	$(BIN)/mlpipe run --config $(CONFIG) $(CHALLENGER) $(if $(filter 0,$(SERVE)),--no-serve,)

loop: $(STAMP) ## The loop once: train on 2023, serve, shifted 2024 traffic and its labels, monitor -> incremental retraining -> gate -> promote -> reload, then ok
	$(BIN)/python -m pipelines.loop_demo --config configs/loop.yaml

compile: $(STAMP) ## Re-compile the pipelines (training, monitoring) and the KFP resources in manifests/
	$(BIN)/mlpipe compile --output pipelines/training_pipeline.yaml
	$(BIN)/mlpipe compile --pipeline monitoring --output pipelines/monitoring_pipeline.yaml
	$(BIN)/mlpipe compile --pipeline batch-prediction --output pipelines/batch_prediction_pipeline.yaml
	$(BIN)/mlpipe pipeline-resources --output manifests/base/pipeline/pipeline.yaml

lint: $(STAMP) ## ruff check and format check; the import layering (lint-imports)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

test: $(STAMP) kubectl chromium databases podman lint ## Run every test (the README's test command)
	$(BIN)/pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

test-fast: $(STAMP) kubectl chromium databases podman ## Tests without the end-to-end pipeline runs
	$(BIN)/pytest $(PYTEST_WORKERS) -m "not e2e" $(PYTEST_ARGS)

format: $(STAMP) ## Apply ruff's formatter and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lock: ## Re-resolve constraints.txt from pyproject.toml in a scratch venv
	rm -rf /tmp/mlpipe-lock && $(PYTHON) -m venv /tmp/mlpipe-lock
	/tmp/mlpipe-lock/bin/pip install --quiet '.[test]'
	{ echo "# The one lock for every install (make, docker/). Regenerate: make lock"; \
	  /tmp/mlpipe-lock/bin/pip freeze --all --exclude-editable | grep -v -e '^kfp-mlpipe' -e '^pip=='; } > constraints.txt

clean: ## Remove .venv and local outputs
	rm -rf $(VENV) mlpipe-output
