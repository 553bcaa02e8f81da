#!/usr/bin/env bash
# s5cmd (the fastest S3 copy tool) for `make bench`, pinned, cached by version.
set -euo pipefail
exec bash "$(dirname "$0")/bench-go-tool.sh" s5cmd "${S5CMD_VERSION:-v2.3.0}" github.com/peak/s5cmd/v2 s5cmd
