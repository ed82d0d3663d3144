//! Building bootable raw disk images from a root directory tree, without loop devices,
//! mounts in the host's namespace or a VM: the pieces every "bootstrap a root, then make
//! it a disk" OS plugin needs (Debian now, Ubuntu and others later).
//!
//! The steps, each in its own module:
//! - [`process`]: run a host tool so that it and everything it starts is killed on
//!   every way out (cancel, timeout, failure, panic), logging its output as it comes.
//! - [`tools`]: check the host tools are installed before a build starts.
//! - [`chroot`]: run commands inside the root with /proc, /sys and /dev mounted in a
//!   private mount namespace that dies with the command.
//! - [`size`]: how big the disk must be for the tree; how much of an image is allocated.
//! - [`layout`]: the MBR partition table (`sfdisk`) of a sparse image file.
//! - [`clamp`]: the tree's file times pinned to the build's SOURCE_DATE_EPOCH.
//! - [`ext4`]: the root file system written straight into partition 1 (`mkfs.ext4 -d`),
//!   the same bytes for the same tree when pinned.
//! - [`grub`]: GRUB for BIOS boot (grub-mkimage, boot.img and core.img written by hand).
//! - [`extract`]: the tree of an image's partition copied back out into a directory.

pub mod chroot;
pub mod clamp;
pub mod error;
pub mod ext4;
pub mod extract;
pub mod grub;
pub mod layout;
pub mod process;
pub mod size;
pub mod tools;

pub use error::DiskError;
