//! Fedora OS plugin (`libfedora_os.so`): installs Fedora 7 to rawhide with anaconda from a
//! generated kickstart in one qemu guest. All the work is in the shared `redhat` crate;
//! this crate names what it builds.

use imagefactory_plugin_api::prelude::*;
use redhat::Family;

/// The plugin object the host calls.
pub struct FedoraOs;

impl OsPlugin for FedoraOs {
    fn create_base_image(&self, host: &Host, req: BaseImageRequest) -> Result<BaseImageOutcome, PluginError> {
        redhat::create_base_image(host, &req, Family::Fedora)
    }

    fn create_target_image(&self, host: &Host, req: TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
        redhat::create_target_image(host, &req)
    }

    /// The tree's `.treeinfo` and `repomd.xml` and the repositories' (see `redhat::state`).
    fn source_state(&self, _host: &Host, req: SourceStateRequest) -> Result<Option<SourceState>, PluginError> {
        redhat::state::source_state(&req.template).map_err(|e| PluginError::new(e.to_string()))
    }
}

/// Any Fedora version is routed here; unsupported ones get a one-line error naming what
/// is supported.
pub fn manifest() -> Manifest {
    Manifest::os(
        "Fedora",
        env!("CARGO_PKG_VERSION"),
        "Fedora 7 to rawhide (x86_64): anaconda from a URL tree or an ISO, kickstart generated from the template, ICICLE",
        &[("Fedora", None, None)],
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    os: || Ok(FedoraOs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_takes_every_fedora() {
        let m = manifest();
        assert_eq!(m.name, "Fedora");
        assert_eq!(m.targets, vec![vec![Some("Fedora".to_string()), None, None]]);
    }
}
