# Host packages the Fedora and RHEL plugins need: xorriso remasters installation ISOs,
# isolinux/syslinux-common give the test ISO fixture its boot loader, extlinux the
# fixture installer's boot loader step, cpio and busybox
# build the fixture installer's initramfs, debugfs (e2fsprogs) reads the installed disk
# in the tests. Sourced by scripts/setup.sh.
apt_need xorriso isolinux syslinux-common extlinux cpio busybox-static e2fsprogs
