# wasmop: the two commands a user needs are `make experiments` (the main job on the
# embedded cluster) and `make test`. Everything else is a step they build on.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
WASMOP := $(VENV)/bin/wasmop
CONTROLPLANE := controlplane/bin/wasmop-controlplane
export WASMOP_STATE_DIR ?= $(CURDIR)/.wasmop

.PHONY: help venv controlplane functions build browser test test-unit lint demo experiments reference lab \
        cluster-up cluster-down cluster-status bench-cluster bench-runtime bench-nodes \
        bench-operator bench-images clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or use environment.yml"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with wasmop and its dependencies

controlplane: ## build the control plane, metrics-server and the OCI registry (each skipped when up to date)
	controlplane/build.sh

functions: venv ## build the benchmark WebAssembly workloads into functions/build/
	$(PY) functions/build.py

build: venv controlplane functions ## everything the tests and experiments need

# Debian's chromium and its chromedriver, from the OS packages (a test never downloads a
# browser); installed once, when missing.
browser: ## headless Chromium and chromedriver for the browser test (apt-get, as root)
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: the browser test needs Debian's chromium and chromium-driver:" \
	         "sudo apt-get install chromium chromium-driver"; exit 1; \
	  fi; \
	  apt-get update && apt-get install -y chromium chromium-driver; \
	fi

test: build lint browser ## lint, then unit, integration and browser tests (starts the embedded cluster if none is up)
	$(PY) -m pytest tests -p no:cacheprovider

test-unit: venv ## only the unit tests (no cluster)
	$(PY) -m pytest tests/unit

lint: venv ## ruff over the Python code
	$(VENV)/bin/ruff check operator tests scripts functions loadtests
	$(VENV)/bin/ruff format --check operator tests scripts functions loadtests

cluster-up: venv controlplane ## start the embedded cluster (idempotent)
	$(WASMOP) cluster up

cluster-down: venv ## stop every process of the embedded cluster
	$(WASMOP) cluster down

cluster-status: venv
	$(WASMOP) cluster status

bench-cluster: venv controlplane ## cold and warm start to /readyz, idle control-plane memory
	$(PY) -m wasmop.bench.micro.cluster_start

bench-runtime: venv functions ## wasmtime runtime microbenchmark
	$(PY) -m wasmop.bench.micro.runtime

bench-nodes: build ## Pod create-to-Ready latency, Pods/s per node, memory per idle Pod
	$(WASMOP) cluster up
	$(PY) -m wasmop.bench.micro.node_start

bench-operator: build ## function deploy latency and phases, status lag, scale-out, operator CPU/RSS
	$(WASMOP) cluster up
	$(PY) -m wasmop.bench.micro.operator_deploy

bench-images: build ## Pod start with the module from the registry (first, cached) vs a ConfigMap
	$(WASMOP) cluster up
	$(PY) -m wasmop.bench.micro.image_start

experiments: build ## the main job: cluster up, quick plan, figures, targets, report.html, cluster down
	$(WASMOP) experiments run --plan quick --manage-cluster

# A fresh results folder, so the reference is one run of the plan and nothing older.
reference: build ## regenerate results/reference/ (the quick plan afresh, then its small files and report.html)
	rm -rf results/.reference-run
	$(WASMOP) experiments run --plan quick --manage-cluster --results results/.reference-run
	$(PY) scripts/make_reference.py results/.reference-run

lab: build ## JupyterLab with the wasmop kernel and the cluster's environment
	$(WASMOP) experiments lab

demo: build ## deploy every sample workload, invoke, scale and update them, print a table
	$(WASMOP) cluster up
	$(PY) scripts/demo.py

clean: ## remove build outputs (keeps Go's caches)
	rm -rf $(VENV) controlplane/bin functions/build
