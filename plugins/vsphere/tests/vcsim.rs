//! The vSphere plugin end to end: the real `imagefactory` CLI builds target images with
//! the real qemu-img (MockOS base disks) and pushes them to govmomi's vSphere simulator
//! on loopback; the tests then look for the VM through the vSphere API and for its disk
//! on the datastore, and for neither after delete.
//!
//! Needs `cargo build -p imagefactory -p mock-os-plugin -p vsphere-cloud-plugin` and
//! scripts/setup.sh (qemu-img, the simulator); anything missing fails loudly.

mod support;

use std::sync::atomic::Ordering;

use support::*;

fn meta(f: &testkit::Factory, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(f.storage().join(format!("{id}.meta"))).expect("the image's .meta");
    serde_json::from_str(&text).expect("meta JSON")
}

#[test]
fn push_find_mark_as_template_and_delete() {
    let password = unique_secret("push");
    let sim = Vcsim::start(&password);
    let f = factory();
    let base = mock_base(&f, 64);

    // Default: the common cloud content goes to the OS plugin, then the copy is converted.
    let t = target(&f, &base, &[]);
    expect_success(&t);
    let tid = uuid(&t);
    let body = f.body(&tid);
    let info = diskformat::info(&body).expect("qemu-img info of the target body");
    assert_eq!((info.format.as_str(), info.subformat.as_deref()), ("vmdk", Some("streamOptimized")));
    assert_eq!(info.virtual_size, 64 * MIB);
    let rec = meta(&f, &tid).to_string();
    assert!(rec.contains("remove_net_persist"), "the OS plugin was not given the cloud content: {rec}");

    let provider = f.file("provider.json", &sim.provider_json(None));
    let creds = f.file("credentials.xml", &credentials(USER, &password));
    let push = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&provider), path_str(&creds)]);
    expect_success(&push);
    let pid = uuid(&push);
    let vm_name = format!("factory-image-{pid}");
    assert_eq!(push.field("Image ID on provider:").as_deref(), Some(vm_name.as_str()));

    // The VM is there, with the uploaded disk, and the disk holds the target body.
    let vm = sim.find_vm(&vm_name).expect("the VM is in vSphere after push");
    let vim = sim.api();
    let devices = vim.property(&vm, "config.hardware.device").expect("devices").expect("the VM has devices");
    let disk_file = format!("[{DATASTORE}] {vm_name}/{vm_name}.vmdk");
    let files: Vec<String> =
        devices.descendants().into_iter().filter(|e| e.name == "fileName").map(|e| e.text.clone()).collect();
    assert!(files.contains(&disk_file), "the VM's disks are {files:?}, not {disk_file}");
    let template = vim.property(&vm, "config.template").expect("config.template").expect("set");
    assert_eq!(template.text, "false");
    let _ = vim.logout();
    let stored = sim.datastore_file(&format!("{vm_name}/{vm_name}.vmdk")).expect("the disk is on the datastore");
    let local = std::fs::read(&body).expect("the target body");
    assert_eq!(stored.len(), local.len());
    assert_eq!(sha256(&stored), sha256(&local), "the datastore's disk differs from the target body");
    let log = f.build_log(&pid);
    let figure = log.lines().find(|l| l.contains("uploaded ") && l.contains("MiB/s")).expect("a throughput line");
    eprintln!("vSphere push: {figure}");

    // A second push of the same target, marked as a template.
    let push2 = run(
        &f,
        &[
            "provider_image",
            "--id",
            &tid,
            "--parameter",
            "vsphere_template",
            "true",
            TARGET,
            path_str(&provider),
            path_str(&creds),
        ],
    );
    expect_success(&push2);
    let vm2_name = format!("factory-image-{}", uuid(&push2));
    let vm2 = sim.find_vm(&vm2_name).expect("the template is in vSphere");
    let vim = sim.api();
    let template = vim.property(&vm2, "config.template").expect("config.template").expect("set");
    assert_eq!(template.text, "true", "vsphere_template did not mark the VM as a template");
    let _ = vim.logout();

    // Delete: the VM and its datastore folder are gone.
    let delete = run(
        &f,
        &["delete", &pid, "--provider", path_str(&provider), "--credentials", path_str(&creds), "--target", TARGET],
    );
    assert_eq!(delete.code, Some(0), "delete failed:\n{}\n{}", delete.stdout, delete.stderr);
    assert!(sim.find_vm(&vm_name).is_none(), "the VM is still in vSphere after delete");
    assert!(sim.datastore_file(&format!("{vm_name}/{vm_name}.vmdk")).is_none(), "the disk is still on the datastore");
    assert!(sim.find_vm(&vm2_name).is_some(), "deleting one image removed another");

    assert_secret_nowhere(&f, &[&t, &push, &push2, &delete], &password);
}

#[test]
fn direct_conversion_ova_and_standard_vmdk() {
    let password = unique_secret("ova");
    let sim = Vcsim::start(&password);
    let f = factory();
    let base = mock_base(&f, 48);

    // No content to apply: the base image is converted directly, never copied.
    let plain = target(&f, &base, &[("cloud_modifications", "false"), ("vsphere_vmdk_format", "standard")]);
    expect_success(&plain);
    let log = f.build_log(&uuid(&plain));
    assert!(!log.contains("MockOS writing the target image body"), "the OS plugin copied the base:\n{log}");
    let info = diskformat::info(&f.body(&uuid(&plain))).expect("info");
    assert_eq!((info.format.as_str(), info.subformat.as_deref()), ("vmdk", Some("monolithicSparse")));

    let ova = target(&f, &base, &[("vsphere_ova", "true"), ("ovf_name", "factory vm"), ("ovf_memory_mb", "1024")]);
    expect_success(&ova);
    let oid = uuid(&ova);
    let body = f.body(&oid);
    let entries = vsphere_cloud::ova::entries(&body).expect("the OVA is a tar");
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].name, "factory_vm.ovf", "the descriptor comes first");
    assert_eq!(entries[1].name, "disk1.vmdk");
    let bytes = std::fs::read(&body).expect("read the OVA");
    let ovf =
        String::from_utf8(bytes[entries[0].offset as usize..][..entries[0].size as usize].to_vec()).expect("utf-8");
    let doc = roxmltree::Document::parse(&ovf).expect("the OVF parses");
    let disk = doc.descendants().find(|n| n.has_tag_name("Disk")).expect("a Disk");
    let attr = |n: roxmltree::Node, a: &str| n.attributes().find(|x| x.name() == a).map(|x| x.value().to_string());
    assert_eq!(attr(disk, "capacity").as_deref(), Some((48 * MIB).to_string().as_str()));
    let file = doc.descendants().find(|n| n.has_tag_name("File")).expect("a File");
    assert_eq!(attr(file, "size"), Some(entries[1].size.to_string()));
    assert!(ovf.contains("<rasd:VirtualQuantity>1024</rasd:VirtualQuantity>"));
    let disk_bytes = &bytes[entries[1].offset as usize..][..entries[1].size as usize];
    let extracted = in_dir(&f, "extracted.vmdk");
    std::fs::write(&extracted, disk_bytes).expect("write");
    let dinfo = diskformat::info(&extracted).expect("the OVA's disk reads back");
    assert_eq!((dinfo.subformat.as_deref(), dinfo.virtual_size), (Some("streamOptimized"), 48 * MIB));

    // The OVA pushes too: the disk inside it is what lands on the datastore.
    let provider = f.file("provider.json", &sim.provider_json(None));
    let creds = f.file("credentials.xml", &credentials(USER, &password));
    let push = run(&f, &["provider_image", "--id", &oid, TARGET, path_str(&provider), path_str(&creds)]);
    expect_success(&push);
    let vm_name = format!("factory-image-{}", uuid(&push));
    assert!(sim.find_vm(&vm_name).is_some());
    let stored = sim.datastore_file(&format!("{vm_name}/{vm_name}.vmdk")).expect("on the datastore");
    assert_eq!(sha256(&stored), sha256(disk_bytes));
    assert_secret_nowhere(&f, &[&push], &password);

    let bad = target(&f, &base, &[("vsphere_vmdk_format", "flat")]);
    let msg = bad.failure().expect("a failure line");
    assert!(msg.contains("vsphere_vmdk_format must be streaming or standard"), "{msg}");
}

#[test]
fn wrong_password_bad_provider_and_snapshot_fail_in_one_line() {
    let password = unique_secret("right");
    let sim = Vcsim::start(&password);
    let f = factory();
    let base = mock_base(&f, 16);
    let t = target(&f, &base, &[("cloud_modifications", "false")]);
    expect_success(&t);
    let tid = uuid(&t);
    let provider = f.file("provider.json", &sim.provider_json(None));

    let wrong = unique_secret("wrong");
    let creds = f.file("wrong.xml", &credentials(USER, &wrong));
    let push = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&provider), path_str(&creds)]);
    let msg = push.failure().expect("a failure line");
    assert!(msg.contains("InvalidLogin"), "{msg}");
    assert_secret_nowhere(&f, &[&push], &wrong);

    let creds = f.file("creds.xml", &credentials(USER, &password));
    let nods = f.file("nods.json", &sim.provider_json(None).replace(DATASTORE, "NoSuchDS"));
    let push = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&nods), path_str(&creds)]);
    let msg = push.failure().expect("a failure line");
    assert!(msg.contains("no datastore named 'NoSuchDS' (there are: LocalDS_0)"), "{msg}");

    let unreachable =
        f.file("gone.json", &sim.provider_json(Some(&format!("http://127.0.0.1:{}", testkit::free_port()))));
    let push = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&unreachable), path_str(&creds)]);
    let msg = push.failure().expect("a failure line");
    assert!(msg.contains("cannot reach vSphere at http://127.0.0.1:"), "{msg}");
    assert_secret_nowhere(&f, &[&push], &password);

    let tdl = f.file("snap.tdl", include_str!("../../../conf/examples/mock.tdl"));
    let snap = run(
        &f,
        &["provider_image", "--snapshot", "--template", path_str(&tdl), TARGET, path_str(&provider), path_str(&creds)],
    );
    let msg = snap.failure().expect("a failure line");
    assert!(msg.contains("Snapshot builds are not supported on vSphere"), "{msg}");
}

#[test]
fn a_cut_upload_is_retried() {
    let password = unique_secret("retry");
    let sim = Vcsim::start(&password);
    let sim_port: u16 = sim.endpoint.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the simulator's port");
    let proxy = testkit::proxy::CuttingProxy::start(sim_port, b"PUT /folder/", 2 * MIB as usize);
    let f = factory();
    let base = mock_base(&f, 64);
    // A standard VMDK keeps the mock disk's random data uncompressed: several MiB to send.
    let t = target(&f, &base, &[("cloud_modifications", "false"), ("vsphere_vmdk_format", "standard")]);
    expect_success(&t);
    let tid = uuid(&t);
    let provider = f.file("provider.json", &sim.provider_json(Some(&proxy.endpoint)));
    let creds = f.file("creds.xml", &credentials(USER, &password));
    let push = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&provider), path_str(&creds)]);
    expect_success(&push);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy never cut an upload");
    let pid = uuid(&push);
    let log = f.build_log(&pid);
    let retry =
        log.lines().find(|l| l.contains("upload try 1 of 4 failed")).unwrap_or_else(|| panic!("no retry:\n{log}"));
    eprintln!("retry: {retry}");
    let vm_name = format!("factory-image-{pid}");
    let stored = sim.datastore_file(&format!("{vm_name}/{vm_name}.vmdk")).expect("on the datastore");
    assert_eq!(sha256(&stored), sha256(&std::fs::read(f.body(&tid)).expect("body")));
    assert_secret_nowhere(&f, &[&push], &password);
}

/// A vCenter whose certificate a private CA signed: refused until the provider definition
/// names the CA (`ca_certificate`), accepted with it, and with `tls_verify` false.
#[test]
fn a_private_ca_is_refused_until_the_provider_names_it() {
    let password = unique_secret("tls");
    let ca = testkit::tls::LocalCa::new();
    let sim = Vcsim::start_tls(&password, &ca);
    assert!(sim.endpoint.starts_with("https://"), "{}", sim.endpoint);
    let f = factory();
    let base = mock_base(&f, 16);
    let t = target(&f, &base, &[("cloud_modifications", "false")]);
    expect_success(&t);
    let tid = uuid(&t);
    let creds = f.file("creds.xml", &credentials(USER, &password));
    let with_ca: serde_json::Value = serde_json::from_str(&sim.provider_json(None)).expect("provider JSON");

    let no_ca = f.file("no-ca.json", &no_ca_value(&with_ca).to_string());
    let refused = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&no_ca), path_str(&creds)]);
    let msg = refused.failure().expect("a failure line");
    assert!(msg.contains("invalid peer certificate") && msg.contains("ca_certificate"), "{msg}");

    let trusted = f.file("ca.json", &with_ca.to_string());
    let push = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&trusted), path_str(&creds)]);
    expect_success(&push);
    let pid = uuid(&push);
    assert!(sim.find_vm(&format!("factory-image-{pid}")).is_some(), "the VM is not in vSphere after push");

    let mut unchecked = no_ca_value(&with_ca);
    unchecked["tls_verify"] = false.into();
    let unchecked = f.file("unchecked.json", &unchecked.to_string());
    let push2 = run(&f, &["provider_image", "--id", &tid, TARGET, path_str(&unchecked), path_str(&creds)]);
    expect_success(&push2);
    let log = f.build_log(&uuid(&push2));
    assert!(log.contains("is not checked (tls_verify false)"), "no warning in the log:\n{log}");

    assert_secret_nowhere(&f, &[&t, &refused, &push, &push2], &password);
}

fn no_ca_value(provider: &serde_json::Value) -> serde_json::Value {
    let mut p = provider.clone();
    p.as_object_mut().expect("an object").remove("ca_certificate");
    p
}
