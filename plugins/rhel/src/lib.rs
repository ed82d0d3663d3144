//! RHEL-family OS plugin (`librhel_os.so`): installs RHEL, CentOS (5 to 10), Rocky and
//! AlmaLinux (8 to 10) with anaconda from a generated kickstart in one qemu guest. All
//! the work is in the shared `redhat` crate; this crate names what it builds.

use imagefactory_plugin_api::prelude::*;
use redhat::Family;

/// The plugin object the host calls.
pub struct RhelOs;

impl OsPlugin for RhelOs {
    fn create_base_image(&self, host: &Host, req: BaseImageRequest) -> Result<BaseImageOutcome, PluginError> {
        redhat::create_base_image(host, &req, Family::Rhel)
    }

    fn create_target_image(&self, host: &Host, req: TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
        redhat::create_target_image(host, &req)
    }

    /// The tree's `.treeinfo` and `repomd.xml` and the repositories' (see `redhat::state`).
    fn source_state(&self, _host: &Host, req: SourceStateRequest) -> Result<Option<SourceState>, PluginError> {
        redhat::state::source_state(&req.template).map_err(|e| PluginError::new(e.to_string()))
    }
}

/// Every OS name of the family (Oz's `RHEL-7`, `CentOS-7`, ..., and `Rocky-9`,
/// `AlmaLinux-9`, and the bare names taking `N[.M]` versions), any version: unsupported
/// versions get a one-line error naming what is supported.
pub fn manifest() -> Manifest {
    let names: Vec<String> = redhat::distro::rhel_os_names().into_iter().map(|(n, _, _)| n).collect();
    let targets: Vec<(&str, Option<&str>, Option<&str>)> = names.iter().map(|n| (n.as_str(), None, None)).collect();
    Manifest::os(
        "RHEL",
        env!("CARGO_PKG_VERSION"),
        "RHEL and CentOS 5 to 10, Rocky and AlmaLinux 8 to 10 (x86_64): anaconda from a URL tree or an ISO, kickstart \
         generated from the template, ICICLE",
        &targets,
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    os: || Ok(RhelOs),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_every_os_of_the_family() {
        let m = manifest();
        assert_eq!(m.name, "RHEL");
        let names: Vec<&str> = m.targets.iter().filter_map(|t| t[0].as_deref()).collect();
        for n in
            ["RHEL-5", "RHEL-8", "RHEL-10", "CentOS-7", "Rocky-9", "AlmaLinux-8", "RHEL", "RedHatEnterpriseLinux-6"]
        {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        assert!(m.targets.iter().all(|t| t[1].is_none() && t[2].is_none()), "every version and arch is routed here");
    }
}
