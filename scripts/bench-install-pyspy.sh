#!/usr/bin/env bash
# py-spy (the sampling profiler `make bench` runs on a webrelease shard), from PyPI, in its own venv
# under the cache so that the project's venv stays as `make test` needs it. Pinned; prints nothing
# when cached.
set -euo pipefail
PYSPY_VERSION="${PYSPY_VERSION:-0.4.3}"
CACHE="${WEBRELEASE_CACHE:-$HOME/.cache/webrelease}"
DEST="$CACHE/py-spy-$PYSPY_VERSION"
if [ -f "$DEST/.installed" ]; then
  exit 0
fi
echo "bench-install-pyspy: installing py-spy $PYSPY_VERSION into $DEST/venv (one time)..." >&2
rm -rf "$DEST"
"${PY:-python3}" -m venv "$DEST/venv"
"$DEST/venv/bin/pip" install -q --disable-pip-version-check "py-spy==$PYSPY_VERSION" >"$DEST/pip.log" 2>&1 \
  || { cat "$DEST/pip.log" >&2; rm -rf "$DEST"; exit 1; }
touch "$DEST/.installed"
