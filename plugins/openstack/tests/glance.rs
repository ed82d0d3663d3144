//! The OpenStack plugin end to end: the real `imagefactory` CLI builds target images with
//! the real qemu-img and pushes them to a real Glance (PyPI glance under gunicorn, sqlite,
//! no Keystone) started on loopback; the tests read the images back from Glance.
//!
//! Needs `cargo build --workspace` first (the CLI and the plugin `.so` files) and
//! scripts/setup.sh (qemu-img, the Glance venv); anything missing fails loudly.

mod support;

use std::fs::File;
use std::sync::atomic::Ordering;

use support::*;

const TARGET: &str = "openstack-kvm";

fn provider_file(f: &Factory, endpoint: &str) -> String {
    let p = f.file("provider.json", &serde_json::json!({ "endpoint": endpoint }).to_string());
    path_str(&p).to_string()
}

/// Asserts `secret` appears in none of the store's logs and metadata nor the CLI output.
#[track_caller]
fn assert_secret_nowhere(f: &Factory, runs: &[&Run], secret: &str) {
    assert!(!f.store_text().contains(secret), "the secret is in the store's .log/.meta files");
    for r in runs {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "the secret is in the CLI output");
    }
}

#[test]
fn push_to_glance_download_back_and_delete() {
    let glance = GlanceServer::start();
    let password = unique_secret("push");
    let token = unique_secret("token");
    let keystone = FakeKeystone::start("factory-user", &password, "factory-project", &token);
    let f = Factory::new();

    let base = f.import_base();
    let target_run = f.target(&base, TARGET, &[]);
    target_run.expect_success();
    let target = target_run.uuid();
    let body = f.body(&target);
    let info = diskformat::info(&body).expect("qemu-img info of the target body");
    assert_eq!(info.format, "qcow2");
    assert_eq!(info.virtual_size, 64 * MIB);
    assert!(!f.log(&target).contains("Copying base image"), "the base image was copied, not converted directly");

    let provider = provider_file(&f, &glance.endpoint);
    let creds =
        f.file("credentials.xml", &keystone_credentials(&keystone.url, "factory-user", &password, "factory-project"));
    let push = f.run(&["provider_image", "--id", &target, TARGET, &provider, path_str(&creds)]);
    push.expect_success();
    let pushed = push.uuid();
    let glance_id = push.provider_id();
    assert_eq!(glance_id.len(), 36, "not a Glance uuid: {glance_id}");
    assert_eq!(keystone.issued.load(Ordering::SeqCst), 1, "the push authenticated with Keystone once");

    let image = glance.image(&glance_id).expect("the image is in Glance");
    assert_eq!(image["status"], "active");
    assert_eq!(image["disk_format"], "qcow2");
    assert_eq!(image["container_format"], "bare");
    assert_eq!(image["visibility"], "private");
    assert_eq!(image["name"], "MockOS_A-0-import", "the name comes from the template");
    let body_len = std::fs::metadata(&body).expect("target body").len();
    assert_eq!(image["size"].as_u64(), Some(body_len));

    let (local_sha, _) = sha512_of(File::open(&body).expect("open the body"));
    let (remote_sha, remote_len) = download_sha512(&glance.endpoint, &glance_id);
    assert_eq!(remote_len, body_len);
    assert_eq!(remote_sha, local_sha, "the image read back from Glance differs from the target body");
    assert_eq!(image["os_hash_value"].as_str(), Some(local_sha.as_str()));

    let log = f.log(&pushed);
    let figure = log.lines().find(|l| l.contains("uploaded ") && l.contains("MiB/s")).expect("a throughput line");
    eprintln!("qcow2 push: {figure}");

    let delete =
        f.run(&["delete", &pushed, "--provider", &provider, "--credentials", path_str(&creds), "--target", TARGET]);
    assert!(delete.status.success(), "delete failed:\n{}\n{}", delete.stdout, delete.stderr);
    assert!(glance.image(&glance_id).is_none(), "the image is still in Glance after delete");
    assert_eq!(keystone.issued.load(Ordering::SeqCst), 2, "the delete authenticated too");
    assert_eq!(keystone.rejected.load(Ordering::SeqCst), 0);

    assert_secret_nowhere(&f, &[&target_run, &push, &delete], &password);
    assert_secret_nowhere(&f, &[&target_run, &push, &delete], &token);
}

#[test]
fn raw_and_compressed_targets() {
    let glance = GlanceServer::start();
    let f = Factory::new();
    let base = f.import_base();

    let plain = f.target(&base, TARGET, &[]);
    plain.expect_success();
    let packed = f.target(&base, "openstack", &[("compress", "true")]);
    packed.expect_success();
    let (plain_len, packed_len) = (
        std::fs::metadata(f.body(&plain.uuid())).expect("body").len(),
        std::fs::metadata(f.body(&packed.uuid())).expect("body").len(),
    );
    assert!(packed_len < plain_len, "compressed qcow2 ({packed_len}) is not smaller than plain ({plain_len})");
    let packed_info = diskformat::verify(&f.body(&packed.uuid()), "qcow2", Some(64 * MIB)).expect("verify");
    assert_eq!(packed_info.virtual_size, 64 * MIB);

    let raw = f.target(&base, TARGET, &[("openstack_image_format", "raw")]);
    raw.expect_success();
    let raw_body = f.body(&raw.uuid());
    let raw_info = diskformat::info(&raw_body).expect("info");
    assert_eq!((raw_info.format.as_str(), raw_info.virtual_size), ("raw", 64 * MIB));

    let password = unique_secret("raw");
    let provider = provider_file(&f, &glance.endpoint);
    let creds = f.file("noauth.xml", &noauth_credentials(&password));
    let push = f.run(&["provider_image", "--id", &raw.uuid(), TARGET, &provider, path_str(&creds)]);
    push.expect_success();
    let id = push.provider_id();
    let image = glance.image(&id).expect("in Glance");
    assert_eq!(image["disk_format"], "raw", "disk_format comes from the real body");
    assert_eq!(image["size"].as_u64(), Some(64 * MIB));
    let (local_sha, _) = sha512_of(File::open(&raw_body).expect("open"));
    assert_eq!(download_sha512(&glance.endpoint, &id).0, local_sha);
    let log = f.log(&push.uuid());
    let figure = log.lines().find(|l| l.contains("uploaded ") && l.contains("MiB/s")).expect("a throughput line");
    eprintln!("raw 64 MiB push: {figure}");
    // Constant memory: the worker never held the 64 MiB image (peak RSS well below it).
    let rss: f64 = figure
        .split("worker peak RSS ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a peak RSS figure");
    assert!(rss < 48.0, "the worker's peak RSS was {rss} MiB while pushing a 64 MiB image");
    assert_secret_nowhere(&f, &[&push], &password);

    let bad = f.target(&base, TARGET, &[("openstack_image_format", "vmdk")]);
    let msg = bad.failure();
    assert!(msg.contains("openstack_image_format must be qcow2 or raw"), "{msg}");
}

#[test]
fn unreachable_glance_fails_naming_the_endpoint() {
    let f = Factory::new();
    let base = f.import_base();
    let target = f.target(&base, TARGET, &[]);
    target.expect_success();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let provider = provider_file(&f, &endpoint);
    let password = unique_secret("unreachable");
    let creds = f.file("noauth.xml", &noauth_credentials(&password));
    let push = f.run(&["provider_image", "--id", &target.uuid(), TARGET, &provider, path_str(&creds)]);
    let msg = push.failure();
    assert!(msg.contains(&format!("cannot reach Glance at {endpoint}")), "{msg}");
    let meta = std::fs::read_to_string(f.storage().join(format!("{}.meta", push.uuid()))).expect("meta");
    let rec: serde_json::Value = serde_json::from_str(&meta).expect("meta JSON");
    assert_eq!(rec["status"], "FAILED");
    assert!(!rec.to_string().contains("\\n"), "the recorded error is not one line: {meta}");
    assert_secret_nowhere(&f, &[&push], &password);
}

#[test]
fn malformed_credentials_fail_in_one_line_without_the_password() {
    let f = Factory::new();
    let base = f.import_base();
    let target = f.target(&base, TARGET, &[]);
    target.expect_success();
    let provider = provider_file(&f, "http://127.0.0.1:9");
    let password = unique_secret("malformed");
    let creds = f.file(
        "broken.xml",
        &format!("<provider_credentials><openstack_credentials><password>{password}&oops</password>"),
    );
    let push = f.run(&["provider_image", "--id", &target.uuid(), TARGET, &provider, path_str(&creds)]);
    let msg = push.failure();
    assert!(msg.contains("OpenStack credentials: not well-formed XML"), "{msg}");
    assert_secret_nowhere(&f, &[&push], &password);

    let missing = f.file(
        "missing.xml",
        &format!("<provider_credentials><openstack_credentials><password>{password}</password></openstack_credentials></provider_credentials>"),
    );
    let push = f.run(&["provider_image", "--id", &target.uuid(), TARGET, &provider, path_str(&missing)]);
    let msg = push.failure();
    assert!(msg.contains("needs <auth_url>, <username>, <tenant>"), "{msg}");
    assert_secret_nowhere(&f, &[&push], &password);

    let bad_provider = f.file("bad-provider.json", r#"{"glance-port": 9292}"#);
    let push = f.run(&["provider_image", "--id", &target.uuid(), TARGET, path_str(&bad_provider), path_str(&missing)]);
    let msg = push.failure();
    assert!(msg.contains("needs glance-host (and glance-port) or endpoint"), "{msg}");
}

#[test]
fn original_provider_shape_and_upload_retry_after_a_cut_connection() {
    let glance = GlanceServer::start();
    // The first PUT through this proxy is cut after 2 MiB: the plugin must try again.
    let proxy = CuttingProxy::start(glance.port, b"PUT /v2/images/", 2 * MIB as usize);
    let proxy_port = proxy.endpoint.rsplit(':').next().expect("port").to_string();
    let f = Factory::new();
    let base = f.import_base();
    let target = f.target(&base, TARGET, &[("openstack_image_format", "raw")]);
    target.expect_success();
    let provider = f.file(
        "original.json",
        &format!(r#"{{"glance-host": "127.0.0.1", "glance-port": {proxy_port}, "os_distro": "mockos"}}"#),
    );
    let creds = f.file("noauth.xml", &noauth_credentials("unused"));
    let push = f.run(&["provider_image", "--id", &target.uuid(), TARGET, path_str(&provider), path_str(&creds)]);
    push.expect_success();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy never cut an upload");
    let log = f.log(&push.uuid());
    let retry =
        log.lines().find(|l| l.contains("upload try 1 of 4 failed")).unwrap_or_else(|| panic!("no retry:\n{log}"));
    eprintln!("retry: {retry}");
    for l in log.lines().filter(|l| l.contains("uploaded ")) {
        eprintln!("{l}");
    }
    let id = push.provider_id();
    let image = glance.image(&id).expect("in Glance");
    assert_eq!(image["status"], "active");
    assert_eq!(image["os_distro"], "mockos", "extra provider keys become image properties");
    let (local_sha, _) = sha512_of(File::open(f.body(&target.uuid())).expect("open"));
    assert_eq!(download_sha512(&glance.endpoint, &id).0, local_sha);
}

#[test]
fn snapshot_builds_are_refused_in_one_line() {
    let f = Factory::new();
    let tdl = f.file(
        "mock.tdl",
        "<template><name>snap</name><os><name>MockOS_A</name><version>1</version><arch>x86_64</arch>\
         <install type='url'><url>http://mirror.invalid/</url></install><rootpw>x</rootpw></os></template>",
    );
    let provider = provider_file(&f, "http://127.0.0.1:9");
    let creds = f.file("noauth.xml", &noauth_credentials("unused"));
    let run =
        f.run(&["provider_image", "--snapshot", "--template", path_str(&tdl), TARGET, &provider, path_str(&creds)]);
    let msg = run.failure();
    assert!(msg.contains("Snapshot builds are not supported on OpenStack"), "{msg}");
}

/// Glance behind a private CA: refused until the provider definition names the CA
/// (`ca_certificate`), then pushed and read back over HTTPS.
#[test]
fn a_private_ca_is_refused_until_the_provider_names_it() {
    let ca = testkit::tls::LocalCa::new();
    let glance = GlanceServer::start_tls(&ca);
    assert!(glance.endpoint.starts_with("https://"), "{}", glance.endpoint);
    let f = Factory::new();
    let base = f.import_base();
    let target = f.target(&base, TARGET, &[("cloud_modifications", "false")]);
    target.expect_success();
    let creds = f.file("noauth.xml", &noauth_credentials("unused"));

    let refused = f.run(&[
        "provider_image",
        "--id",
        &target.uuid(),
        TARGET,
        &provider_file(&f, &glance.endpoint),
        path_str(&creds),
    ]);
    let msg = refused.failure();
    assert!(msg.contains("invalid peer certificate") && msg.contains("ca_certificate"), "{msg}");

    let provider = f.file(
        "provider-ca.json",
        &serde_json::json!({ "endpoint": glance.endpoint, "ca_certificate": path_str(&ca.ca_pem) }).to_string(),
    );
    let push = f.run(&["provider_image", "--id", &target.uuid(), TARGET, path_str(&provider), path_str(&creds)]);
    push.expect_success();
    let glance_id = push.provider_id();
    let image = glance.image(&glance_id).expect("the image is in Glance");
    assert_eq!(image["status"], "active");
    let (local_sha, _) = sha512_of(File::open(f.body(&target.uuid())).expect("open the body"));
    assert_eq!(image["os_hash_value"].as_str(), Some(local_sha.as_str()));
}
