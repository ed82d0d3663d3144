#!/usr/bin/env bash
# Builds the Debian package `imagefactory` into target/ (as cargo-deb would):
#
#   bash scripts/package-deb.sh [--profile release|dev] [--out DIR] [--no-build]
#
# --no-build packages what cargo built before (the tests package the workspace's own
# debug build instead of rebuilding it with other features).
#
# It holds imagefactoryd and imagefactory in /usr/bin, the production plugins in
# /usr/lib/imagefactory/plugins (never the mock plugins), /etc/imagefactory/
# imagefactory.conf and target_content.xml as conffiles, the systemd units
# imagefactoryd.service (the API daemon, enabled at install) and
# imagefactoryd-worker.service (a farm's build worker, never enabled by the package: it
# needs a postgres config first), and maintainer scripts that add the system user
# `imagefactory` and /var/lib/imagefactory. Depends: the shared libraries the binaries
# link (found with ldd and dpkg -S on this build machine) and the tools the plugins run.
# Prints the path of the .deb on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=release
OUT=target
NO_BUILD=""
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --no-build) NO_BUILD=1; shift ;;
    *) echo "usage: bash scripts/package-deb.sh [--profile release|dev] [--out DIR] [--no-build]" >&2; exit 2 ;;
  esac
done
case "$PROFILE" in
  release) BIN=target/release ;;
  dev | debug) PROFILE=dev; BIN=target/debug ;;
  *) echo "package-deb: --profile is release or dev, not $PROFILE" >&2; exit 2 ;;
esac

# The production plugins: package name and the file it builds.
PLUGINS=(
  "debian-os-plugin libdebian_os.so"
  "fedora-os-plugin libfedora_os.so"
  "rhel-os-plugin librhel_os.so"
  "ec2-cloud-plugin libec2_cloud.so"
  "openstack-cloud-plugin libopenstack_cloud.so"
  "vsphere-cloud-plugin libvsphere_cloud.so"
  "rhevm-cloud-plugin librhevm_cloud.so"
  "indirection-cloud-plugin libindirection_cloud.so"
)
# The tools the plugins run (see the README's host packages).
TOOLS="qemu-system-x86, qemu-utils, mmdebstrap, debian-archive-keyring, e2fsprogs, fdisk, grub-pc-bin, openssl, util-linux, xorriso, cpio"
RECOMMENDS="systemd, libvirt-daemon-system, isolinux, syslinux-common"

packages=(-p imagefactory)
for p in "${PLUGINS[@]}"; do packages+=(-p "${p%% *}"); done
[ -n "$NO_BUILD" ] || cargo build --profile "$PROFILE" --quiet "${packages[@]}"
for f in imagefactoryd imagefactory; do
  [ -f "$BIN/$f" ] || { echo "package-deb: $BIN/$f is missing: build it first" >&2; exit 1; }
done
for p in "${PLUGINS[@]}"; do
  [ -f "$BIN/${p##* }" ] || { echo "package-deb: $BIN/${p##* } is missing: build it first" >&2; exit 1; }
done

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' host/Cargo.toml | head -n 1)
ARCH=$(dpkg --print-architecture)
NAME="imagefactory_${VERSION}_${ARCH}"
STAGE="$OUT/deb/$NAME"
rm -rf "$STAGE"
install -d "$STAGE/DEBIAN" "$STAGE/usr/bin" "$STAGE/usr/lib/imagefactory/plugins" "$STAGE/etc/imagefactory" \
  "$STAGE/lib/systemd/system" "$STAGE/usr/share/doc/imagefactory/examples"
install -m 0755 "$BIN/imagefactoryd" "$BIN/imagefactory" "$STAGE/usr/bin/"
for p in "${PLUGINS[@]}"; do install -m 0644 "$BIN/${p##* }" "$STAGE/usr/lib/imagefactory/plugins/"; done
install -m 0644 conf/imagefactory.conf conf/target_content.xml "$STAGE/etc/imagefactory/"
install -m 0644 conf/systemd/imagefactoryd.service conf/systemd/imagefactoryd-worker.service "$STAGE/lib/systemd/system/"
install -m 0644 conf/systemd/root-builds.conf "$STAGE/usr/share/doc/imagefactory/examples/"
install -m 0644 README.md "$STAGE/usr/share/doc/imagefactory/"
cp -r conf/examples/. "$STAGE/usr/share/doc/imagefactory/examples/"
rm -f "$STAGE/usr/share/doc/imagefactory/examples/mock.tdl" # MockOS is not shipped
find "$STAGE/usr/share/doc/imagefactory/examples" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
cat >"$STAGE/usr/share/doc/imagefactory/copyright" <<'TXT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: imagefactory
License: Apache-2.0
TXT
for s in postinst prerm postrm; do install -m 0755 "conf/deb/$s" "$STAGE/DEBIAN/$s"; done
printf '/etc/imagefactory/imagefactory.conf\n/etc/imagefactory/target_content.xml\n' >"$STAGE/DEBIAN/conffiles"

# The packages holding the shared libraries the binaries link directly (their NEEDED
# entries, located by ldd; what those libraries need comes with their packages).
libs=$(for f in "$STAGE/usr/bin/"* "$STAGE/usr/lib/imagefactory/plugins/"*; do
  needed=$(objdump -p "$f" | awk '$1 == "NEEDED" { print $2 }')
  ldd "$f" | awk -v needed="$needed" 'BEGIN { n = split(needed, w, "\n"); for (i = 1; i <= n; i++) want[w[i]] = 1 }
    $2 == "=>" && ($1 in want) && $3 ~ /^\// { print $3 }
    $1 ~ /^\// { print $1 }'
done | sort -u)
shlib_pkgs=""
for lib in $libs; do
  pkg=""
  for candidate in "$lib" "$(readlink -f "$lib")" "/usr$lib" "${lib#/usr}"; do
    pkg=$(dpkg -S "$candidate" 2>/dev/null | head -n 1 | cut -d: -f1) && [ -n "$pkg" ] && break
  done
  [ -n "$pkg" ] || { echo "package-deb: no Debian package holds $lib" >&2; exit 1; }
  shlib_pkgs="$shlib_pkgs $pkg"
done
DEPENDS=$(printf '%s\n' $shlib_pkgs | sort -u | paste -sd, | sed 's/,/, /g')

SIZE=$(du -sk "$STAGE" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<CONTROL
Package: imagefactory
Version: $VERSION
Architecture: $ARCH
Maintainer: imagefactory developers <imagefactory@localhost>
Installed-Size: $SIZE
Depends: $DEPENDS, $TOOLS, passwd, procps
Recommends: $RECOMMENDS
Section: admin
Priority: optional
Description: build OS images from one template and push them to clouds
 imagefactory builds a generic base OS image from a TDL template (Debian,
 Fedora, RHEL and its rebuilds), turns it into each cloud's or hypervisor's
 target image (EC2, OpenStack, vSphere, RHEV-M, IndirectionCloud) and pushes
 that to the provider. A Rust rewrite of Red Hat's Image Factory, compatible
 with its REST API v2 and its CLI. This package holds the daemon imagefactoryd
 (a systemd service), the command imagefactory and the production plugins.
CONTROL

DEB="$OUT/$NAME.deb"
# xz for a release; a quick gzip for the (large) debug build the tests package.
COMPRESS=(-Zxz)
[ "$PROFILE" = release ] || COMPRESS=(-Zgzip -z1)
dpkg-deb --root-owner-group "${COMPRESS[@]}" --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
