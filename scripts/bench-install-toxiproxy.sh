#!/usr/bin/env bash
# toxiproxy (the latency proxy of `make bench`: ~20 ms per request, like real S3), pinned, cached.
set -euo pipefail
exec bash "$(dirname "$0")/bench-go-tool.sh" toxiproxy "${TOXIPROXY_VERSION:-v2.12.0}" \
  github.com/Shopify/toxiproxy/v2/cmd/server server toxiproxy-server
