#!/usr/bin/env bash
# Builds helm (the chart tests run `helm lint`, `helm template`, `helm install`) with `go install`,
# pinned, cached by version under $WEBRELEASE_CACHE/helm-<version>/bin/helm. Prints nothing when cached.
# Prints the binary's path with --print-path.
set -euo pipefail
HELM_VERSION="${HELM_VERSION:-v3.22.0}"
# The Kubernetes minor version of the client-go that helm version is built with (helm's Makefile stamps it,
# `go install` does not): the default of `helm template`'s .Capabilities.KubeVersion and of `helm lint`.
HELM_K8S_MINOR="${HELM_K8S_MINOR:-37}"
CACHE="${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}"
DEST="$CACHE/helm-$HELM_VERSION/bin"
if [ ! -x "$DEST/helm" ]; then
  command -v go >/dev/null || { echo "install-helm: go is required (https://go.dev/dl/)" >&2; exit 1; }
  echo "install-helm: building helm $HELM_VERSION (one time, a few minutes)..." >&2
  mkdir -p "$DEST"
  stamp() { echo "-X helm.sh/helm/v3/pkg/$1.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/$1.k8sVersionMinor=$HELM_K8S_MINOR"; }
  TMP="$(mktemp -d "$CACHE/helm-build.XXXXXX")"
  trap 'rm -rf "$TMP"' EXIT
  # Build into a temporary GOBIN and move into place only when complete: an interrupted build never
  # leaves a half-written binary that a later run would take for a cached one.
  GOBIN="$TMP" GOTOOLCHAIN=local GOFLAGS="-trimpath" CGO_ENABLED=0 \
    go install -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $(stamp chartutil) $(stamp lint/rules)" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$TMP/helm" "$DEST/helm"
fi
if [ "${1:-}" = "--print-path" ]; then
  echo "$DEST/helm"
fi
