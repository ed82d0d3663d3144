//! What the Fedora and RHEL-family OS plugins share: both install with anaconda from a
//! generated kickstart in one qemu guest, and differ only in the names and versions they
//! accept. The cdylibs `fedora_os` and `rhel_os` are thin wrappers over [`install`].
//!
//! Modules, one concept each:
//! - [`distro`]: OS names, version parsing, and the version table (what each release's
//!   installer needs);
//! - [`kickstart`]: the kickstart generated from the template, and the installer's
//!   kernel arguments;
//! - [`password`]: the root password, hashed before it goes anywhere;
//! - [`treeinfo`]: where a tree's kernel and initrd are;
//! - [`fetch`]: downloads, streamed and bounded;
//! - [`guesturl`]: loopback URLs as the guest reaches them;
//! - [`cpio`]: the kickstart appended to the initrd;
//! - [`checksum`]: ISO checksums;
//! - [`iso`]: ISO remastering with xorriso;
//! - [`console`]: what the installer printed on its serial console;
//! - [`icicle`]: the package manifest XML;
//! - [`state`]: the install tree's and repositories' metadata, for the host's cache key;
//! - [`install`]: the build, step by step.

pub mod checksum;
pub mod console;
pub mod cpio;
pub mod distro;
pub mod error;
pub mod fetch;
pub mod guesturl;
pub mod icicle;
pub mod install;
pub mod iso;
pub mod kickstart;
pub mod password;
pub mod state;
pub mod target;
pub mod treeinfo;

pub use target::create_target_image;

pub use distro::Family;
pub use error::RedHatError;
pub use install::create_base_image;
