#!/usr/bin/env bash
# Builds the images the node test tier runs, and loads them into the containerd store the tier uses:
#
#   1. a Debian bookworm Python base image, made with mmdebstrap (no registry is reachable here, so
#      python:3.11-slim cannot be pulled): python3, python3-venv, python3-pip, python-is-python3 and
#      ca-certificates: what our Dockerfile uses of the official image;
#   2. the pod sandbox ("pause") image, from scripts/node/pause.go;
#   3. our image, from our own Dockerfile, unchanged: `buildah bud` with one build-arg,
#      PYTHON_IMAGE=<the base above> (docs/install.md says what differs from a release build).
#
# Everything is cached under $WEBRELEASE_CACHE/node: the base by its package list, the pause image by
# its source, our image by a hash of its build inputs (Dockerfile, .dockerignore, pyproject.toml,
# README.md, copier/, operator/ and the base), so it is rebuilt only when one of them changes.
# The store is guarded by a flock ($WEBRELEASE_CACHE/node/.lock; the node fixture holds it for a
# whole test session and sets WEBRELEASE_NODE_LOCK_HELD=1 when it calls this script).
#
# Prints `KEY=VALUE` lines: WEBRELEASE_IMAGE, PAUSE_IMAGE, CONTAINERD_ROOT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}
N=$CACHE/node
mkdir -p "$N"
if [ "${WEBRELEASE_NODE_LOCK_HELD:-}" != 1 ]; then
  exec 9>"$N/.lock"
  flock 9
fi
log() { echo "build-node-images.sh: $*" >&2; }
NICE=(nice -n 10)
B=(buildah --root "$N/buildah/root" --runroot "$N/buildah/run" --storage-driver overlay)
CTRD_ROOT=$N/containerd/root
have_image() { "${B[@]}" images --quiet "$1" >/dev/null 2>&1; }

# ---- 1. base image -------------------------------------------------------------------------------
BASE_PKGS=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
BASE_KEY=$(printf 'bookworm minbase %s v1' "$BASE_PKGS" | sha256sum | cut -c1-12)
BASE=localhost/debian-python:bookworm-$BASE_KEY
if ! have_image "$BASE"; then
  t=$SECONDS
  mkdir -p "$N/rootfs"
  tar=$N/rootfs/debian-python-$BASE_KEY.tar
  if [ ! -s "$tar" ]; then
    log "making the Debian Python base with mmdebstrap (first time only; about a minute)"
    "${NICE[@]}" mmdebstrap --quiet --format=tar --variant=minbase --include="$BASE_PKGS" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' bookworm "$tar.tmp" >&2
    mv "$tar.tmp" "$tar"
  fi
  c=$("${B[@]}" from scratch)
  "${B[@]}" add "$c" "$tar" / >&2
  "${B[@]}" config --cmd '["python3"]' --env LANG=C.UTF-8 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$c" >&2
  "${B[@]}" commit -q "$c" "$BASE" >/dev/null
  "${B[@]}" rm "$c" >/dev/null
  log "base image $BASE in $((SECONDS - t)) s"
fi

# ---- 2. pause image ------------------------------------------------------------------------------
PAUSE_KEY=$(cat "$HERE/scripts/node/pause.go" "$HERE/scripts/node/go.mod" | sha256sum | cut -c1-12)
PAUSE=localhost/pause:$PAUSE_KEY
if ! have_image "$PAUSE"; then
  t=$SECONDS
  tmp=$(mktemp -d)
  GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS= "${NICE[@]}" go build -C "$HERE/scripts/node" -trimpath \
    -ldflags '-s -w' -o "$tmp/pause" .
  c=$("${B[@]}" from scratch)
  "${B[@]}" copy "$c" "$tmp/pause" /pause >&2
  "${B[@]}" config --entrypoint '["/pause"]' --user 65535:65535 "$c" >&2
  "${B[@]}" commit -q "$c" "$PAUSE" >/dev/null
  "${B[@]}" rm "$c" >/dev/null
  rm -rf "$tmp"
  log "pause image $PAUSE in $((SECONDS - t)) s"
fi

# ---- 3. our image, from our Dockerfile -----------------------------------------------------------
# The build context is what .dockerignore lets through: hash exactly those files.
SRC_KEY=$(
  cd "$HERE"
  {
    sha256sum Dockerfile .dockerignore pyproject.toml README.md
    find copier operator -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | sort -z |
      xargs -0 sha256sum
    "${B[@]}" images --quiet --no-trunc "$BASE"
  } | sha256sum | cut -c1-16
)
IMAGE=localhost/webrelease:src-$SRC_KEY
if ! have_image "$IMAGE"; then
  t=$SECONDS
  log "building $IMAGE from the Dockerfile (when its inputs change; about 2 minutes)"
  # pip inside the build reaches PyPI with this machine's CA bundle and pip.conf (e.g. a TLS-inspecting
  # proxy's CA): mounted for the build only, never copied into the image.
  mounts=()
  for f in /etc/ssl/certs/ca-certificates.crt /etc/pip.conf; do
    [ -f "$f" ] && mounts+=(-v "$f:$f:ro")
  done
  "${NICE[@]}" "${B[@]}" bud --quiet --isolation chroot --network host --layers=false \
    --build-arg "PYTHON_IMAGE=$BASE" "${mounts[@]}" -t "$IMAGE" -f "$HERE/Dockerfile" "$HERE" >&2
  log "built $IMAGE in $((SECONDS - t)) s"
fi

# ---- load into containerd's store ------------------------------------------------------------------
mkdir -p "$CTRD_ROOT"
run=$(mktemp -d /tmp/webrelease-ctrd-load.XXXXXX)
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$run"
}
trap cleanup EXIT
cat >"$run/config.toml" <<TOML
version = 2
root = "$CTRD_ROOT"
state = "$run/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
TOML
containerd --config "$run/config.toml" >"$run/containerd.log" 2>&1 &
pid=$!
CTR=(ctr --address "$run/containerd.sock" --namespace k8s.io)
for _ in $(seq 100); do "${CTR[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done
present=$("${CTR[@]}" images list --quiet 2>/dev/null || true)
for img in "$PAUSE" "$IMAGE"; do
  grep -qxF "$img" <<<"$present" && continue
  t=$SECONDS
  "${B[@]}" push --quiet "$img" "oci-archive:$run/image.tar:$img" >&2
  "${NICE[@]}" "${CTR[@]}" images import --snapshotter overlayfs "$run/image.tar" >&2
  rm -f "$run/image.tar"
  log "loaded $img into containerd in $((SECONDS - t)) s"
done
# Keep the three newest builds of our image; older ones (and their layers) go.
for store in buildah containerd; do
  if [ $store = buildah ]; then
    list=$("${B[@]}" images --format '{{.Name}}:{{.Tag}} {{.CreatedAtRaw}}' 2>/dev/null | grep '^localhost/webrelease:src-' | sort -k2 -r | awk '{print $1}' || true)
  else
    list=$("${CTR[@]}" images list 2>/dev/null | awk 'NR>1 && $1 ~ /^localhost\/webrelease:src-/ {print $1}' || true)
  fi
  old=$(grep -vxF "$IMAGE" <<<"$list" | tail -n +3 || true)
  for img in $old; do
    if [ $store = buildah ]; then "${B[@]}" rmi "$img" >/dev/null 2>&1 || true
    else "${CTR[@]}" images rm "$img" >/dev/null 2>&1 || true; fi
  done
done
echo "WEBRELEASE_IMAGE=$IMAGE"
echo "PAUSE_IMAGE=$PAUSE"
echo "CONTAINERD_ROOT=$CTRD_ROOT"
