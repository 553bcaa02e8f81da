# webrelease — the two commands a fresh machine needs: `make demo` and `make test`; `make help` lists all.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export WEBRELEASE_CACHE ?= $(HOME)/.cache/webrelease
STAMP := $(VENV)/.installed

.PHONY: help demo cluster test check lint unit generate tools bench e2e-kind clean

## help: this list.
help:
	@grep -E '^## [a-z0-9-]+:' $(MAKEFILE_LIST) | sed -E 's/^## ([a-z0-9-]+): */  make \1\t/' | expand -t 20

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## tools: build or install the S3 server, the control plane, helm and PostgreSQL (cached).
# Everything the tests need that is not a Python package: the S3 server, the control plane,
# helm, PostgreSQL. Built or installed once, cached under $(WEBRELEASE_CACHE) by version.
tools: $(STAMP)
	bash scripts/install-tools.sh

## demo: a real release of the sample build to a few sample customers, on local folders.
demo: $(STAMP)
	bash scripts/demo.sh

## cluster: a local cluster (control plane, S3 server) with webrelease helm-installed and the example
## release applied; prints what to export and run next. Ctrl-C stops it. CLUSTER_ARGS=--check: wait
## for the release to complete, check it, stop.
cluster: $(STAMP)
	bash scripts/cluster.sh $(CLUSTER_ARGS)

## lint: ruff, mypy --strict, import-linter (the layering contracts).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## test: install and start everything the tests need, then run every test tier.
test: $(STAMP) tools lint
	$(BIN)/pytest

## unit: the unit tier only (pure logic, no servers).
unit: $(STAMP)
	$(BIN)/pytest tests/unit

## check: what to run before landing a change: lint, then the unit tier (1–2 minutes on 2 cores).
check: lint unit

## generate: regenerate what is derived: the CRD from the models, manifests/ from the chart.
generate: $(STAMP)
	$(BIN)/python -m webrelease.operator.crd
	bash scripts/gen-manifests.sh

## bench: side-by-side comparisons with s5cmd, rclone and the AWS CLI (not part of `make test`).
# The peers (s5cmd, rclone, toxiproxy, the AWS CLI, py-spy) are installed by scripts/bench-install-*.sh,
# not by `make tools`: the tests do not need them. BENCH_ARGS=--quick for a smoke run.
bench: $(STAMP) tools
	for s in scripts/bench-install-*.sh; do bash "$$s" || exit 1; done
	$(BIN)/python -m bench $(BENCH_ARGS)

## e2e-kind: the cluster tier against a kind cluster running the real image (needs Docker; not in CI).
e2e-kind: $(STAMP)
	bash scripts/e2e-kind.sh $(E2E_ARGS)

## clean: remove the virtualenv and caches (not the tool cache, ~/.cache/webrelease).
clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
