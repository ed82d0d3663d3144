//! The EC2 plugin end to end: the real `imagefactory` CLI builds ec2 target images from
//! MockOS base disks with the real qemu-img and pushes them to a real moto server (PyPI
//! moto[server], started on a loopback port); the tests look the AMI and its snapshot up
//! through the AWS API (the SDK, against moto) and check delete removes both.
//!
//! moto keeps only what it keeps: RegisterImage stores the name and description (not the
//! block device mapping), so the tests find the AMI by id and name and the snapshot by
//! its tag and its blocks, never by the AMI's mapping. ImportSnapshot is not implemented
//! by moto: the `s3` test goes as far as the multipart upload and the clear failure.
//!
//! Needs `cargo build -p imagefactory -p mock-os-plugin -p ec2-cloud-plugin` and
//! scripts/setup.sh (qemu-img, the moto venv); anything missing fails loudly.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ec2_cloud::aws::Aws;
use ec2_cloud::blocks::EBS_BLOCK_SIZE;
use testkit::moto::Moto;
use testkit::{free_port, token, Factory, Run};

const MIB: u64 = 1 << 20;
const DEADLINE: Duration = Duration::from_secs(300);
const ACCESS_KEY: &str = "AKIDIMAGEFACTORYTEST";

// -------------------------------------------------------------------------------------
// moto

/// SDK clients against a moto (the plugin's own client construction).
fn aws(moto: &Moto) -> Aws {
    let p = ec2_cloud::provider::parse(&provider_json(&moto.endpoint, None)).expect("provider");
    let c = ec2_cloud::credentials::parse(&credentials("test-secret-for-the-test-client")).expect("credentials");
    Aws::connect(&p, &c).expect("clients")
}

fn provider_json(endpoint: &str, bucket: Option<&str>) -> String {
    let mut v = serde_json::json!({"name": "ec2-us-east-1", "endpoint": endpoint});
    if let Some(b) = bucket {
        v["s3_bucket"] = b.into();
    }
    v.to_string()
}

fn credentials(secret: &str) -> String {
    format!(
        "<provider_credentials>\n  <ec2_credentials>\n    <account_number>123456789012</account_number>\n    \
         <access_key>{ACCESS_KEY}</access_key>\n    <secret_access_key>{secret}</secret_access_key>\n  \
         </ec2_credentials>\n</provider_credentials>\n"
    )
}

fn secret(tag: &str) -> String {
    format!("Secr3t/{tag}/{}", token())
}

// -------------------------------------------------------------------------------------
// The CLI

fn factory() -> Factory {
    Factory::new(&["libmock_os.so", "libec2_cloud.so"], serde_json::json!({"max_concurrent_local_sessions": 2}))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

#[track_caller]
fn ok(run: &Run) -> String {
    assert!(
        run.code == Some(0) && run.stdout.contains("completed SUCCESSFULLY"),
        "the command failed:\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    run.field("UUID:").expect("a UUID line")
}

#[track_caller]
fn failure(run: &Run) -> String {
    assert_ne!(run.code, Some(0), "expected a failure:\n{}", run.stdout);
    run.failure().unwrap_or_else(|| panic!("no FAILED line:\n{}\n{}", run.stdout, run.stderr))
}

/// A MockOS base image: a sparse 64 MiB raw disk with a header block and 1 MiB of data
/// every 16 MiB (9 EBS blocks with data).
fn base(f: &Factory) -> String {
    let tdl = f.file(
        "mock.tdl",
        "<template><name>ec2-mock</name><description>EC2 plugin test image</description><os><name>MockOS_A</name>\
         <version>1</version><arch>x86_64</arch><install type='url'><url>http://mirror.invalid/</url></install>\
         <rootpw>x</rootpw></os></template>",
    );
    ok(&f.run(&["base_image", "--parameter", "mock_disk_mib", "64", path_str(&tdl)], DEADLINE))
}

fn target(f: &Factory, base: &str, params: &[(&str, &str)]) -> Run {
    let mut args = vec!["target_image", "--id", base];
    for (k, v) in params {
        args.extend(["--parameter", k, v]);
    }
    args.push("ec2");
    f.run(&args, DEADLINE)
}

fn meta(f: &Factory, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(f.storage().join(format!("{id}.meta"))).expect("the image's .meta");
    serde_json::from_str(&text).expect("meta JSON")
}

/// Every `.log` and `.meta` of the store, concatenated.
fn store_text(f: &Factory) -> String {
    let mut all = String::new();
    for e in std::fs::read_dir(f.storage()).expect("list the store").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") || name.ends_with(".meta") {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
    }
    all
}

#[track_caller]
fn assert_secret_nowhere(f: &Factory, runs: &[&Run], secret: &str) {
    assert!(!store_text(f).contains(secret), "the secret key is in the store's .log/.meta files");
    for r in runs {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret), "the secret key is in the CLI output");
    }
}

/// The indexes of the blocks of `body` that hold data.
fn data_blocks(body: &Path) -> Vec<u64> {
    let mut r = ec2_cloud::blocks::DataBlocks::open(body, EBS_BLOCK_SIZE).expect("open the body");
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(i) = r.next_block(&mut buf).expect("read") {
        out.push(i);
    }
    out
}

// -------------------------------------------------------------------------------------
// SDK look-ups against moto

fn describe_ami(aws: &Aws, ami: &str) -> Option<aws_sdk_ec2::types::Image> {
    match aws.runtime.block_on(aws.ec2.describe_images().image_ids(ami).send()) {
        Ok(out) => out.images().iter().find(|i| i.image_id() == Some(ami)).cloned(),
        Err(e) => {
            let msg = format!("{:?}", e);
            assert!(msg.contains("InvalidAMIID"), "DescribeImages {ami}: {msg}");
            None
        }
    }
}

fn snapshot_exists(aws: &Aws, snap: &str) -> bool {
    match aws.runtime.block_on(aws.ec2.describe_snapshots().snapshot_ids(snap).send()) {
        Ok(out) => out.snapshots().iter().any(|s| s.snapshot_id() == Some(snap)),
        Err(e) => {
            let msg = format!("{:?}", e);
            assert!(msg.contains("InvalidSnapshot"), "DescribeSnapshots {snap}: {msg}");
            false
        }
    }
}

/// The block indexes moto holds for a snapshot (EBS ListSnapshotBlocks).
fn listed_blocks(aws: &Aws, snap: &str) -> Vec<u64> {
    let out =
        aws.runtime.block_on(aws.ebs.list_snapshot_blocks().snapshot_id(snap).send()).expect("ListSnapshotBlocks");
    let mut v: Vec<u64> = out.blocks().iter().filter_map(|b| b.block_index()).map(|i| i as u64).collect();
    v.sort_unstable();
    v
}

/// One block's bytes as moto stored them (EBS GetSnapshotBlock).
fn stored_block(aws: &Aws, snap: &str, index: u64) -> Vec<u8> {
    let list =
        aws.runtime.block_on(aws.ebs.list_snapshot_blocks().snapshot_id(snap).send()).expect("ListSnapshotBlocks");
    let token = list
        .blocks()
        .iter()
        .find(|b| b.block_index() == Some(index as i32))
        .and_then(|b| b.block_token())
        .expect("a block token")
        .to_string();
    let out = aws
        .runtime
        .block_on(aws.ebs.get_snapshot_block().snapshot_id(snap).block_index(index as i32).block_token(token).send())
        .expect("GetSnapshotBlock");
    aws.runtime.block_on(out.block_data.collect()).expect("read the block").into_bytes().to_vec()
}

fn file_block(body: &Path, index: u64) -> Vec<u8> {
    let f = std::fs::File::open(body).expect("open");
    let mut buf = vec![0u8; EBS_BLOCK_SIZE];
    let n = f.read_at(&mut buf, index * EBS_BLOCK_SIZE as u64).expect("read");
    buf[n..].fill(0);
    buf
}

fn image_id_on_provider(run: &Run) -> String {
    run.field("Image ID on provider:").expect("an 'Image ID on provider' line")
}

// -------------------------------------------------------------------------------------
// Tests

#[test]
fn push_find_the_ami_and_snapshot_then_delete_both() {
    let moto = Moto::start();
    let aws = aws(&moto);
    let f = factory();
    let base = base(&f);

    // Default: the common cloud changes go to the OS plugin, which copies and applies them.
    let target_run = target(&f, &base, &[]);
    let tid = ok(&target_run);
    let rec = meta(&f, &tid);
    let applied = rec.pointer("/properties/mock_applied_files").cloned().unwrap_or_default();
    assert_eq!(applied, serde_json::json!(["/etc/sysconfig/cloud-info"]), "{rec}");
    let commands = rec.pointer("/properties/mock_applied_commands").cloned().unwrap_or_default();
    assert_eq!(commands, serde_json::json!(["remove_net_persist"]));
    let body = f.body(&tid);
    let info = diskformat::info(&body).expect("qemu-img info");
    assert_eq!((info.format.as_str(), info.virtual_size), ("raw", 64 * MIB));
    let blocks = data_blocks(&body);
    assert_eq!(blocks, vec![0, 2, 3, 34, 35, 66, 67, 98, 99], "the mock disk's data blocks");

    let key = secret("push");
    let provider = f.file("provider.json", &provider_json(&moto.endpoint, None));
    let creds = f.file("credentials.xml", &credentials(&key));
    let push = f.run(&["provider_image", "--id", &tid, "ec2", path_str(&provider), path_str(&creds)], DEADLINE);
    let pid = ok(&push);
    let ami = image_id_on_provider(&push);
    assert!(ami.starts_with("ami-"), "not an AMI id: {ami}");
    let prec = meta(&f, &pid);
    assert_eq!(prec["provider_account_identifier"], ACCESS_KEY, "{prec}");
    let log = f.build_log(&pid);
    let figure = log.lines().find(|l| l.contains("uploaded ") && l.contains("MiB/s")).expect("a throughput line");
    eprintln!("ebs push of a 64 MiB image: {figure}");
    assert!(figure.contains("9 of 128 blocks"), "only the data blocks are sent: {figure}");

    // The AMI, through the AWS API: moto keeps its name and description.
    let image = describe_ami(&aws, &ami).expect("the AMI is registered");
    assert_eq!(image.name(), Some(format!("ImageFactory created AMI - {pid}").as_str()));
    assert_eq!(image.description(), Some(format!("EC2 plugin test image (imagefactory target image {tid})").as_str()));
    // The snapshot, through its tag, holding exactly the image's data blocks.
    let snaps = ec2_cloud::ami::tagged_snapshots(&aws, &pid).expect("DescribeSnapshots");
    assert_eq!(snaps.len(), 1, "one snapshot made for {pid}: {snaps:?}");
    let snap = &snaps[0];
    assert_eq!(prec.pointer("/properties/ec2_snapshot_id").and_then(|v| v.as_str()), Some(snap.as_str()));
    assert_eq!(listed_blocks(&aws, snap), blocks);
    for i in [0, 35, 99] {
        assert!(stored_block(&aws, snap, i) == file_block(&body, i), "block {i} differs from the image");
    }

    let delete = f.run(
        &["delete", &pid, "--provider", path_str(&provider), "--credentials", path_str(&creds), "--target", "ec2"],
        DEADLINE,
    );
    assert_eq!(delete.code, Some(0), "delete failed:\n{}\n{}", delete.stdout, delete.stderr);
    assert!(describe_ami(&aws, &ami).is_none(), "{ami} is still registered after delete");
    assert!(!snapshot_exists(&aws, snap), "{snap} still exists after delete");
    assert!(ec2_cloud::ami::tagged_snapshots(&aws, &pid).expect("DescribeSnapshots").is_empty());

    assert_secret_nowhere(&f, &[&target_run, &push, &delete], &key);
}

#[test]
fn without_cloud_changes_the_base_is_converted_directly() {
    let f = factory();
    let base = base(&f);
    let run = target(&f, &base, &[("cloud_modifications", "false")]);
    let tid = ok(&run);
    let rec = meta(&f, &tid);
    assert!(rec.pointer("/properties/mock_applied_files").is_none(), "the OS plugin's copy ran: {rec}");
    let log = f.build_log(&tid);
    assert!(log.contains("Converting the raw image to raw for ec2"), "{log}");
    let info = diskformat::verify(&f.body(&tid), "raw", Some(64 * MIB)).expect("verify");
    assert_eq!(info.format, "raw");
    assert_eq!(data_blocks(&f.body(&tid)), data_blocks(&f.body(&base)), "the converted body lost data");

    let bad = target(&f, &base, &[("ec2_flatten", "true")]);
    assert!(failure(&bad).contains("ec2_flatten is not supported"), "{}", bad.stdout);
}

#[test]
fn a_cut_block_upload_is_tried_again() {
    let moto = Moto::start();
    let aws = aws(&moto);
    let proxy = testkit::proxy::CuttingProxy::start(moto.port, b"PUT /snapshots/", 100 * 1024);
    let f = factory();
    let base = base(&f);
    let tid = ok(&target(&f, &base, &[("cloud_modifications", "no")]));
    let provider = f.file("provider.json", &provider_json(&proxy.endpoint, None));
    let creds = f.file("credentials.xml", &credentials(&secret("retry")));
    let push = f.run(
        &[
            "provider_image",
            "--id",
            &tid,
            "--parameter",
            "ec2_upload_concurrency",
            "2",
            "ec2",
            path_str(&provider),
            path_str(&creds),
        ],
        DEADLINE,
    );
    let pid = ok(&push);
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy never cut a PutSnapshotBlock");
    let log = f.build_log(&pid);
    let retry = log
        .lines()
        .find(|l| l.contains("PutSnapshotBlock try 1 of 4 failed"))
        .unwrap_or_else(|| panic!("no retry in the log:\n{log}"));
    eprintln!("retry: {retry}");
    assert!(log.contains("1 retry"), "{log}");
    let snaps = ec2_cloud::ami::tagged_snapshots(&aws, &pid).expect("DescribeSnapshots");
    assert_eq!(snaps.len(), 1);
    let body = f.body(&tid);
    assert_eq!(listed_blocks(&aws, &snaps[0]), data_blocks(&body), "a block is missing after the retry");
    for i in data_blocks(&body) {
        assert!(stored_block(&aws, &snaps[0], i) == file_block(&body, i), "block {i} differs");
    }
}

#[test]
fn s3_upload_lands_in_the_bucket_then_import_snapshot_fails_clearly() {
    let moto = Moto::start();
    let aws = aws(&moto);
    aws.runtime.block_on(aws.s3.create_bucket().bucket("factory-images").send()).expect("CreateBucket");
    let f = factory();
    let base = base(&f);
    let tid = ok(&target(&f, &base, &[("cloud_modifications", "false")]));
    let key = secret("s3");
    let provider = f.file("provider.json", &provider_json(&moto.endpoint, Some("factory-images")));
    let creds = f.file("credentials.xml", &credentials(&key));
    let args = [
        "provider_image",
        "--id",
        &tid,
        "--parameter",
        "ec2_upload",
        "s3",
        "ec2",
        path_str(&provider),
        path_str(&creds),
    ];
    let push = f.run(&args, DEADLINE);
    let msg = failure(&push);
    assert!(
        msg.contains(&format!("the endpoint {} does not implement ImportSnapshot", moto.endpoint)),
        "unclear failure: {msg}"
    );
    assert!(!msg.contains('\n'));
    let log = f.build_log(&push.field("UUID:").expect("uuid"));
    let figure = log.lines().find(|l| l.contains("uploaded ") && l.contains("s3://")).expect("an upload line");
    eprintln!("s3 upload: {figure}");
    eprintln!("s3 failure: {msg}");

    // The object is in the bucket, with the body's size and its multipart ETag.
    let object_key = ec2_cloud::s3_key(&tid);
    let head = aws
        .runtime
        .block_on(aws.s3.head_object().bucket("factory-images").key(&object_key).send())
        .expect("HeadObject: the upload is not in the bucket");
    let body = f.body(&tid);
    assert_eq!(head.content_length(), Some(64 * MIB as i64));
    let local =
        ec2_cloud::s3::local_etag(&body, ec2_cloud::s3::part_size(64 * MIB), &ec2_cloud::report::Quiet).expect("etag");
    assert!(local.ends_with("-8"), "64 MiB in 8 MiB parts: {local}");
    assert_eq!(head.e_tag().map(|e| e.trim_matches('"')), Some(local.as_str()));

    // Another push of the same target image finds the object and sends nothing again.
    let again = f.run(&args, DEADLINE);
    assert!(failure(&again).contains("does not implement ImportSnapshot"));
    let log = f.build_log(&again.field("UUID:").expect("uuid"));
    assert!(log.contains("already holds this image"), "{log}");
    assert_secret_nowhere(&f, &[&push, &again], &key);
}

#[test]
fn one_line_failures_without_the_secret() {
    let f = factory();
    let base = base(&f);
    let tid = ok(&target(&f, &base, &[("cloud_modifications", "false")]));
    let key = secret("fail");
    let creds = f.file("credentials.xml", &credentials(&key));

    let dead = format!("http://127.0.0.1:{}", free_port());
    let provider = f.file("dead.json", &provider_json(&dead, None));
    let run = f.run(&["provider_image", "--id", &tid, "ec2", path_str(&provider), path_str(&creds)], DEADLINE);
    let msg = failure(&run);
    assert!(msg.contains(&format!("StartSnapshot failed: cannot reach {dead}")), "{msg}");

    let s3_without_bucket = f.run(
        &[
            "provider_image",
            "--id",
            &tid,
            "--parameter",
            "ec2_upload",
            "s3",
            "ec2",
            path_str(&provider),
            path_str(&creds),
        ],
        DEADLINE,
    );
    assert!(failure(&s3_without_bucket).contains("needs an s3_bucket"), "{}", s3_without_bucket.stdout);

    let broken = f.file(
        "broken.xml",
        &format!("<provider_credentials><ec2_credentials><secret_access_key>{key}</secret_access_key>"),
    );
    let run2 = f.run(&["provider_image", "--id", &tid, "ec2", path_str(&provider), path_str(&broken)], DEADLINE);
    assert!(failure(&run2).contains("EC2 credentials: not well-formed XML"), "{}", run2.stdout);

    let bad_provider = f.file("bad.json", r#"{"name": "ec2-us-east-1", "s3bucket": "x"}"#);
    let run3 = f.run(&["provider_image", "--id", &tid, "ec2", path_str(&bad_provider), path_str(&creds)], DEADLINE);
    assert!(failure(&run3).contains("unknown key \"s3bucket\""), "{}", run3.stdout);

    let tdl = f.file(
        "snap.tdl",
        "<template><name>snap</name><os><name>MockOS_A</name><version>1</version><arch>x86_64</arch>\
         <install type='url'><url>http://mirror.invalid/</url></install><rootpw>x</rootpw></os></template>",
    );
    let snap = f.run(
        &["provider_image", "--snapshot", "--template", path_str(&tdl), "ec2", "@ec2-us-east-1", path_str(&creds)],
        DEADLINE,
    );
    assert!(failure(&snap).contains("does not do snapshot builds"), "{}", snap.stdout);
    assert_secret_nowhere(&f, &[&run, &s3_without_bucket, &run2, &run3, &snap], &key);
}
