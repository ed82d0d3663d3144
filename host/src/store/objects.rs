//! Image bodies and kept files in S3-compatible object storage (`"bodies":
//! "s3://BUCKET/PREFIX"`), for a farm whose machines share no file system.
//!
//! DRAFT, not yet in the module tree (see the #12 notes): the engine keeps working on
//! local files, and this is where they go to and come from. Every machine keeps a local
//! copy in its own `storage_path`; a worker uploads an image's body and kept files when
//! its build ends and downloads a parent's before a target or push; an API daemon serves
//! `raw_image` from the object store with Range.
//!
//! All S3 I/O runs on the object store's own small tokio runtime: the store is called
//! from build threads and `spawn_blocking` (which block on it), and the API's streamed
//! answers are fed from tasks spawned on it through a bounded channel, so no runtime of
//! the API's ever polls an SDK future.
//!
//! Layout: `PREFIX<id>.body` and `PREFIX<id>.files/<name>`.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use s3kit::aws_sdk_s3;
use s3kit::aws_sdk_s3::primitives::ByteStream;
use s3kit::aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use s3kit::AwsError;

use super::StoreError;

/// Parts in flight at once in an upload.
const PARTS_IN_FLIGHT: usize = 4;
/// Zero runs of this size (aligned) are not written when a body is downloaded, so a
/// sparse raw disk stays sparse.
const SPARSE_BLOCK: usize = 64 * 1024;

/// Where the objects are and as whom to reach them. `Debug` hides the keys.
#[derive(Clone)]
pub struct ObjectSettings {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for ObjectSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectSettings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("keys", &"(set)")
            .finish()
    }
}

/// Splits `s3://BUCKET/PREFIX` into the bucket and a prefix ending in `/` (or empty).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid {
        return Err(format!("{bucket:?} is not a valid S3 bucket name (3-63 lower-case letters, digits, '-', '.')"));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
    Ok((bucket.to_string(), prefix))
}

/// A bucket (and prefix) of object storage, with the runtime its client runs on.
pub struct ObjectStore {
    runtime: Option<tokio::runtime::Runtime>,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// Where calls go, for messages: the endpoint or `AWS <region>`.
    endpoint: String,
}

impl ObjectStore {
    pub fn connect(settings: &ObjectSettings) -> Result<ObjectStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unusable(format!("cannot start the object store's runtime: {e}")))?;
        let credentials = aws_credential_types::Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            settings.session_token.clone(),
            None,
            "imagefactory-bodies",
        );
        let target =
            s3kit::Target { region: &settings.region, endpoint: settings.endpoint.as_deref(), credentials };
        let s3 = s3kit::client(&s3kit::https_client(), &target, 3);
        let endpoint = settings.endpoint.clone().unwrap_or_else(|| format!("AWS {}", settings.region));
        Ok(ObjectStore {
            runtime: Some(runtime),
            s3,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            endpoint,
        })
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime lives until drop")
    }

    /// `s3://bucket/prefix`, for logs and records.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    pub fn body_key(&self, id: &str) -> String {
        format!("{}{id}.body", self.prefix)
    }

    pub fn file_key(&self, id: &str, name: &str) -> String {
        format!("{}{id}.files/{name}", self.prefix)
    }

    fn error(&self, e: AwsError) -> StoreError {
        if e.retryable() {
            StoreError::Unavailable(format!("object storage: {e}"))
        } else {
            StoreError::Objects(format!("object storage: {e}"))
        }
    }

    /// The size of an object, `None` when there is none.
    pub fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let out = self.rt().block_on(self.s3.head_object().bucket(&self.bucket).key(key).send());
        match out {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(self.error(AwsError::from_sdk("HeadObject", &self.endpoint, e))),
        }
    }

    /// Uploads `path` to `key`, streamed: one PUT for a small file, else a multipart
    /// upload of [`s3kit::part_size`] parts, [`PARTS_IN_FLIGHT`] at once, checked
    /// against the multipart ETag. A failed upload is aborted.
    pub fn upload(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let read_err = |source| StoreError::Read { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(read_err)?;
        let size = file.metadata().map_err(read_err)?.len();
        let part = s3kit::part_size(size);
        if size < part {
            let mut buf = vec![0u8; size as usize];
            file.read_exact_at(&mut buf, 0).map_err(read_err)?;
            self.rt()
                .block_on(self.s3.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(buf)).send())
                .map_err(|e| self.error(AwsError::from_sdk("PutObject", &self.endpoint, e)))?;
            return Ok(size);
        }
        let created = self
            .rt()
            .block_on(self.s3.create_multipart_upload().bucket(&self.bucket).key(key).send())
            .map_err(|e| self.error(AwsError::from_sdk("CreateMultipartUpload", &self.endpoint, e)))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let sent = self.send_parts(key, &upload_id, &file, size, part, path);
        let done = sent.and_then(|(parts, md5s)| {
            let out = self
                .rt()
                .block_on(
                    self.s3
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(&upload_id)
                        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                        .send(),
                )
                .map_err(|e| self.error(AwsError::from_sdk("CompleteMultipartUpload", &self.endpoint, e)))?;
            let remote = out.e_tag().unwrap_or_default().trim_matches('"').to_string();
            let local = s3kit::multipart_etag(&md5s);
            if !remote.is_empty() && remote != local {
                return Err(StoreError::Objects(format!(
                    "s3://{}/{key} has ETag {remote} but the data sent gives {local}: the upload was corrupted",
                    self.bucket
                )));
            }
            Ok(())
        });
        if let Err(e) = done {
            let _ = self.rt().block_on(
                self.s3.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(&upload_id).send(),
            );
            return Err(e);
        }
        Ok(size)
    }

    fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        file: &File,
        size: u64,
        part: u64,
        path: &Path,
    ) -> Result<(Vec<CompletedPart>, Vec<[u8; 16]>), StoreError> {
        use md5::{Digest, Md5};
        let count = size.div_ceil(part);
        self.rt().block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            let mut done: Vec<Option<(CompletedPart, [u8; 16])>> = vec![None; count as usize];
            let mut next = 0u64;
            loop {
                while next < count && tasks.len() < PARTS_IN_FLIGHT {
                    let start = next * part;
                    let mut buf = vec![0u8; part.min(size - start) as usize];
                    file.read_exact_at(&mut buf, start)
                        .map_err(|source| StoreError::Read { path: path.to_path_buf(), source })?;
                    let sum: [u8; 16] = Md5::digest(&buf).into();
                    let number = (next + 1) as i32;
                    let req = self
                        .s3
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(ByteStream::from(buf));
                    tasks.spawn(async move { (number, sum, req.send().await) });
                    next += 1;
                }
                let Some(joined) = tasks.join_next().await else { break };
                let (number, sum, out) =
                    joined.map_err(|e| StoreError::Objects(format!("a part upload task ended abnormally: {e}")))?;
                let out = out.map_err(|e| self.error(AwsError::from_sdk("UploadPart", &self.endpoint, e)))?;
                let etag = out.e_tag().unwrap_or_default().to_string();
                done[(number - 1) as usize] =
                    Some((CompletedPart::builder().e_tag(etag).part_number(number).build(), sum));
            }
            Ok(done.into_iter().flatten().unzip())
        })
    }

    /// Downloads `key` into `dest` (created or truncated), streamed, leaving holes where
    /// the object holds runs of zeros. Returns the object's size.
    pub fn download(&self, key: &str, dest: &Path) -> Result<u64, StoreError> {
        let write_err = |source| StoreError::Write { path: dest.to_path_buf(), source };
        let file = File::create(dest).map_err(write_err)?;
        let out = self
            .rt()
            .block_on(self.s3.get_object().bucket(&self.bucket).key(key).send())
            .map_err(|e| self.error(AwsError::from_sdk("GetObject", &self.endpoint, e)))?;
        let expected = out.content_length().unwrap_or(0).max(0) as u64;
        let mut body = out.body;
        let mut at = 0u64;
        loop {
            let chunk = self.rt().block_on(body.try_next()).map_err(|e| {
                StoreError::Unavailable(format!("object storage: reading s3://{}/{key} from {}: {e}", self.bucket, self.endpoint))
            })?;
            let Some(chunk) = chunk else { break };
            write_sparse(&file, at, &chunk).map_err(write_err)?;
            at += chunk.len() as u64;
        }
        if at != expected {
            return Err(StoreError::Unavailable(format!(
                "object storage: s3://{}/{key} ended after {at} of {expected} bytes",
                self.bucket
            )));
        }
        file.set_len(at).map_err(write_err)?;
        Ok(at)
    }

    /// The keys under `prefix` (after the store's own prefix), every page.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .rt()
                .block_on(
                    self.s3
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&full)
                        .set_continuation_token(token.take())
                        .send(),
                )
                .map_err(|e| self.error(AwsError::from_sdk("ListObjectsV2", &self.endpoint, e)))?;
            keys.extend(out.contents().iter().filter_map(|o| o.key()).map(str::to_string));
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }

    /// Removes an image's body and kept files.
    pub fn remove_image(&self, id: &str) -> Result<(), StoreError> {
        for key in self.list(&format!("{id}."))? {
            self.rt()
                .block_on(self.s3.delete_object().bucket(&self.bucket).key(&key).send())
                .map_err(|e| self.error(AwsError::from_sdk("DeleteObject", &self.endpoint, e)))?;
        }
        Ok(())
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        // A runtime dropped inside another (the daemon's) would panic; this one's tasks
        // are all finished or not worth waiting for.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Writes `chunk` at `at`, skipping aligned blocks of zeros (the file's holes stay holes).
fn write_sparse(file: &File, at: u64, chunk: &[u8]) -> std::io::Result<()> {
    let mut off = 0usize;
    while off < chunk.len() {
        // Up to the next block boundary of the file, so holes are whole blocks.
        let abs = at + off as u64;
        let to_boundary = SPARSE_BLOCK - (abs % SPARSE_BLOCK as u64) as usize;
        let end = (off + to_boundary).min(chunk.len());
        let piece = &chunk[off..end];
        if piece.iter().any(|&b| b != 0) {
            file.write_all_at(piece, abs)?;
        }
        off = end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_urls() {
        assert_eq!(parse_url("s3://bodies/farm/a/").unwrap(), ("bodies".into(), "farm/a/".into()));
        assert_eq!(parse_url("s3://bodies").unwrap(), ("bodies".into(), String::new()));
        assert!(parse_url("s3://B").is_err());
        assert!(parse_url("/srv/bodies").is_err());
    }

    #[test]
    fn zero_blocks_become_holes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let mut data = vec![0u8; 4 << 20];
        data[100] = 1;
        data[(3 << 20) + 7] = 2;
        write_sparse(&file, 0, &data[..1_000_000]).unwrap();
        write_sparse(&file, 1_000_000, &data[1_000_000..]).unwrap();
        file.set_len(data.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(std::fs::metadata(&path).unwrap().blocks() * 512 <= 4 * SPARSE_BLOCK as u64);
    }
}
