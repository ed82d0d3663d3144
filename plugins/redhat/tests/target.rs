//! The second stage of a Fedora image: a fixture Fedora install made into an OpenStack
//! target image (raw, so the result can be read with debugfs). The common cloud changes
//! travel from the OpenStack plugin to the Fedora plugin, which applies them to a copy
//! of the base in its loop-mounted root; the base stays as it was.
//!
//! Needs `cargo build -p imagefactory -p fedora-os-plugin -p openstack-cloud-plugin`.

mod fixture;

use std::time::Duration;

use serde_json::json;
use testkit::Factory;

#[test]
fn a_fedora_target_image_gets_the_cloud_changes_on_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_tree(dir.path(), true);
    let served = fixture::serve(dir.path());
    // A persistent-net rule the cloud changes must remove, as an old Fedora kept one.
    let body = "<files><file name='/etc/udev/rules.d/70-persistent-net.rules'>SUBSYSTEM==\"net\" NAME=\"eth0\"</file>\
<file name='/etc/sysconfig/network-scripts/ifcfg-eth0'>DEVICE=eth0\nHWADDR=52:54:00:12:34:56\nBOOTPROTO=dhcp</file></files>";
    let tdl = fixture::template(
        "Fedora",
        "40",
        &format!("<install type='url'><url>{}</url></install>", served.url),
        "<rootpw>target-test</rootpw>",
        body,
    );
    let f = Factory::new(&["libfedora_os.so", "libopenstack_cloud.so"], json!({"inactivity_timeout": 120}));
    let t = f.file("t.tdl", &tdl);
    let base = f.run(&["base_image", t.to_str().expect("utf-8")], Duration::from_secs(600));
    let base_id = base.field("UUID:").unwrap_or_default();
    assert!(base.stdout.contains("SUCCESSFULLY"), "{}\n{}", base.stdout, f.build_log(&base_id));
    assert!(fixture::read_in_disk(&f.body(&base_id), "/etc/udev/rules.d/70-persistent-net.rules").is_some());

    let target = f.run(
        &["target_image", "--id", &base_id, "--parameter", "openstack_image_format", "raw", "openstack-kvm"],
        Duration::from_secs(600),
    );
    let tid = target.field("UUID:").unwrap_or_default();
    assert!(target.stdout.contains("SUCCESSFULLY"), "{}\n{}\n{}", target.stdout, target.stderr, f.build_log(&tid));
    let log = f.build_log(&tid);
    assert!(log.contains("Running target command 'remove_net_persist'"), "{log}");

    let body = f.body(&tid);
    assert_eq!(
        fixture::read_in_disk(&body, "/etc/sysconfig/cloud-info").as_deref(),
        Some("CLOUD_TYPE=\"openstack-kvm\"\n")
    );
    assert!(fixture::read_in_disk(&body, "/etc/udev/rules.d/70-persistent-net.rules").is_none());
    let ifcfg = fixture::read_in_disk(&body, "/etc/sysconfig/network-scripts/ifcfg-eth0").expect("ifcfg-eth0");
    assert!(!ifcfg.contains("HWADDR") && ifcfg.contains("BOOTPROTO=dhcp"), "{ifcfg}");
    // The base is untouched; nothing is left mounted or in the work area.
    assert!(fixture::read_in_disk(&f.body(&base_id), "/etc/sysconfig/cloud-info").is_none());
    assert!(fixture::read_in_disk(&f.body(&base_id), "/etc/udev/rules.d/70-persistent-net.rules").is_some());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(f.dir.path().to_str().expect("utf-8")), "a mount was left behind");
    let left: Vec<_> = std::fs::read_dir(f.dir.path().join("tmp")).expect("tmp").flatten().collect();
    assert!(left.is_empty(), "left in the work area: {left:?}");
}
