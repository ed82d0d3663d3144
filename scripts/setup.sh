#!/usr/bin/env bash
# Installs what building and testing imagefactory needs on a fresh Debian machine.
# Idempotent; needs root (or sudo) for apt-get.
#
# Each part lives in scripts/setup.d/NN-name.sh and is sourced in order; a part uses the
# helpers below. Services and tools the tests start (Glance, moto, the vSphere simulator)
# go under $IMAGEFACTORY_SERVICES, default ~/.cache/imagefactory.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export IMAGEFACTORY_SERVICES="${IMAGEFACTORY_SERVICES:-$HOME/.cache/imagefactory}"
mkdir -p "$IMAGEFACTORY_SERVICES"
APT_UPDATED=""

# apt_need PKG...: installs the Debian packages that are not installed yet.
apt_need() {
  local need=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  [ ${#need[@]} -gt 0 ] || return 0
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
}

# py_venv NAME "TOOL..." PIP_SPEC...: a venv at $IMAGEFACTORY_SERVICES/NAME holding the
# PyPI packages, checked for the named tools. The `.complete` marker is written last, so an
# interrupted install is redone instead of leaving a venv without its tools.
py_venv() {
  local venv="$IMAGEFACTORY_SERVICES/$1" tools="$2" tool
  shift 2
  [ -f "$venv/.complete" ] && return 0
  echo "setup: installing $* into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$@"
  for tool in $tools; do
    [ -x "$venv/bin/$tool" ] || { echo "setup: $tool missing from $venv after pip install" >&2; exit 1; }
  done
  touch "$venv/.complete"
}

for part in scripts/setup.d/*.sh; do
  # shellcheck source=/dev/null
  source "$part"
done
echo "setup: ok"
