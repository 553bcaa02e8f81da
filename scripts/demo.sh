#!/usr/bin/env bash
# `make demo`: a real release of the sample build (examples/build) to the sample customers
# (examples/customers.jsonl), on local folders under out/demo/, then an audit of every site.
# examples/release.yaml uses file:// URLs relative to its own folder (see docs/copier.md).
set -euo pipefail
cd "$(dirname "$0")/.."
WEBRELEASE="${WEBRELEASE:-.venv/bin/webrelease}"

echo "== webrelease run examples/release.yaml"
"$WEBRELEASE" run examples/release.yaml "$@"
echo
echo "== webrelease verify examples/release.yaml"
"$WEBRELEASE" verify examples/release.yaml --no-progress
echo
echo "Sites:  $(pwd)/out/demo/sites/<customer>/   (open out/demo/sites/acme/index.html in a browser)"
echo "Report: $(pwd)/out/demo/reports/default/demo/<run-id>/index.json"
echo "Run 'make demo' again: nothing is copied twice. 'webrelease plan examples/release.yaml -v' shows what would change."
# the newest run's page (run ids sort by time)
page="$(ls -d "$(pwd)"/out/demo/reports/default/demo/*/report.html | sort | tail -n 1)"
echo
echo "Report page (open it in a browser): $page"
