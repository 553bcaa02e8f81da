#!/usr/bin/env bash
# `make e2e-kind`: the cluster test tier against a kind cluster, with the real image on real kubelets.
# Needs Docker (not available on CI; CI runs the same tests against the harness's control plane).
#
#   1. builds kind (pinned, cached like every other tool) and creates the cluster (or reuses it);
#   2. builds the image from the Dockerfile and loads it into the cluster's nodes;
#   3. installs charts/webrelease with that image (and applies its CRD the way an upgrade does);
#   4. runs the cluster tier with WEBRELEASE_TEST_KUBECONFIG pointing at kind: the harness starts no
#      control plane and no node agent, and the Jobs' pods run the image on kind's kubelets.
#
# Releases need an S3 endpoint that both this machine and the pods in kind reach: set
# WEBRELEASE_TEST_S3_ENDPOINT (and _ACCESS_KEY, _SECRET_KEY, _REGION) to one; the harness's own S3
# server listens on 127.0.0.1, which kind's pods cannot reach.
#
# Environment: KIND_CLUSTER (default webrelease-e2e), KIND_NODE_IMAGE (default: kind's own),
# KEEP_CLUSTER=1 to keep the cluster afterwards. Extra arguments go to pytest.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
cd "$HERE"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
CLUSTER="${KIND_CLUSTER:-webrelease-e2e}"
IMAGE_REPO=webrelease
IMAGE_TAG=e2e
NAMESPACE=webrelease-system
CACHE="${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}"
WORK="$HERE/out/e2e-kind"
KUBECONFIG_FILE="$WORK/kubeconfig"

command -v docker >/dev/null || { echo "e2e-kind: docker is required" >&2; exit 1; }
KIND="$CACHE/kind-$KIND_VERSION/bin/kind"
if [ ! -x "$KIND" ]; then
  echo "e2e-kind: building kind $KIND_VERSION..." >&2
  mkdir -p "$(dirname "$KIND")"
  GOBIN="$(dirname "$KIND")" GOTOOLCHAIN=local CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION"
fi
HELM=$(bash scripts/install-helm.sh --print-path)
KUBECTL_DIR=$(bash scripts/build-k8s.sh | cut -d: -f1)   # kubectl, built with the control plane
export PATH="$KUBECTL_DIR:$PATH"
mkdir -p "$WORK"

if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  "$KIND" create cluster --name "$CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 180s
fi
"$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
cleanup() {
  if [ "${KEEP_CLUSTER:-}" != 1 ]; then
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  else
    echo "e2e-kind: cluster $CLUSTER kept (kubeconfig: $KUBECONFIG_FILE)"
  fi
}
trap cleanup EXIT

docker build -t "$IMAGE_REPO:$IMAGE_TAG" .
"$KIND" load docker-image "$IMAGE_REPO:$IMAGE_TAG" --name "$CLUSTER"

kubectl --kubeconfig "$KUBECONFIG_FILE" apply --server-side --force-conflicts -f charts/webrelease/crds/
"$HELM" upgrade --install webrelease charts/webrelease --kubeconfig "$KUBECONFIG_FILE" \
  --namespace "$NAMESPACE" --create-namespace \
  --set image.repository="$IMAGE_REPO" --set image.tag="$IMAGE_TAG" --set image.pullPolicy=Never \
  --wait --timeout 180s

WEBRELEASE_TEST_KUBECONFIG="$KUBECONFIG_FILE" .venv/bin/pytest -m cluster tests/cluster "$@"
