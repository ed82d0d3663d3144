//! The second stage: a Debian base image made into an OpenStack target image, with the
//! in-image cloud changes (cloudkit) and a package the host's target_content.xml names
//! for that target applied by the Debian plugin to a copy of the base (loop-mounted in a
//! private namespace), then converted to qcow2 by the OpenStack plugin.
//!
//! Builds a small Debian 12 first (about a minute).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{template, token};
use diskimage::layout::PARTITION_START;
use testkit::Factory;

fn debugfs(image: &Path, request: &str) -> (String, String) {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(format!("{}?offset={PARTITION_START}", image.display()))
        .output()
        .expect("debugfs (Debian package e2fsprogs; run scripts/setup.sh)");
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn exists(image: &Path, guest_path: &str) -> bool {
    !debugfs(image, &format!("stat {guest_path}")).1.contains("File not found")
}

#[test]
fn a_target_stage_applies_cloud_changes_and_target_packages_to_a_copy() {
    let content = "<template_includes><include target='openstack-kvm'><packages><package name='less'/></packages>\
</include></template_includes>";
    let f = Factory::new(&["libdebian_os.so", "libopenstack_cloud.so"], serde_json::json!({}));
    let tc = f.file("target_content.xml", content);
    let mut conf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&f.config).expect("config")).expect("config JSON");
    conf["target_content"] = tc.to_string_lossy().into_owned().into();
    std::fs::write(&f.config, conf.to_string()).expect("write config");

    let tdl = template("Target Test", "12", "x86_64", "", &format!("<description>target {}</description>", token()));
    let t = f.file("debian12.tdl", &tdl);
    let base = f.run(&["base_image", t.to_str().expect("utf-8")], Duration::from_secs(1800));
    assert!(base.stdout.contains("Image build completed SUCCESSFULLY!"), "{}\n{}", base.stdout, base.stderr);
    let base_id = base.field("UUID:").expect("a UUID");
    let base_body = f.body(&base_id);
    let base_len = std::fs::metadata(&base_body).expect("base body").len();
    assert!(!exists(&base_body, "/usr/bin/less"), "the base image should not have less");

    let target = f.run(&["target_image", "--id", &base_id, "openstack-kvm"], Duration::from_secs(1800));
    let tid = target.field("UUID:").unwrap_or_default();
    assert!(
        target.stdout.contains("Image build completed SUCCESSFULLY!"),
        "{}\n{}\nbuild log:\n{}",
        target.stdout,
        target.stderr,
        f.build_log(&tid)
    );
    let log = f.build_log(&tid);
    assert!(log.contains("Installing 1 packages for the openstack-kvm target"), "{log}");
    assert!(log.contains("Running target command 'remove_net_persist'"), "{log}");

    // The target body is qcow2; read it back as raw to look inside.
    let body = f.body(&tid);
    let info = Command::new("qemu-img").args(["info", "--output=json"]).arg(&body).output().expect("qemu-img");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("qemu-img info JSON");
    assert_eq!(info["format"], "qcow2", "{info}");
    assert_eq!(info["virtual-size"].as_u64(), Some(base_len));
    let raw = f.dir.path().join("target.raw");
    let st = Command::new("qemu-img").args(["convert", "-O", "raw"]).arg(&body).arg(&raw).status().expect("qemu-img");
    assert!(st.success());
    assert_eq!(debugfs(&raw, "cat /etc/sysconfig/cloud-info").0, "CLOUD_TYPE=\"openstack-kvm\"\n");
    assert!(exists(&raw, "/usr/bin/less"), "the target package was not installed");
    assert!(!exists(&raw, "/run/imagefactory"), "staged files leaked into the image");

    // The base is untouched, and nothing is left mounted or in the work area.
    assert!(!exists(&base_body, "/etc/sysconfig/cloud-info"), "the base image was modified");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(f.dir.path().to_str().expect("utf-8")), "a mount was left behind:\n{mounts}");
    let leftovers: Vec<_> = std::fs::read_dir(f.dir.path().join("tmp")).expect("tmp").flatten().collect();
    assert!(leftovers.is_empty(), "left in the work area: {leftovers:?}");
}
