# The guest engine (plugins/guest) and its tests: qemu, libvirt (daemon, client library
# and headers for the `virt` crate), busybox-static and cpio for the test initramfs, and
# a Debian kernel for the test guests. Sourced by scripts/setup.sh.
apt_need qemu-system-x86 qemu-utils busybox-static cpio libvirt-daemon-system libvirt-dev pkg-config

# The kernel is unpacked under $IMAGEFACTORY_SERVICES/kernel, never installed into the
# host's /boot: the package linux-image-amd64 depends on is downloaded and extracted,
# and kernel/vmlinuz, kernel/version and kernel/modules (its /lib/modules/<version>) are
# what the tests use. The `.complete` marker is written last.
guest_kernel() {
  local dir="$IMAGEFACTORY_SERVICES/kernel" pkg version tmp deb
  [ -f "$dir/.complete" ] && return 0
  pkg="$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')"
  [ -n "$pkg" ] || { echo "setup: cannot find the kernel package linux-image-amd64 depends on" >&2; exit 1; }
  echo "setup: unpacking $pkg into $dir"
  rm -rf "$dir"
  tmp="$(mktemp -d)"
  chmod 755 "$tmp"
  if ! (cd "$tmp" && apt-get download -qq "$pkg"); then
    $SUDO apt-get update -qq
    (cd "$tmp" && apt-get download -qq "$pkg")
  fi
  deb="$(ls "$tmp"/*.deb)"
  mkdir -p "$dir/root"
  dpkg-deb -x "$deb" "$dir/root"
  rm -rf "$tmp"
  version="${pkg#linux-image-}"
  [ -f "$dir/root/boot/vmlinuz-$version" ] || { echo "setup: $pkg holds no vmlinuz-$version" >&2; exit 1; }
  ln -sfn "root/boot/vmlinuz-$version" "$dir/vmlinuz"
  ln -sfn "root/lib/modules/$version" "$dir/modules"
  echo "$version" >"$dir/version"
  touch "$dir/.complete"
}
guest_kernel

# libvirt re-probes qemu for about a minute on every domain start while /dev/kvm is
# root-only; giving the kvm group access (as udev would on a normal host) avoids that.
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
  $SUDO chgrp kvm /dev/kvm && $SUDO chmod 660 /dev/kvm || true
fi
