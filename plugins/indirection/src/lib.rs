//! IndirectionCloud plugin (target `indirection`): builds a target image with the tools
//! inside another image, the *utility image*, instead of with code of its own.
//!
//! Made for the original's live-CD workflow: the input base image is the content of a
//! live CD, the utility image has livemedia-creator (or xorriso, or any tool), and a
//! partial TDL (`utility_customizations`) says what to run. The plugin does all its work
//! in `builder_should_create_target_image` and answers `false`, as the original did, so
//! no OS-plugin stage runs:
//!
//! 1. the utility image's kernel and initrd are read out of it ([`kernel`]);
//! 2. the VM boots from a qcow2 overlay of the utility image, never a copy of it;
//! 3. a sparse working disk ([`workdisk`]) is its second disk, `/dev/vdb`, whose first
//!    partition holds the input image as a file (`/input_image.raw`), or only the
//!    results when the input is attached read-only as `/dev/vdc`;
//! 4. the customizations ([`job`]) run at boot once multi-user is reached:
//!    repositories and packages first, then files and commands; the VM powers off;
//! 5. the step record ([`status`]) says whether every step succeeded; then
//!    `results_location` is copied out of the working disk into the target image's body.
//!
//! The VM runs on the guest engine (`imagefactory-guest`) with its timeout, inactivity
//! watchdog, console log and cleanup. Parameters are described in [`params`].
//!
//! Modules, one concept each: [`params`], [`job`], [`status`], [`kernel`],
//! [`debugfs`], [`workdisk`], [`build`], [`error`].

pub mod build;
pub mod debugfs;
pub mod error;
pub mod job;
pub mod kernel;
pub mod params;
pub mod status;
pub mod workdisk;

use imagefactory_plugin_api::prelude::*;

use crate::error::IndirectionError;

/// The target name, the original's.
pub const TARGET: &str = "indirection";

/// The plugin object the host calls.
pub struct Indirection;

fn plugin_error(e: IndirectionError) -> PluginError {
    match e {
        IndirectionError::Cancelled | IndirectionError::Disk(diskimage::DiskError::Cancelled) => {
            PluginError::cancelled()
        }
        other => {
            let mut p = PluginError::new(other.to_string());
            p.chain = other.tail().to_vec();
            p
        }
    }
}

impl CloudPlugin for Indirection {
    /// Does the whole build and answers `false`: nothing else may touch the image.
    fn builder_should_create_target_image(&self, host: &Host, req: TargetHookRequest) -> Result<bool, PluginError> {
        build::run(host, &req).map_err(plugin_error)?;
        Ok(false)
    }
}

/// The plugin's manifest.
pub fn manifest() -> Manifest {
    Manifest::cloud(
        "IndirectionCloud",
        env!("CARGO_PKG_VERSION"),
        "Builds a target image with the tools inside a utility image (live CDs with livemedia-creator, xorriso, ...)",
        &[TARGET],
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(Indirection),
}
