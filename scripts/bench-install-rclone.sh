#!/usr/bin/env bash
# rclone for `make bench`, pinned, cached by version (a large build: several minutes, once).
set -euo pipefail
exec bash "$(dirname "$0")/bench-go-tool.sh" rclone "${RCLONE_VERSION:-v1.76.0}" github.com/rclone/rclone rclone
