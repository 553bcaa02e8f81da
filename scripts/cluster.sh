#!/usr/bin/env bash
# `make cluster`: a local cluster with webrelease installed and the example release applied, on
# 127.0.0.1 only: the cluster tier's control plane and node agent, versitygw as S3, `helm install`
# of charts/webrelease (its operator run here as the chart's ServiceAccount), and
# manifests/examples/release.yaml. Builds what is missing first (cached under ~/.cache/webrelease).
# Prints what to export (KUBECONFIG, PATH with kubectl, helm and webrelease) and what to run next.
#
#   scripts/cluster.sh [--dir DIR] [--check [--timeout S]]     Ctrl-C stops everything
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "cluster.sh: no $PY; run 'make cluster' (it makes the venv first)" >&2; exit 1; }
exec "$PY" -m tests.harness.quickstart "$@"
