#!/usr/bin/env bash
# Installs what building and testing imagefactory needs on a fresh Debian machine.
# Idempotent; needs root (or sudo) for apt-get.
set -euo pipefail
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
need=()
for pkg in curl qemu-utils pkg-config python3 python3-venv mmdebstrap debian-archive-keyring e2fsprogs fdisk grub-pc-bin qemu-system-x86 openssl util-linux file busybox-static; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }

# Glance (the OpenStack Image service) for the OpenStack plugin's tests: PyPI's glance and
# gunicorn in a venv at a fixed place; the tests run its WSGI app on loopback with sqlite
# and no Keystone. The `.complete` marker is written last, so an interrupted install is
# redone instead of leaving a venv without glance-manage.
IMAGEFACTORY_SERVICES="${IMAGEFACTORY_SERVICES:-$HOME/.cache/imagefactory}"
GLANCE_VENV="$IMAGEFACTORY_SERVICES/glance-venv"
if [ ! -f "$GLANCE_VENV/.complete" ]; then
  echo "setup: installing Glance into $GLANCE_VENV"
  rm -rf "$GLANCE_VENV"
  mkdir -p "$IMAGEFACTORY_SERVICES"
  python3 -m venv "$GLANCE_VENV"
  "$GLANCE_VENV/bin/pip" install -q --disable-pip-version-check glance gunicorn
  for tool in gunicorn glance-manage; do
    [ -x "$GLANCE_VENV/bin/$tool" ] || { echo "setup: $tool missing from $GLANCE_VENV after pip install" >&2; exit 1; }
  done
  touch "$GLANCE_VENV/.complete"
fi
echo "setup: ok"
