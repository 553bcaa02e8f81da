#!/usr/bin/env bash
# Regenerates tests/cluster/k8s/go.mod and go.sum for one Kubernetes version, from upstream's own go.mod.
#
#   scripts/gen-k8s-gomod.sh [VERSION]      e.g. 1.34.4 or v1.34.4; default: the version pinned now
#
# k8s.io/kubernetes requires every staging module (k8s.io/api, k8s.io/client-go, ...) at v0.0.0 and
# replaces it with ./staging/src/...; a module that imports it has to repeat those replaces with the
# published v0.Y.Z tags. This script reads the list from upstream's go.mod (fetched into the module
# cache through the Go module proxy), so nobody types it by hand. The version lives in one place only:
# the `k8s.io/kubernetes vX.Y.Z` requirement of tests/cluster/k8s/go.mod, which build-k8s.sh and the
# test harness read. After a version change, run this script and then scripts/build-k8s.sh.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DIR=$HERE/tests/cluster/k8s
CUR=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$DIR/go.mod" 2>/dev/null || true)
KV=${1:-$CUR}
[ -n "$KV" ] || { echo "usage: $0 VERSION (e.g. 1.34.4)" >&2; exit 2; }
KV=v${KV#v}
SV=v0.${KV#v1.}   # staging modules are tagged v0.Y.Z for Kubernetes v1.Y.Z
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

UPSTREAM=$(go mod download -json "k8s.io/kubernetes@$KV" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
go mod edit -json "$UPSTREAM" >"$TMP/upstream.json"
cd "$TMP"
python3 - "$SV" <<'EOF' >edits.txt
import json, sys
sv = sys.argv[1]
up = json.load(open("upstream.json"))
print(f"-go={up['Go']}")
for d in up.get("GoDebug") or []:
    print(f"-godebug={d['Key']}={d['Value']}")
staging = sorted(r["Old"]["Path"] for r in up.get("Replace") or [] if r["New"]["Path"].startswith("./staging/"))
if not staging:
    sys.exit("upstream go.mod has no ./staging/ replace directives; has its layout changed?")
for m in staging:
    print(f"-replace={m}={m}@{sv}")
EOF
printf 'module webrelease.dev/tests/k8sbuild\n' >go.mod
mapfile -t edits <edits.txt
go mod edit "${edits[@]}"
C=k8s.io/kubernetes/cmd
go get -tool "$C/kube-apiserver@$KV" "$C/kube-controller-manager@$KV" "$C/kube-scheduler@$KV" "$C/kubectl@$KV" \
  "$C/kubelet@$KV" 2>"$TMP/get.log" ||
  { cat "$TMP/get.log" >&2; exit 1; }
go mod tidy
# The same replaces again, dropped and re-added so that they follow the require block (easier to read).
mapfile -t replaces < <(grep -- '^-replace=' edits.txt)
mapfile -t drops < <(grep -- '^-replace=' edits.txt | sed -E 's/^-replace=([^=]+)=.*/-dropreplace=\1/')
go mod edit "${drops[@]}"
go mod edit "${replaces[@]}"
cp go.mod go.sum "$DIR/"
echo "tests/cluster/k8s/go.mod now pins k8s.io/kubernetes $KV with $(grep -c '^replace' go.mod) staging replaces" >&2
