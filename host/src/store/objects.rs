//! Image bodies and kept files in S3-compatible object storage (`"bodies":
//! "s3://BUCKET/PREFIX"`), for a farm whose machines share no file system.
//!
//! The engine and the plugins keep working on local files: every machine keeps a local
//! copy in its own `storage_path` (see [`super::Bodies`]). A worker uploads an image's
//! body and kept files when its build ends and downloads a parent's before a target or a
//! push; an API daemon serves `raw_image` and kept files from the object store, with
//! Range.
//!
//! All S3 I/O runs on the object store's own small tokio runtime: the store is called
//! from build threads and `spawn_blocking` (which block on it), and the API's streamed
//! answers are fed by tasks spawned on it through a bounded channel, so no runtime of the
//! API's ever polls an SDK future, and no SDK call blocks an API worker thread.
//!
//! Layout: `PREFIX<id>.body` and `PREFIX<id>.files/<name>`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use s3kit::aws_sdk_s3;
use s3kit::aws_sdk_s3::primitives::ByteStream;
use s3kit::aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use s3kit::{AwsError, HttpResponse, ProvideErrorMetadata, SdkError};

use super::StoreError;

/// Parts in flight at once in an upload.
const PARTS_IN_FLIGHT: usize = 4;
/// Zero runs of this size (aligned) are not written when a body is downloaded, so a
/// sparse raw disk stays sparse.
const SPARSE_BLOCK: usize = 64 * 1024;
/// Chunks of a streamed read waiting for the client; with the SDK's chunk size this
/// bounds a slow download's memory to well under a MiB.
const READ_AHEAD: usize = 4;

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

/// What the config says of object storage; what it leaves out comes from the usual AWS
/// environment variables.
#[derive(Default)]
pub struct ObjectConfig<'a> {
    pub url: &'a str,
    pub endpoint: Option<&'a str>,
    pub region: Option<&'a str>,
    pub access_key_id: Option<&'a str>,
    pub secret_access_key: Option<&'a str>,
}

impl ObjectSettings {
    /// The settings for `config`, completed from `env` (`AWS_ENDPOINT_URL_S3`,
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_DEFAULT_REGION`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`). The error is one line, without keys.
    pub fn resolve(config: &ObjectConfig<'_>, env: impl Fn(&str) -> Option<String>) -> Result<ObjectSettings, String> {
        let (bucket, prefix) = parse_url(config.url)?;
        let given = |v: Option<&str>| v.map(str::to_string).filter(|s| !s.is_empty());
        let from_env = |names: &[&str]| names.iter().find_map(|n| env(n).filter(|s| !s.is_empty()));
        let endpoint = given(config.endpoint).or_else(|| from_env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
        if let Some(e) = &endpoint {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!("the S3 endpoint {e:?} is not an http(s) URL"));
            }
        }
        let region = given(config.region)
            .or_else(|| from_env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .unwrap_or_else(|| "us-east-1".to_string());
        let access_key_id = given(config.access_key_id).or_else(|| from_env(&["AWS_ACCESS_KEY_ID"]));
        let secret_access_key = given(config.secret_access_key).or_else(|| from_env(&["AWS_SECRET_ACCESS_KEY"]));
        let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret_access_key) else {
            return Err("bodies in object storage need keys: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                        or image_manager_args.s3_access_key_id and s3_secret_access_key"
                .to_string());
        };
        // A session token from the environment belongs to the environment's keys only.
        let session_token = if config.access_key_id.is_none() { from_env(&["AWS_SESSION_TOKEN"]) } else { None };
        Ok(ObjectSettings { bucket, prefix, endpoint, region, access_key_id, secret_access_key, session_token })
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

/// A streamed read of one object (or a range of it): chunks as they arrive, then the
/// end of the channel. An error mid-way is the last item.
pub type Chunks = tokio::sync::mpsc::Receiver<io::Result<Bytes>>;

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
    /// A client for `settings` (no call is made: see [`ObjectStore::check_bucket`]).
    pub fn connect(settings: &ObjectSettings) -> Result<ObjectStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("object-store")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Unusable(format!("cannot start the object store's runtime: {e}")))?;
        let credentials = s3kit::Credentials::new(
            settings.access_key_id.clone(),
            settings.secret_access_key.clone(),
            settings.session_token.clone(),
            None,
            "imagefactory-bodies",
        );
        let target = s3kit::Target { region: &settings.region, endpoint: settings.endpoint.as_deref(), credentials };
        // The HTTPS client's connection pool belongs to the runtime it is first used on:
        // made inside this one.
        let s3 = {
            let _inside = runtime.enter();
            s3kit::client(&s3kit::https_client(), &target, 3)
        };
        let endpoint = settings.endpoint.clone().unwrap_or_else(|| format!("AWS {}", settings.region));
        Ok(ObjectStore {
            runtime: Some(runtime),
            s3,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            endpoint,
        })
    }

    fn rt(&self) -> Result<&tokio::runtime::Runtime, StoreError> {
        self.runtime.as_ref().ok_or_else(|| StoreError::Unusable("the object store is shut down".into()))
    }

    /// Runs an SDK call (or any future) on this store's runtime and waits for it: from a
    /// thread that is not a runtime's (a build thread, `spawn_blocking`).
    fn run<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let rt = self.rt()?;
        rt.block_on(rt.spawn(f))
            .map_err(|e| StoreError::Objects(format!("an object storage task ended abnormally: {e}")))
    }

    /// The same, awaited from any runtime (the API's).
    async fn run_async<T: Send + 'static>(
        &self,
        f: impl std::future::Future<Output = T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let rt = self.rt()?;
        rt.spawn(f).await.map_err(|e| StoreError::Objects(format!("an object storage task ended abnormally: {e}")))
    }

    /// One line for a failed call: Unavailable when another try may work (no answer, a
    /// server error), else a plain object-storage error.
    fn failed<E>(&self, operation: &'static str, e: SdkError<E, HttpResponse>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let e = AwsError::from_sdk(operation, &self.endpoint, e);
        tracing::debug!(chain = ?e.chain, "{operation} failed");
        if e.retryable() {
            StoreError::Unavailable(format!("object storage: {e}"))
        } else {
            StoreError::Objects(format!("object storage: {e}"))
        }
    }

    /// `s3://bucket/prefix`, for logs.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// The URL of an object, for records (`data`) and messages.
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    pub fn body_key(&self, id: &str) -> String {
        format!("{}{id}.body", self.prefix)
    }

    pub fn file_key(&self, id: &str, name: &str) -> String {
        format!("{}{id}.files/{name}", self.prefix)
    }

    /// Whether the bucket is there: an error names a missing bucket or refused keys
    /// ([`StoreError::Unusable`]) or an endpoint that does not answer (Unavailable).
    pub fn check_bucket(&self) -> Result<(), StoreError> {
        let call = self.s3.head_bucket().bucket(&self.bucket).send();
        match self.run(call)? {
            Ok(_) => Ok(()),
            Err(e) => match self.failed("HeadBucket", e) {
                StoreError::Objects(m) => {
                    Err(StoreError::Unusable(if m.contains("HTTP 404") || m.contains("NotFound") {
                        format!("the bucket {} does not exist at {}", self.bucket, self.endpoint)
                    } else {
                        m
                    }))
                }
                other => Err(other),
            },
        }
    }

    /// The size of an object, `None` when there is none.
    pub async fn stat(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let call = self.s3.head_object().bucket(&self.bucket).key(key).send();
        match self.run_async(call).await? {
            Ok(h) => Ok(Some(h.content_length().unwrap_or(0).max(0) as u64)),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(None),
            Err(e) => Err(self.failed("HeadObject", e)),
        }
    }

    /// Reads an object, or the bytes `first..=last` of it, as a stream of chunks fed by
    /// a task on this store's runtime. An error before the first byte is returned here
    /// (so an answer's status can say it); one after ends the stream.
    pub async fn read(&self, key: &str, range: Option<(u64, u64)>) -> Result<Chunks, StoreError> {
        let mut call = self.s3.get_object().bucket(&self.bucket).key(key);
        if let Some((first, last)) = range {
            call = call.range(format!("bytes={first}-{last}"));
        }
        let out = self.run_async(call.send()).await?.map_err(|e| self.failed("GetObject", e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
        let mut body = out.body;
        self.rt()?.spawn(async move {
            loop {
                let next = match body.try_next().await {
                    Ok(Some(chunk)) => Ok(chunk),
                    Ok(None) => return,
                    Err(e) => Err(io::Error::other(format!("reading from object storage: {e}"))),
                };
                let failed = next.is_err();
                if tx.send(next).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(rx)
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
            let call = self.s3.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(buf)).send();
            self.run(call)?.map_err(|e| self.failed("PutObject", e))?;
            return Ok(size);
        }
        let call = self.s3.create_multipart_upload().bucket(&self.bucket).key(key).send();
        let created = self.run(call)?.map_err(|e| self.failed("CreateMultipartUpload", e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let done = self.send_parts(key, &upload_id, &file, size, part, path).and_then(|(parts, md5s)| {
            let call = self
                .s3
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send();
            let out = self.run(call)?.map_err(|e| self.failed("CompleteMultipartUpload", e))?;
            let remote = out.e_tag().unwrap_or_default().trim_matches('"').to_string();
            let local = s3kit::multipart_etag(&md5s);
            if !remote.is_empty() && remote != local {
                return Err(StoreError::Objects(format!(
                    "{} has ETag {remote} but the data sent gives {local}: the upload was corrupted",
                    self.url_of(key)
                )));
            }
            Ok(())
        });
        if let Err(e) = done {
            let call = self.s3.abort_multipart_upload().bucket(&self.bucket).key(key).upload_id(&upload_id).send();
            if let Err(abort) = self.run(call) {
                tracing::warn!(key, error = %abort, "cannot abort a failed multipart upload");
            }
            return Err(e);
        }
        Ok(size)
    }

    /// The parts of a multipart upload, [`PARTS_IN_FLIGHT`] at once (so at most that many
    /// parts are in memory); their completions and MD5s in part order.
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
        let mut done: Vec<Option<(CompletedPart, [u8; 16])>> = vec![None; count as usize];
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = 0u64;
        while next < count || !in_flight.is_empty() {
            while next < count && in_flight.len() < PARTS_IN_FLIGHT {
                let start = next * part;
                let mut buf = vec![0u8; part.min(size - start) as usize];
                file.read_exact_at(&mut buf, start)
                    .map_err(|source| StoreError::Read { path: path.to_path_buf(), source })?;
                let sum: [u8; 16] = Md5::digest(&buf).into();
                let number = (next + 1) as i32;
                let call = self
                    .s3
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(buf))
                    .send();
                let rt = self.rt()?;
                in_flight.push_back((number, sum, rt.spawn(call)));
                next += 1;
            }
            let Some((number, sum, task)) = in_flight.pop_front() else { break };
            let out = self
                .run(task)?
                .map_err(|e| StoreError::Objects(format!("a part upload task ended abnormally: {e}")))?;
            let out = out.map_err(|e| self.failed("UploadPart", e))?;
            let etag = out.e_tag().unwrap_or_default().to_string();
            done[(number - 1) as usize] = Some((CompletedPart::builder().e_tag(etag).part_number(number).build(), sum));
        }
        Ok(done.into_iter().flatten().unzip())
    }

    /// Downloads `key` into `dest` (created or truncated), streamed, leaving holes where
    /// the object holds runs of zeros. The object's size, or `None` when there is none.
    pub fn download(&self, key: &str, dest: &Path) -> Result<Option<u64>, StoreError> {
        let rt = self.rt()?;
        let Some(expected) = rt.block_on(self.stat(key))? else { return Ok(None) };
        let write_err = |source| StoreError::Write { path: dest.to_path_buf(), source };
        let file = File::create(dest).map_err(write_err)?;
        let mut chunks = rt.block_on(self.read(key, None))?;
        let mut at = 0u64;
        while let Some(chunk) = chunks.blocking_recv() {
            let chunk =
                chunk.map_err(|e| StoreError::Unavailable(format!("object storage: {}: {e}", self.url_of(key))))?;
            write_sparse(&file, at, &chunk).map_err(write_err)?;
            at += chunk.len() as u64;
        }
        if at != expected {
            return Err(StoreError::Unavailable(format!(
                "object storage: {} ended after {at} of {expected} bytes",
                self.url_of(key)
            )));
        }
        file.set_len(at).map_err(write_err)?;
        Ok(Some(at))
    }

    /// The keys that start with `prefix` (after the store's own prefix), every page.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let call = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full)
                .set_continuation_token(token.take())
                .send();
            let out = self.run(call)?.map_err(|e| self.failed("ListObjectsV2", e))?;
            keys.extend(out.contents().iter().filter_map(|o| o.key()).map(str::to_string));
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
                _ => return Ok(keys),
            }
        }
    }

    /// The names of the files kept with an image, sorted.
    pub fn kept_files(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.file_key(id, "");
        let mut names: Vec<String> = self
            .list(&format!("{id}.files/"))?
            .into_iter()
            .filter_map(|k| k.strip_prefix(&dir).map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes an image's body and kept files (what is not there is fine).
    pub fn remove_image(&self, id: &str) -> Result<(), StoreError> {
        for key in self.list(&format!("{id}."))? {
            let call = self.s3.delete_object().bucket(&self.bucket).key(&key).send();
            self.run(call)?.map_err(|e| self.failed("DeleteObject", e))?;
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
