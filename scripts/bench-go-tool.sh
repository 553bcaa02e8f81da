#!/usr/bin/env bash
# Shared by the bench-install-*.sh scripts: `go install` one pinned Go tool into
# $WEBRELEASE_CACHE/<name>-<version>/bin/<binary>, once. Prints nothing when cached.
# usage: bench-go-tool.sh <name> <version> <module/path/to/cmd> <binary built> [<installed as>]
set -euo pipefail
NAME="$1" VERSION="$2" PKG="$3" BINARY="$4" AS="${5:-$4}"
CACHE="${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}"
DEST="$CACHE/$NAME-$VERSION/bin"
if [ -x "$DEST/$AS" ]; then
  exit 0
fi
command -v go >/dev/null || { echo "bench-install-$NAME: go is required (https://go.dev/dl/)" >&2; exit 1; }
echo "bench-install-$NAME: building $PKG@$VERSION (one time)..." >&2
mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/$NAME-build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# Build into a temporary GOBIN and move into place only when complete, so that an interrupted build
# never leaves a half-written binary that a later run would take for a cached one.
export GOTOOLCHAIN=local GOFLAGS="-trimpath" CGO_ENABLED=0
if ! GOBIN="$TMP" go install "$PKG@$VERSION" 2>"$TMP/install.log"; then
  # `go install pkg@version` also asks the proxy for the module's version list (to check deprecation);
  # some modules' lists are not served (s5cmd/v2: 403). Build the same pinned version from a throwaway
  # module instead: `go get` resolves exactly the versions `go install` would.
  mkdir "$TMP/mod"
  (cd "$TMP/mod" && go mod init benchtool >/dev/null 2>&1 && go get "$PKG@$VERSION" >/dev/null 2>&1 \
    && go build -o "$TMP/$BINARY" "$PKG") || { cat "$TMP/install.log" >&2; exit 1; }
fi
mkdir -p "$DEST"
mv "$TMP/$BINARY" "$DEST/$AS"
