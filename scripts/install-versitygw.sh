#!/usr/bin/env bash
# Builds the S3 server the storage tests run against: versitygw (POSIX backend), pinned, cached by
# version under $WEBRELEASE_CACHE/versitygw-<version>/bin/versitygw. Prints nothing when cached.
set -euo pipefail
VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
CACHE="${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}"
DEST="$CACHE/versitygw-$VERSITYGW_VERSION/bin"
if [ -x "$DEST/versitygw" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "install-versitygw: go is required (https://go.dev/dl/)" >&2; exit 1; }
echo "install-versitygw: building versitygw $VERSITYGW_VERSION (one time, a few minutes)..." >&2
mkdir -p "$DEST"
TMP="$(mktemp -d "$CACHE/versitygw-build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# Build into a temporary GOBIN and move into place only when complete: an interrupted build never
# leaves a half-written binary that a later run would take for a cached one.
GOBIN="$TMP" GOTOOLCHAIN=local GOFLAGS="-trimpath" CGO_ENABLED=0 \
  go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
mv "$TMP/versitygw" "$DEST/versitygw"
