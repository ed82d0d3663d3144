//! The RHEV-M plugin end to end: the real `imagefactory` CLI builds target images with
//! the real qemu-img (MockOS base disks) and pushes them into an export storage domain
//! laid out in a temporary directory; the tests read the layout back (ids, OVF, volume
//! metadata, the disk with qemu-img) and check delete removes the template.
//!
//! Needs `cargo build -p imagefactory -p mock-os-plugin -p rhevm-cloud-plugin` and
//! scripts/setup.sh (qemu-img); anything missing fails loudly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::{Factory, Run};

const MIB: u64 = 1 << 20;
const TARGET: &str = "rhevm";

fn factory() -> Factory {
    Factory::new(&["libmock_os.so", "librhevm_cloud.so"], serde_json::json!({"max_concurrent_local_sessions": 2}))
}

fn run(f: &Factory, args: &[&str]) -> Run {
    f.run(args, Duration::from_secs(300))
}

#[track_caller]
fn ok(r: &Run) -> String {
    assert!(
        r.code == Some(0) && r.stdout.contains("completed SUCCESSFULLY"),
        "the command failed:\n{}\n{}",
        r.stdout,
        r.stderr
    );
    r.field("UUID:").expect("a UUID line")
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

fn mock_base(f: &Factory, mib: u64) -> String {
    let tdl = f.file("mock.tdl", include_str!("../../../conf/examples/mock.tdl"));
    ok(&run(f, &["base_image", "--parameter", "mock_disk_mib", &mib.to_string(), p(&tdl)]))
}

fn target(f: &Factory, base: &str, params: &[(&str, &str)]) -> Run {
    let mut args = vec!["target_image", "--id", base];
    for (k, v) in params {
        args.extend(["--parameter", k, v]);
    }
    args.push(TARGET);
    run(f, &args)
}

fn store_text(f: &Factory) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(f.storage()).expect("store").flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".log") || n.ends_with(".meta") {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

fn credentials(password: &str) -> String {
    format!(
        "<provider_credentials><rhevm_credentials><username>admin@internal</username>\
         <password>{password}</password></rhevm_credentials></provider_credentials>"
    )
}

fn domains(export: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(export)
        .expect("list the export dir")
        .flatten()
        .map(|e| e.path())
        .filter(|d| d.join("dom_md/metadata").is_file())
        .collect()
}

fn meta_map(path: &Path) -> std::collections::BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .expect("the .meta file")
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

#[test]
fn push_lays_out_an_export_domain_and_delete_removes_the_template() {
    let f = factory();
    let base = mock_base(&f, 64);
    let t = target(&f, &base, &[]);
    let tid = ok(&t);
    let body = f.body(&tid);
    let info = diskformat::info(&body).expect("qemu-img info");
    assert_eq!((info.format.as_str(), info.compat.as_deref(), info.virtual_size), ("qcow2", Some("0.10"), 64 * MIB));
    let rec = std::fs::read_to_string(f.storage().join(format!("{tid}.meta"))).expect("meta");
    assert!(rec.contains("remove_net_persist"), "the OS plugin was not given the cloud content: {rec}");

    let export = f.dir.path().join("export");
    std::fs::create_dir(&export).expect("mkdir");
    let provider = f.file(
        "provider.json",
        &serde_json::json!({"api-url": "https://rhevm.invalid/api", "nfs-host": "nfs.invalid", "nfs-path": "/export",
                            "nfs-dir": export, "cluster": "Default"})
        .to_string(),
    );
    let password = format!("S3cr3t-rhevm-{}", testkit::token());
    let creds = f.file("creds.xml", &credentials(&password));
    let push = run(&f, &["provider_image", "--id", &tid, TARGET, p(&provider), p(&creds)]);
    let pid = ok(&push);
    let template = push.field("Image ID on provider:").expect("an id on the provider");

    // The layout an engine expects, with consistent ids.
    let doms = domains(&export);
    assert_eq!(doms.len(), 1, "one export domain");
    let sd = doms[0].file_name().expect("name").to_string_lossy().into_owned();
    let md = std::fs::read_to_string(doms[0].join("dom_md/metadata")).expect("metadata");
    assert!(
        md.contains("CLASS=Backup")
            && md.contains(&format!("SDUUID={sd}"))
            && md.contains("REMOTE_PATH=nfs.invalid:/export")
    );
    let ovf_path = doms[0].join(format!("master/vms/{template}/{template}.ovf"));
    let ovf = rhevm_cloud::ovf::parse(&std::fs::read_to_string(&ovf_path).expect("the OVF")).expect("parse the OVF");
    assert_eq!(ovf.template_id, template);
    assert_eq!(ovf.name, "mock-jeos", "the template is named after the TDL");
    assert_eq!(ovf.files.len(), 1);
    let (group, volume) = ovf.files[0].split_once('/').expect("group/volume");
    assert_eq!(ovf.disks, vec![(volume.to_string(), 1, "COW".to_string())]);
    let vol = doms[0].join("images").join(group).join(volume);
    let vinfo = diskformat::verify(&vol, "qcow2", Some(64 * MIB)).expect("the volume reads back");
    assert_eq!(vinfo.compat.as_deref(), Some("0.10"));
    assert!(
        std::fs::read(&vol).expect("volume") == std::fs::read(&body).expect("body"),
        "the volume differs from the body"
    );
    let meta = meta_map(&doms[0].join("images").join(group).join(format!("{volume}.meta")));
    assert_eq!(meta["FORMAT"], "COW");
    assert_eq!(meta["IMAGE"], group);
    assert_eq!(meta["DOMAIN"], sd);
    assert_eq!(meta["SIZE"], (64 * MIB / 512).to_string());
    let log = f.build_log(&pid);
    assert!(log.contains("is not implemented: import it from the engine"), "no word about the import:\n{log}");
    let figure = log.lines().find(|l| l.contains("copied ") && l.contains("MiB/s")).expect("a throughput line");
    eprintln!("RHEV-M push: {figure}");

    // A second push lands in the same domain.
    let push2 = run(&f, &["provider_image", "--id", &tid, TARGET, p(&provider), p(&creds)]);
    ok(&push2);
    let template2 = push2.field("Image ID on provider:").expect("id");
    assert_ne!(template, template2);
    assert_eq!(domains(&export).len(), 1);

    let delete = run(&f, &["delete", &pid, "--provider", p(&provider), "--credentials", p(&creds), "--target", TARGET]);
    assert_eq!(delete.code, Some(0), "delete failed:\n{}\n{}", delete.stdout, delete.stderr);
    assert!(!ovf_path.exists() && !doms[0].join("images").join(group).exists(), "the template is still there");
    assert!(
        doms[0].join(format!("master/vms/{template2}/{template2}.ovf")).exists(),
        "delete removed another template"
    );

    for r in [&t, &push, &push2, &delete] {
        assert!(!r.stdout.contains(&password) && !r.stderr.contains(&password), "the password is in the CLI output");
    }
    assert!(!store_text(&f).contains(&password), "the password is in the store");
}

#[test]
fn raw_direct_conversion_and_one_line_refusals() {
    let f = factory();
    let base = mock_base(&f, 32);
    let raw = target(&f, &base, &[("cloud_modifications", "false"), ("rhevm_image_format", "raw")]);
    let rid = ok(&raw);
    let log = f.build_log(&rid);
    assert!(!log.contains("MockOS writing the target image body"), "the base was copied:\n{log}");
    let info = diskformat::info(&f.body(&rid)).expect("info");
    assert_eq!((info.format.as_str(), info.virtual_size), ("raw", 32 * MIB));

    let export = f.dir.path().join("export");
    std::fs::create_dir(&export).expect("mkdir");
    let provider = f.file("provider.xml", &format!("<provider><nfs-dir>{}</nfs-dir></provider>", export.display()));
    let creds = f.file("creds.xml", &credentials("pw"));
    let push = run(&f, &["provider_image", "--id", &rid, TARGET, p(&provider), p(&creds)]);
    ok(&push);
    let template = push.field("Image ID on provider:").expect("id");
    let dom = &domains(&export)[0];
    let ovf = rhevm_cloud::ovf::parse(
        &std::fs::read_to_string(dom.join(format!("master/vms/{template}/{template}.ovf"))).expect("ovf"),
    )
    .expect("parse");
    assert_eq!(ovf.disks[0].2, "RAW");
    let (group, volume) = ovf.files[0].split_once('/').expect("href");
    let vol = dom.join("images").join(group).join(volume);
    assert_eq!(std::fs::metadata(&vol).expect("volume").len(), 32 * MIB);
    use std::os::unix::fs::MetadataExt;
    assert!(std::fs::metadata(&vol).expect("volume").blocks() * 512 < 16 * MIB, "the copy did not keep the holes");

    let import = run(
        &f,
        &["provider_image", "--id", &rid, "--parameter", "rhevm_import", "true", TARGET, p(&provider), p(&creds)],
    );
    let msg = import.failure().expect("a failure");
    assert!(msg.contains("importing templates through the RHEV-M API is not implemented"), "{msg}");

    let bad = f.file("bad.json", r#"{"nfs-host": "h"}"#);
    let msg = run(&f, &["provider_image", "--id", &rid, TARGET, p(&bad), p(&creds)]).failure().expect("a failure");
    assert!(msg.contains("nfs-dir is missing"), "{msg}");

    let tdl = f.file("snap.tdl", include_str!("../../../conf/examples/mock.tdl"));
    let snap = run(&f, &["provider_image", "--snapshot", "--template", p(&tdl), TARGET, p(&provider), p(&creds)]);
    assert!(snap.failure().expect("a failure").contains("Snapshot builds are not supported on RHEV-M"));

    let bad_format = target(&f, &base, &[("rhevm_image_format", "vmdk")]);
    assert!(bad_format.failure().expect("a failure").contains("rhevm_image_format must be qcow2 or raw"));
}
