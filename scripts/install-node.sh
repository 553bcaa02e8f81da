#!/usr/bin/env bash
# Installs, from Debian, what the node test tier runs pods with: containerd, runc, the CNI plugins,
# buildah (builds our image from the Dockerfile), mmdebstrap (makes the Debian Python base image) and
# iptables. Prints nothing when they are all there. Needs root (apt-get); see docs/testing-cluster.md.
set -euo pipefail
PKGS=(containerd runc containernetworking-plugins buildah mmdebstrap iptables)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "install-node.sh: the node tier needs these Debian packages: ${missing[*]} (apt-get install as root)" >&2
  exit 1
fi
echo "install-node.sh: installing ${missing[*]}" >&2
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-node.sh: installed in $((SECONDS - start)) s" >&2
