#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and the kubelet (the node test
# tier's) from the upstream Go modules, and etcd, into cache directories keyed by version; builds only
# the binaries that are missing.
# Prints one line, "K8S_BIN:ETCD_BIN" (the two bin directories).
#
# The versions live in one place each: the `k8s.io/kubernetes vX.Y.Z` requirement of
# tests/cluster/k8s/go.mod (regenerate that file with scripts/gen-k8s-gomod.sh VERSION) and the
# `go.etcd.io/etcd/server/v3 vX.Y.Z` requirement of tests/cluster/etcd/go.mod.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}
pinned() { awk -v m="$2" '$1==m {print $2; exit}' "$1"; }
KV=$(pinned "$HERE/tests/cluster/k8s/go.mod" k8s.io/kubernetes)
EV=$(pinned "$HERE/tests/cluster/etcd/go.mod" go.etcd.io/etcd/server/v3)
[ -n "$KV" ] && [ -n "$EV" ] || { echo "build-k8s.sh: cannot read the pinned versions from the go.mod files" >&2; exit 1; }
B=$CACHE/k8s-$KV
E=$CACHE/etcd-$EV
bins=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet)

have_all() {
  for b in "${bins[@]}"; do [ -x "$B/bin/$b" ] || return 1; done
  [ -x "$E/bin/etcd" ]
}

if ! have_all; then
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.build-k8s.lock"
  flock 9   # a second caller waits for the first build instead of starting its own
fi
if ! have_all; then
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly
  start=$SECONDS
  # Only what is missing is built: adding a binary to the list keeps the ones already in the cache.
  missing=(); for b in "${bins[@]}"; do [ -x "$B/bin/$b" ] || missing+=("$b"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "build-k8s.sh: building ${missing[*]} $KV (first time only; ~10 min on 2 cores for all)" >&2
    rm -rf "$B/src" "$B/bin.tmp"
    mkdir -p "$B/src" "$B/bin.tmp"
    cp "$HERE/tests/cluster/k8s/go.mod" "$HERE/tests/cluster/k8s/go.sum" "$B/src/"
    # The same version stamps as upstream's hack/lib/version.sh, so /version reports the real version.
    MAJ=$(cut -d. -f1 <<<"${KV#v}"); MIN=$(cut -d. -f2 <<<"$KV")
    LDF="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      LDF="$LDF -X $p.gitVersion=$KV -X $p.gitMajor=$MAJ -X $p.gitMinor=$MIN -X $p.gitTreeState=clean"
      LDF="$LDF -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    pkgs=(); for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
    (cd "$B/src" && go build -trimpath -ldflags "$LDF" -o "$B/bin.tmp/" "${pkgs[@]}" >&2)
    mkdir -p "$B/bin"
    for b in "${missing[@]}"; do mv "$B/bin.tmp/$b" "$B/bin/$b"; done
    rm -rf "$B/bin.tmp"
  fi
  if [ ! -x "$E/bin/etcd" ]; then
    echo "build-k8s.sh: building etcd $EV" >&2
    rm -rf "$E/src" "$E/bin.tmp"
    mkdir -p "$E/src" "$E/bin.tmp"
    cp "$HERE/tests/cluster/etcd/go.mod" "$HERE/tests/cluster/etcd/go.sum" "$E/src/"
    (cd "$E/src" && go build -trimpath -ldflags "-s -w" -o "$E/bin.tmp/etcd" go.etcd.io/etcd/server/v3 >&2)
    rm -rf "$E/bin" && mv "$E/bin.tmp" "$E/bin"
  fi
  echo "build-k8s.sh: built in $((SECONDS - start)) s" >&2
fi
echo "$B/bin:$E/bin"
