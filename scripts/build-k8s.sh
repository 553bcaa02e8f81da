#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler (and kubectl) from the
# upstream Go modules at a pinned version, plus etcd, into a cache directory keyed by version.
# Skips the build when the binaries are already there. Prints the bin directory.
set -euo pipefail
KV=${K8S_VERSION:-1.34.4}
ETCD_VERSION=${ETCD_VERSION:-3.6.16}
CACHE=${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}
HERE=$(cd "$(dirname "$0")/.." && pwd)
B=$CACHE/k8s-v$KV
E=$CACHE/etcd-v$ETCD_VERSION
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
need=0; for b in "${bins[@]}"; do [ -x "$B/bin/$b" ] || need=1; done
if [ $need = 1 ]; then
  mkdir -p "$B/src" "$B/bin"
  cp "$HERE/tests/cluster/k8s/go.mod" "$HERE/tests/cluster/k8s/go.sum" "$B/src/"
  cd "$B/src"
  MIN=$(cut -d. -f2 <<<"$KV")
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF="$LDF -X $p.gitVersion=v$KV -X $p.gitMajor=1 -X $p.gitMinor=$MIN -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  C=k8s.io/kubernetes/cmd
  go build -trimpath -ldflags "$LDF" -o "$B/bin/" $C/kube-apiserver $C/kube-controller-manager $C/kube-scheduler $C/kubectl >&2
fi
if [ ! -x "$E/bin/etcd" ]; then
  mkdir -p "$E/src" "$E/bin"
  cp "$HERE/tests/cluster/etcd/go.mod" "$HERE/tests/cluster/etcd/go.sum" "$E/src/"
  cd "$E/src"
  go build -trimpath -o "$E/bin/etcd" go.etcd.io/etcd/server/v3 >&2
fi
echo "$B/bin:$E/bin"
