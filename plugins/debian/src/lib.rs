//! Debian OS plugin: builds a bootable Debian base image without a VM.
//!
//! mmdebstrap installs Debian from a mirror (the template's install url, or the build
//! host's own apt mirror for `<url>host</url>`) into a directory; the template's
//! repositories, packages, files and commands are applied in a chroot; the tree is
//! written straight into partition 1 of a raw MBR disk with `mkfs.ext4 -d` and made
//! bootable with GRUB (BIOS). The ICICLE lists the installed packages (dpkg-query).
//!
//! Modules, one concept each:
//! - [`plan`]: what the template asks for, checked before any work;
//! - [`release`]: Debian releases and architectures;
//! - [`mirror`]: the mirror, from the template or the host's apt sources;
//! - [`bootstrap`]: mmdebstrap, with the initramfs built once at the end;
//! - [`system`]: fstab, host name, serial console, networking;
//! - [`sources`]: the image's apt sources and the template's repositories;
//! - [`password`]: the root password, hashed;
//! - [`customize`]: the template's content applied in the chroot;
//! - [`fetch`]: template content given by URL;
//! - [`icicle`]: the package manifest;
//! - [`state`]: the mirror state a build reads (suite files by URL and SHA-256), the
//!   host's cache key ([`state::source_state`]) and the build's SOURCE_DATE_EPOCH;
//! - [`seed`]: the build key, and every value a build would otherwise choose at random;
//! - [`scrub`]: what differs between builds, taken out of the tree;
//! - [`digest`]: SHA-256 digests and their hex form;
//! - [`build`]: the steps in order;
//! - [`target`]: the second stage, a copy of a base image with a target's content.

pub mod bootstrap;
pub mod build;
pub mod customize;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod icicle;
pub mod mirror;
pub mod password;
pub mod plan;
pub mod release;
pub mod sbom;
pub mod scrub;
pub mod seed;
pub mod sources;
pub mod state;
pub mod system;
pub mod target;

pub use state::source_state;

use imagefactory_plugin_api::prelude::*;

/// The plugin object the host calls.
pub struct DebianOs;

impl OsPlugin for DebianOs {
    fn create_base_image(&self, host: &Host, req: BaseImageRequest) -> Result<BaseImageOutcome, PluginError> {
        build::create_base_image(host, &req)
    }

    fn create_target_image(&self, host: &Host, req: TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
        target::create_target_image(host, &req)
    }

    /// The suite files the build would read, for the host's build cache: equal files,
    /// equal packages (see [`state`]).
    fn source_state(&self, host: &Host, req: SourceStateRequest) -> Result<Option<SourceState>, PluginError> {
        host.activity("Reading the mirror's suite files (InRelease)");
        let pairs = state::source_state(&req.template).map_err(|e| PluginError::new(e.to_string()))?;
        let sources = pairs.into_iter().map(|(url, digest)| SourceFile { url, digest }).collect();
        Ok(Some(SourceState { sources }))
    }
}

/// The plugin's manifest: any Debian version and architecture is routed here, and the
/// plugin answers unsupported ones with a one-line error naming what it supports.
pub fn manifest() -> Manifest {
    Manifest::os(
        "Debian",
        env!("CARGO_PKG_VERSION"),
        "Debian 11, 12 and 13 (x86_64) bootstrapped with mmdebstrap into a bootable raw disk, with ICICLE",
        &[("Debian", None, None)],
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    os: || Ok(DebianOs),
}
