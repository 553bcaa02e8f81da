#!/usr/bin/env bash
# Installs the headless browser the browser tests (tests/browser/) drive: Chromium and its
# chromedriver from Debian's packages. Selenium (a Python dev dependency) is pointed at
# /usr/bin/chromedriver and /usr/bin/chromium explicitly, so nothing is ever downloaded at test
# time. Idempotent; prints nothing when already installed.
set -euo pipefail

have_chromium() {
  command -v chromium >/dev/null && command -v chromedriver >/dev/null
}

if have_chromium; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "install-chromium: Chromium is not installed and installing it needs root:" >&2
  echo "  apt-get install chromium chromium-driver   (as root), then run this script again" >&2
  exit 1
fi
command -v apt-get >/dev/null || {
  echo "install-chromium: apt-get not found; install chromium and chromedriver on the PATH" >&2
  exit 1
}

echo "install-chromium: installing chromium and chromium-driver from Debian packages (one time)..." >&2
"${SUDO[@]}" apt-get update -qq >/dev/null
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  chromium chromium-driver fonts-dejavu-core >/dev/null

have_chromium || { echo "install-chromium: installed, but chromium or chromedriver is not on the PATH" >&2; exit 1; }
