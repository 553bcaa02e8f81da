#!/usr/bin/env bash
# The AWS CLI (v1, from PyPI) for `make bench`, in its OWN venv under the cache: it pins a botocore
# that would clash with the project's boto3. Pinned, cached by version; prints nothing when cached.
set -euo pipefail
AWSCLI_VERSION="${AWSCLI_VERSION:-1.46.3}"
CACHE="${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}"
DEST="$CACHE/awscli-$AWSCLI_VERSION"
if [ -f "$DEST/.installed" ]; then
  exit 0
fi
echo "bench-install-awscli: installing awscli $AWSCLI_VERSION into $DEST/venv (one time)..." >&2
mkdir -p "$CACHE"
TMP="$(mktemp -d "$CACHE/awscli-build.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# A venv is not relocatable (absolute paths in its scripts), so build it in place and mark it
# complete (.installed) only when pip has finished; a partial one is removed and redone.
rm -rf "$DEST"
"${PY:-python3}" -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q --disable-pip-version-check "awscli==$AWSCLI_VERSION" >"$TMP/pip.log" 2>&1 \
  || { cat "$TMP/pip.log" >&2; rm -rf "$DEST"; exit 1; }
touch "$DEST/.installed"
