//! The in-image changes the original made for every cloud target, as target content.
//!
//! The original's cloud plugins edited the image with libguestfs: `remove_net_persist`
//! (delete the udev rules that pin a NIC name to the build VM's MAC address, drop
//! `HWADDR` from ifcfg-eth0) and `create_cloud_info` (write `/etc/sysconfig/cloud-info`
//! with `CLOUD_TYPE="<target>"`). Here they travel as [`TargetContent`] from the cloud
//! plugin's `builder_will_create_target_image` to the OS plugin's second stage, which
//! knows how to change its own OS's images; a cloud plugin never opens a file system.
//!
//! The parameter `cloud_modifications` (default true) turns them off; the target stage can
//! then convert straight from the base image, without a copy.

use imagefactory_plugin_api::ops::TargetContent;
use imagefactory_plugin_api::ops::{parameter_flag, ContentCommand, ContentEncoding, ContentFile, Parameters};

/// The file the original wrote for every cloud.
pub const CLOUD_INFO_PATH: &str = "/etc/sysconfig/cloud-info";

/// The shell command that removes persistent network naming (works on images without
/// these files: it changes nothing then).
pub const REMOVE_NET_PERSIST: &str = "rm -f /etc/udev/rules.d/70-persistent-net.rules; \
for f in /etc/sysconfig/network-scripts/ifcfg-eth0 /etc/sysconfig/network/ifcfg-eth0; do \
if [ -f \"$f\" ]; then sed -i '/^HWADDR=/d' \"$f\"; fi; done; true";

/// Whether the common cloud changes are wanted (parameter `cloud_modifications`, default
/// true). A value that is not a boolean is an error naming it.
pub fn cloud_modifications_wanted(parameters: &Parameters) -> Result<bool, String> {
    parameter_flag(parameters, "cloud_modifications", true)
}

/// The common changes for `target`, or nothing when `cloud_modifications` is false.
pub fn cloud_content(target: &str, parameters: &Parameters) -> Result<TargetContent, String> {
    if !cloud_modifications_wanted(parameters)? {
        return Ok(TargetContent::default());
    }
    Ok(TargetContent {
        files: vec![ContentFile {
            name: CLOUD_INFO_PATH.to_string(),
            encoding: ContentEncoding::Raw,
            file: format!("CLOUD_TYPE=\"{target}\"\n"),
        }],
        commands: vec![ContentCommand {
            name: "remove_net_persist".to_string(),
            encoding: ContentEncoding::Raw,
            command: REMOVE_NET_PERSIST.to_string(),
        }],
        packages: Vec::new(),
    })
}

/// `ours` followed by what of `other` it lacks (files by name, commands by name,
/// packages by name): the content a cloud hook returns together with the host's.
pub fn merged(mut ours: TargetContent, other: &TargetContent) -> TargetContent {
    for f in &other.files {
        if !ours.files.iter().any(|g| g.name == f.name) {
            ours.files.push(f.clone());
        }
    }
    for c in &other.commands {
        if !ours.commands.iter().any(|d| d.name == c.name) {
            ours.commands.push(c.clone());
        }
    }
    for p in &other.packages {
        if !ours.packages.contains(p) {
            ours.packages.push(p.clone());
        }
    }
    ours
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: serde_json::Value) -> Parameters {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn writes_cloud_info_and_removes_net_persist() {
        let c = cloud_content("ec2", &Parameters::new()).unwrap();
        assert_eq!(c.files[0].name, CLOUD_INFO_PATH);
        assert_eq!(c.files[0].file, "CLOUD_TYPE=\"ec2\"\n");
        assert!(c.commands[0].command.contains("70-persistent-net.rules"));
    }

    #[test]
    fn can_be_turned_off_and_rejects_junk() {
        assert!(cloud_content("ec2", &params(json!({"cloud_modifications": "no"}))).unwrap().is_empty());
        let e = cloud_content("ec2", &params(json!({"cloud_modifications": "maybe"}))).unwrap_err();
        assert_eq!(e, "cloud_modifications must be true or false, not \"maybe\"");
    }

    #[test]
    fn merge_keeps_ours_first_and_adds_the_rest_once() {
        let ours = cloud_content("vsphere", &Parameters::new()).unwrap();
        let host = TargetContent { packages: vec!["open-vm-tools".into()], ..Default::default() };
        let m = merged(ours.clone(), &host);
        assert_eq!(m.packages, vec!["open-vm-tools".to_string()]);
        assert_eq!(merged(m.clone(), &ours), m);
    }
}
