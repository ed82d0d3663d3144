//! Image bodies in S3-compatible object storage (`"bodies": "s3://..."`), against a real
//! moto server: the object store's upload (one PUT, or a multipart upload checked by its
//! ETag), sparse download, ranged streamed reads, listing and removal; two machines'
//! `Bodies` sharing images through it; a missing bucket and an unreachable endpoint each
//! one line; an outage (a proxy that goes down) that is Unavailable, then recovers.
//!
//! Needs scripts/setup.sh (the moto venv); a missing moto fails loudly.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use imagefactory::store::objects::{ObjectSettings, ObjectStore};
use imagefactory::store::{Bodies, StoreError};
use testkit::moto::Moto;
use testkit::proxy::SwitchProxy;

const MIB: u64 = 1 << 20;
const SECRET: &str = "object-bodies-test-secret";
const ID: &str = "0b5c1a38-5d2e-4c0e-9a43-7c1f2b9e8d11";

fn settings(endpoint: &str, bucket: &str) -> ObjectSettings {
    ObjectSettings {
        bucket: bucket.to_string(),
        prefix: "farm/".to_string(),
        endpoint: Some(endpoint.to_string()),
        region: "us-east-1".to_string(),
        access_key_id: "AKIDBODIESTEST".to_string(),
        secret_access_key: SECRET.to_string(),
        session_token: None,
    }
}

fn store(moto: &Moto, bucket: &str) -> ObjectStore {
    moto.create_bucket(bucket);
    let s = ObjectStore::connect(&settings(&moto.endpoint, bucket)).expect("a client");
    s.check_bucket().expect("the bucket is there");
    s
}

/// A sparse file of `size` bytes with a few marked places.
fn sparse_file(path: &Path, size: u64) -> Vec<(u64, &'static [u8])> {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    let marks: Vec<(u64, &'static [u8])> =
        vec![(0, b"head"), (9 * MIB + 5, b"in the second part"), (size - 4, b"tail")];
    for (at, bytes) in &marks {
        f.write_all_at(bytes, *at).unwrap();
    }
    marks
}

fn read_all(s: &ObjectStore, key: &str, range: Option<(u64, u64)>) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut chunks = s.read(key, range).await.expect("a read");
        let mut out = Vec::new();
        while let Some(c) = chunks.recv().await {
            out.extend_from_slice(&c.expect("a chunk"));
        }
        out
    })
}

fn stat(s: &ObjectStore, key: &str) -> Option<u64> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(s.stat(key)).expect("HeadObject")
}

#[test]
fn a_multipart_body_goes_up_and_comes_back_sparse_and_in_ranges() {
    let moto = Moto::start();
    let s = store(&moto, "bodies");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.raw");
    let size = 20 * MIB + 3;
    let marks = sparse_file(&src, size);
    let key = s.body_key(ID);
    assert_eq!(key, format!("farm/{ID}.body"));
    assert_eq!(s.upload(&key, &src).expect("the upload"), size);
    assert_eq!(stat(&s, &key), Some(size));

    let back = dir.path().join("back.raw");
    assert_eq!(s.download(&key, &back).expect("the download"), Some(size));
    let (a, b) = (std::fs::read(&src).unwrap(), std::fs::read(&back).unwrap());
    assert!(a == b, "the downloaded body differs from the uploaded one");
    let allocated = std::fs::metadata(&back).unwrap().blocks() * 512;
    assert!(allocated <= 4 * 64 * 1024, "the zeros were written: {allocated} bytes allocated of {size}");

    // Ranged reads: across the first part boundary, and the last bytes.
    let (at, bytes) = marks[1];
    assert_eq!(read_all(&s, &key, Some((at, at + bytes.len() as u64 - 1))), bytes);
    assert_eq!(read_all(&s, &key, Some((size - 4, size - 1))), b"tail");
    let across = read_all(&s, &key, Some((8 * MIB - 2, 8 * MIB + 1)));
    assert_eq!(across, &a[(8 * MIB - 2) as usize..(8 * MIB + 2) as usize]);

    // A missing object: no size, no download.
    assert_eq!(stat(&s, "farm/nothing.body"), None);
    assert_eq!(s.download("farm/nothing.body", &dir.path().join("x")).unwrap(), None);
}

#[test]
fn two_machines_share_images_through_the_object_store() {
    let moto = Moto::start();
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Bodies::with_objects(a_dir.path(), store(&moto, "shared")).unwrap();
    let b =
        Bodies::with_objects(b_dir.path(), ObjectStore::connect(&settings(&moto.endpoint, "shared")).unwrap()).unwrap();
    assert_eq!(a.data_of(ID), format!("s3://shared/farm/{ID}.body"));

    // Machine A builds: a small body (one PUT) and two kept files.
    a.prepare(ID).unwrap();
    std::fs::write(a.body_path(ID), b"a small body").unwrap();
    a.write_file(ID, "console.log", b"booted\n").unwrap();
    a.write_file(ID, "sbom.spdx.json", b"{}").unwrap();
    // A failed build sends only its files.
    a.publish(ID, false).unwrap();
    assert_eq!(b.kept_files(ID).unwrap(), ["console.log", "sbom.spdx.json"]);
    let err = b.fetch(ID).expect_err("no body was published");
    assert!(err.to_string().contains("has no body in object storage"), "{err}");
    a.publish(ID, true).unwrap();

    // Machine B, which shares no directory with A, reads it.
    b.fetch(ID).expect("the fetch");
    assert_eq!(std::fs::read(b.body_path(ID)).unwrap(), b"a small body");
    assert_eq!(std::fs::read(b.files_dir(ID).join("console.log")).unwrap(), b"booted\n");
    // A second fetch is served by the local copy: changed here, it stays changed.
    std::fs::write(b.body_path(ID), b"local").unwrap();
    b.fetch(ID).unwrap();
    assert_eq!(std::fs::read(b.body_path(ID)).unwrap(), b"local");

    // A delete on B removes the objects (and B's copy); A's listing is empty then.
    b.remove(ID).unwrap();
    assert!(!b.body_path(ID).exists());
    assert_eq!(a.kept_files(ID).unwrap(), Vec::<String>::new());
    assert_eq!(stat(a.objects().unwrap(), &a.objects().unwrap().body_key(ID)), None);
}

#[test]
fn a_missing_bucket_and_an_unreachable_endpoint_are_one_line_each() {
    let moto = Moto::start();
    let s = ObjectStore::connect(&settings(&moto.endpoint, "no-such-bucket")).unwrap();
    let e = s.check_bucket().expect_err("the bucket is missing");
    assert!(matches!(e, StoreError::Unusable(_)), "{e:?}");
    assert!(e.to_string().contains("the bucket no-such-bucket does not exist"), "{e}");

    let dead = format!("http://127.0.0.1:{}", testkit::free_port());
    let s = ObjectStore::connect(&settings(&dead, "bodies")).unwrap();
    let e = s.check_bucket().expect_err("nothing listens there");
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    for text in [e.to_string(), format!("{e:?}")] {
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains(SECRET), "the secret key is in {text}");
    }
    assert!(!format!("{:?}", settings(&dead, "b")).contains(SECRET));
}

#[test]
fn an_outage_is_unavailable_and_the_next_try_works() {
    let moto = Moto::start();
    moto.create_bucket("outage");
    let proxy = SwitchProxy::start(moto.port);
    let s = ObjectStore::connect(&settings(&proxy.endpoint, "outage")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("body");
    std::fs::write(&src, b"body bytes").unwrap();
    s.upload(&s.body_key(ID), &src).expect("an upload through the proxy");

    proxy.down();
    let e = s.upload(&s.body_key("second"), &src).expect_err("object storage is down");
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert_eq!(e.to_string().lines().count(), 1, "{e}");

    proxy.up();
    let again = imagefactory::store::retry_while_unavailable(std::time::Duration::from_secs(30), "upload", || {
        s.upload(&s.body_key("second"), &src)
    });
    assert_eq!(again.expect("the upload once it is back"), 10);
    assert_eq!(s.download(&s.body_key("second"), &dir.path().join("b")).unwrap(), Some(10));
}
