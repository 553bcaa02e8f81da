#!/usr/bin/env bash
# Installs (once, cached by version under $WEBRELEASE_CACHE) every non-Python tool the tests use.
# Each piece is its own script so it can be run alone; each prints nothing when already cached.
set -euo pipefail
cd "$(dirname "$0")"
for s in install-*.sh; do
  [ "$s" = install-tools.sh ] && continue
  bash "$s"
done
bash build-k8s.sh >/dev/null
