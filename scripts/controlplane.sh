#!/usr/bin/env bash
# Starts the cluster tier's control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler)
# and the test node agent (a stand-in for the kubelet) on 127.0.0.1, for manual use. Builds the
# binaries first if they are not cached. Prints the kubeconfig path on stdout; Ctrl-C stops everything.
#
#   scripts/controlplane.sh [--dir DIR] [--no-node-agent] [--concurrency N]
#   export KUBECONFIG=<printed path>; kubectl get nodes
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || { echo "controlplane.sh: no $PY; run 'make' targets first (the venv is made by make)" >&2; exit 1; }
exec "$PY" -m tests.harness.controlplane "$@"
