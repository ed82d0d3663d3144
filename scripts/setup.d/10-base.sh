# Host packages the build and the Debian plugin need. Sourced by scripts/setup.sh.
apt_need curl qemu-utils pkg-config python3 python3-venv mmdebstrap debian-archive-keyring e2fsprogs fdisk \
  grub-pc-bin qemu-system-x86 openssl util-linux file busybox-static
command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }
