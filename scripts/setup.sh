#!/usr/bin/env bash
# Installs everything lbtui needs on a fresh Debian 12 machine, idempotently:
# apt packages (BCC, kernel headers, tools), the kernel-header links BCC looks for,
# bpffs, and a venv on Debian's python3 (so the Debian-only `bcc` module imports).
# Usage: scripts/setup.sh [--quiet]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV="$ROOT/.venv"
step() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
fail() { printf '\033[31m[setup] %s\033[0m\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "lbtui loads BPF programs and needs root: run as root (sudo $0)."
command -v apt-get >/dev/null || fail "This set-up script supports Debian 12 (apt-get not found)."

APT_PACKAGES=(python3-bpfcc python3-venv python3-dev linux-headers-amd64 bpftool ethtool
              iproute2 iputils-ping curl openssl librsvg2-bin nftables haproxy wrk)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Services shipped by packages (haproxy) must not start on install: we run them ourselves
  # inside benchmark namespaces only.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
  trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || fail "apt-get install failed; check network access to the Debian mirror and retry."
  rm -f /usr/sbin/policy-rc.d
else
  step "apt packages present"
fi

# BCC compiles against /lib/modules/$(uname -r)/build. No headers package matches this kernel,
# so point build/ and source/ at Debian's closest headers (split into -amd64 and -common).
KDIR=/lib/modules/$(uname -r)
if [ ! -e "$KDIR/build/include" ]; then
  arch_hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1)
  [ -n "$arch_hdr" ] || fail "kernel headers missing: apt-get install linux-headers-amd64"
  common_hdr=${arch_hdr%-amd64}-common
  mkdir -p "$KDIR"
  ln -sfn "$arch_hdr" "$KDIR/build"
  ln -sfn "$common_hdr" "$KDIR/source"
  step "linked kernel headers: $KDIR/build -> $arch_hdr"
else
  step "kernel headers found at $KDIR/build"
fi

if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf && step "mounted bpffs on /sys/fs/bpf"
fi

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import bcc' 2>/dev/null; then
  step "creating venv $VENV on Debian's python3 (system site-packages for bcc)"
  rm -rf "$VENV"
  /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
stamp="$VENV/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -e "$stamp" ]; then
  step "installing Python packages into the venv"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null
  "$VENV/bin/pip" install -q -e ".[test,bench]" >"$VENV/pip.log" 2>&1 || fail "pip install failed; check access to PyPI and retry."
  rm -f "$VENV"/.installed-*; touch "$stamp"
else
  step "Python packages present"
fi
"$VENV/bin/python" -c 'import bcc, lbtui' || fail "bcc or lbtui does not import from $VENV."
step "ready: $VENV/bin/lbtui"
