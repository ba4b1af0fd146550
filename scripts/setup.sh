#!/usr/bin/env bash
# Installs everything lbtui needs on a fresh Debian 12 machine, idempotently:
# apt packages (BCC, kernel headers, tools), the kernel-header links BCC looks for,
# bpffs, a venv on Debian's python3 (so the Debian-only `bcc` module imports), `lbtui` on
# root's PATH (a link in $PREFIX/bin to the venv's entry point) and shell completion for
# bash and zsh. Every step says what it did; a second run changes nothing.
#
# Usage: scripts/setup.sh              install (or check) everything
#        scripts/setup.sh --uninstall  remove what it added: the links, the completion
#                                      files, the kernel-header links and this checkout's
#                                      venv; apt packages it installed are kept and listed
# Environment: LBTUI_PREFIX (default /usr/local) is where bin/lbtui, the completion files
# and the record of what was installed (share/lbtui/setup-installed) go; NO_COLOR.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV="$ROOT/.venv"
PREFIX=${LBTUI_PREFIX:-/usr/local}
BIN_LINK="$PREFIX/bin/lbtui"
BASH_COMPLETION="$PREFIX/share/bash-completion/completions/lbtui"
ZSH_COMPLETION="$PREFIX/share/zsh/site-functions/_lbtui"
RECORD="$PREFIX/share/lbtui/setup-installed"   # "apt PKG" and "link PATH TARGET" lines

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then B=$'\033[1m' R=$'\033[31m' N=$'\033[0m'; else B='' R='' N=''; fi
step() { printf '%s[setup]%s %s\n' "$B" "$N" "$*"; }
fail() { printf '%s[setup] %s%s\n' "$R" "$*" "$N" >&2; exit 1; }
record() { mkdir -p "$(dirname "$RECORD")"; grep -qxF "$*" "$RECORD" 2>/dev/null || echo "$*" >> "$RECORD"; }

MODE=install
case "${1:-}" in
  "") ;;
  --uninstall) MODE=uninstall ;;
  -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) fail "unknown option ${1}: use --uninstall, or no option to install (--help)." ;;
esac
[ "$(id -u)" = 0 ] || fail "lbtui loads BPF programs and needs root: run as root (sudo $0${1:+ $1})."

# The venv as a real path: a checkout whose .venv is a link to another venv links to that.
venv_real() { (cd "$VENV" 2>/dev/null && pwd -P) || echo "$VENV"; }

uninstall() {
  local target ours=1
  target=$(readlink "$BIN_LINK" 2>/dev/null || true)
  if [ -n "$target" ] && [ "$target" != "$(venv_real)/bin/lbtui" ]; then
    ours=0
    step "kept $BIN_LINK: it points to another checkout's lbtui ($target); run that checkout's scripts/setup.sh --uninstall to remove it"
  fi
  if [ "$ours" = 1 ]; then
    for f in "$BIN_LINK" "$BASH_COMPLETION" "$ZSH_COMPLETION"; do
      if [ -e "$f" ] || [ -L "$f" ]; then rm -f "$f"; step "removed $f"; fi
    done
    if [ -f "$RECORD" ]; then
      while read -r kind path target; do
        [ "$kind" = link ] || continue
        if [ "$(readlink "$path" 2>/dev/null)" = "$target" ]; then
          rm -f "$path"; step "removed kernel-header link $path"
        fi
      done < "$RECORD"
      pkgs=$(awk '$1 == "apt" { printf "%s ", $2 }' "$RECORD")
      rm -f "$RECORD"; rmdir "$(dirname "$RECORD")" 2>/dev/null || true
      if [ -n "$pkgs" ]; then
        step "kept the apt packages setup.sh installed: ${pkgs% } (remove them with: apt-get remove ${pkgs% })"
      else
        step "kept apt packages: setup.sh recorded none it installed"
      fi
    else
      step "kept apt packages: setup.sh recorded none it installed"
    fi
  fi
  if [ -L "$VENV" ]; then
    rm -f "$VENV"; step "removed the link $VENV (the venv it points to is kept)"
  elif [ -d "$VENV" ]; then
    rm -rf "$VENV"; step "removed the venv $VENV"
  fi
  if [ -n "$(ls -A /sys/fs/bpf/lbtui 2>/dev/null)" ]; then
    step "note: instances are still loaded under /sys/fs/bpf/lbtui ($(ls /sys/fs/bpf/lbtui | tr '\n' ' ')); they keep forwarding until \`lbtui down --instance NAME\` removes them"
  fi
  step "kept bpffs on /sys/fs/bpf (a standard kernel mount; not persistent) and /var/lib/lbtui (run-time state, config working copies)"
  step "uninstalled"
}

if [ "$MODE" = uninstall ]; then uninstall; exit 0; fi

command -v apt-get >/dev/null || fail "This set-up script supports Debian 12 (apt-get not found)."
ARCH=$(dpkg --print-architecture)
APT_PACKAGES=(python3-bpfcc python3-venv python3-dev "linux-headers-$ARCH" bpftool ethtool
              iproute2 iputils-ping curl openssl librsvg2-bin nftables haproxy wrk
              bash-completion bird2)
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
  for p in "${missing[@]}"; do record "apt $p"; done
else
  step "apt packages present"
fi

# BCC compiles against /lib/modules/$(uname -r)/build. When no headers package matches this
# kernel, point build/ and source/ at Debian's closest headers (split into -ARCH and -common).
KDIR=/lib/modules/$(uname -r)
if [ ! -e "$KDIR/build/include" ]; then
  arch_hdr=$(ls -d /usr/src/linux-headers-*-"$ARCH" 2>/dev/null | sort -V | tail -n 1)
  [ -n "$arch_hdr" ] || fail "kernel headers missing: apt-get install linux-headers-$ARCH"
  common_hdr=${arch_hdr%-"$ARCH"}-common
  mkdir -p "$KDIR"
  ln -sfn "$arch_hdr" "$KDIR/build"
  ln -sfn "$common_hdr" "$KDIR/source"
  record "link $KDIR/build $arch_hdr"
  record "link $KDIR/source $common_hdr"
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

# `sudo lbtui ...` as the docs write it: a link on root's PATH to this venv's entry point.
entry="$(venv_real)/bin/lbtui"
[ -x "$entry" ] || fail "$entry is missing: remove $VENV and run scripts/setup.sh again."
if [ "$(readlink "$BIN_LINK" 2>/dev/null)" = "$entry" ]; then
  step "$BIN_LINK -> $entry present"
else
  old=$(readlink "$BIN_LINK" 2>/dev/null || true)
  [ ! -e "$BIN_LINK" ] || [ -L "$BIN_LINK" ] || fail "$BIN_LINK exists and is not a link; move it away and run again."
  mkdir -p "$PREFIX/bin"
  ln -sfn "$entry" "$BIN_LINK"
  step "linked $BIN_LINK -> $entry${old:+ (was -> $old)}"
fi

# Completion for bash (bash-completion loads $PREFIX/share/bash-completion/completions) and
# zsh ($PREFIX/share/zsh/site-functions is on Debian's fpath): argcomplete's script, which
# asks lbtui itself, so subcommands and options never go stale.
script=$("$VENV/bin/register-python-argcomplete" lbtui)
for f in "$BASH_COMPLETION" "$ZSH_COMPLETION"; do
  if [ "$(cat "$f" 2>/dev/null)" = "$script" ]; then
    step "completion $f present"
  else
    mkdir -p "$(dirname "$f")"
    printf '%s\n' "$script" > "$f"
    step "installed completion $f"
  fi
done
step "ready: $BIN_LINK (lbtui $("$VENV/bin/python" -c 'import lbtui; print(lbtui.__version__)'))"
