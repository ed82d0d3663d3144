//! The `s3` upload method: the raw body goes into an S3 bucket by multipart upload, and
//! EC2's ImportSnapshot makes a snapshot of it.
//!
//! The upload reads the file part by part (a few parts in flight, each with its
//! Content-MD5), so memory stays bounded whatever the image's size; a failed part is
//! tried again with backoff. The object's key is derived from the target image, and an
//! object already there with the same size and the same multipart ETag (computed
//! locally) is not uploaded again: a push that failed at ImportSnapshot (a missing
//! `vmimport` role, say) can be repeated without sending the image twice. After a
//! successful import the object is removed.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{SnapshotDiskContainer, UserBucket};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_types::byte_stream::ByteStream;
use base64::Engine as _;
use md5::{Digest, Md5};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::aws::Aws;
use crate::error::AwsError;
use crate::report::Report;
use crate::retry::{retry, RetryError, RetryPolicy};
use crate::PushError;

const MIB: u64 = 1 << 20;
/// The most part data in memory at once.
const MEMORY_BUDGET: u64 = 64 * MIB;

pub use s3kit::{multipart_etag, part_size};

/// Parts in flight at once for parts of `part` bytes.
fn concurrency(part: u64, wanted: usize) -> usize {
    let budget = usize::try_from(MEMORY_BUDGET / part.max(1)).unwrap_or(1);
    wanted.min(budget).max(1)
}

/// Reads part `n` (0-based) of `file` into a buffer.
fn read_part(file: &File, n: u64, part: u64, size: u64) -> std::io::Result<Vec<u8>> {
    let start = n * part;
    let len = part.min(size - start) as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, start)?;
    Ok(buf)
}

/// The multipart ETag `path` would get with `part`-byte parts (one pass over the file).
pub fn local_etag(path: &Path, part: u64, report: &dyn Report) -> Result<String, PushError> {
    let file = File::open(path).map_err(|e| PushError::io("read", path, e))?;
    let size = file.metadata().map_err(|e| PushError::io("read", path, e))?.len();
    let mut sums = Vec::new();
    for n in 0..size.div_ceil(part) {
        if report.cancelled() {
            return Err(PushError::Cancelled);
        }
        let buf = read_part(&file, n, part, size).map_err(|e| PushError::io("read", path, e))?;
        sums.push(Md5::digest(&buf).into());
    }
    Ok(multipart_etag(&sums))
}

/// What an upload did.
#[derive(Debug, Clone)]
pub struct UploadStats {
    pub etag: String,
    pub size: u64,
    pub parts: u64,
    /// The object was already there and nothing was sent.
    pub reused: bool,
    pub retries: u32,
    pub elapsed: Duration,
}

/// Uploads `body` to `s3://bucket/key` (or finds it already there).
pub fn upload(
    aws: &Aws,
    bucket: &str,
    key: &str,
    body: &Path,
    policy: RetryPolicy,
    wanted_concurrency: usize,
    report: &dyn Report,
) -> Result<UploadStats, PushError> {
    let started = Instant::now();
    let file = File::open(body).map_err(|e| PushError::io("read", body, e))?;
    let size = file.metadata().map_err(|e| PushError::io("read", body, e))?.len();
    let part = part_size(size);
    let parts = size.div_ceil(part).max(1);

    let head = aws.runtime.block_on(aws.s3.head_object().bucket(bucket).key(key).send());
    if let Ok(h) = head {
        if h.content_length() == Some(size as i64) {
            report.activity(&format!("Checking the object already at s3://{bucket}/{key}"));
            let local = local_etag(body, part, report)?;
            let remote = h.e_tag().unwrap_or_default().trim_matches('"').to_string();
            if remote == local {
                report.info(&format!(
                    "s3://{bucket}/{key} already holds this image (ETag {local}); not uploading it again"
                ));
                return Ok(UploadStats {
                    etag: local,
                    size,
                    parts,
                    reused: true,
                    retries: 0,
                    elapsed: started.elapsed(),
                });
            }
        }
    }

    report.activity(&format!(
        "Uploading {:.1} MiB to s3://{bucket}/{key} at {}",
        size as f64 / MIB as f64,
        aws.endpoint
    ));
    let created = aws
        .runtime
        .block_on(
            aws.s3.create_multipart_upload().bucket(bucket).key(key).content_type("application/octet-stream").send(),
        )
        .map_err(|e| AwsError::from_sdk("CreateMultipartUpload", &aws.endpoint, e))?;
    let upload_id = created
        .upload_id()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AwsError::other("CreateMultipartUpload", &aws.endpoint, "the answer has no upload id"))?
        .to_string();

    let sent = send_parts(
        aws,
        bucket,
        key,
        &upload_id,
        &file,
        size,
        part,
        policy,
        concurrency(part, wanted_concurrency),
        report,
    );
    let SentParts { parts: completed, md5s: sums, retries } = match sent {
        Ok(v) => v,
        Err(e) => {
            abort(aws, bucket, key, &upload_id, report);
            return Err(e);
        }
    };
    let local = multipart_etag(&sums);
    let done = aws
        .runtime
        .block_on(
            aws.s3
                .complete_multipart_upload()
                .bucket(bucket)
                .key(key)
                .upload_id(&upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
                .send(),
        )
        .map_err(|e| AwsError::from_sdk("CompleteMultipartUpload", &aws.endpoint, e));
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            abort(aws, bucket, key, &upload_id, report);
            return Err(e.into());
        }
    };
    let remote = done.e_tag().unwrap_or_default().trim_matches('"').to_string();
    if !remote.is_empty() && remote != local {
        return Err(PushError::Failed(format!(
            "s3://{bucket}/{key} has ETag {remote} but the data sent gives {local}: the upload was corrupted"
        )));
    }
    Ok(UploadStats { etag: local, size, parts, reused: false, retries, elapsed: started.elapsed() })
}

fn abort(aws: &Aws, bucket: &str, key: &str, upload_id: &str, report: &dyn Report) {
    if let Err(e) =
        aws.runtime.block_on(aws.s3.abort_multipart_upload().bucket(bucket).key(key).upload_id(upload_id).send())
    {
        report.warn(&format!(
            "could not abort the multipart upload of s3://{bucket}/{key}: {}",
            AwsError::from_sdk("AbortMultipartUpload", &aws.endpoint, e)
        ));
    }
}

type PartOutcome = Result<(CompletedPart, [u8; 16], u32), RetryError>;

/// The parts an upload sent, in order, with their MD5s, and the retries it took.
struct SentParts {
    parts: Vec<CompletedPart>,
    md5s: Vec<[u8; 16]>,
    retries: u32,
}

#[allow(clippy::too_many_arguments)]
fn send_parts(
    aws: &Aws,
    bucket: &str,
    key: &str,
    upload_id: &str,
    file: &File,
    size: u64,
    part: u64,
    policy: RetryPolicy,
    concurrency: usize,
    report: &dyn Report,
) -> Result<SentParts, PushError> {
    let parts = size.div_ceil(part).max(1);
    let stop = Arc::new(AtomicBool::new(false));
    let (warn_tx, mut warn_rx) = mpsc::unbounded_channel::<String>();
    aws.runtime.block_on(async {
        let mut tasks: JoinSet<(u64, PartOutcome)> = JoinSet::new();
        let mut done: Vec<Option<(CompletedPart, [u8; 16])>> = vec![None; parts as usize];
        let mut next = 0u64;
        let mut retries = 0u32;
        let mut finished = 0u64;
        let result = loop {
            while next < parts && tasks.len() < concurrency {
                let buf = if size == 0 {
                    Vec::new()
                } else {
                    match read_part(file, next, part, size) {
                        Ok(b) => b,
                        Err(e) => {
                            stop.store(true, Ordering::SeqCst);
                            tasks.abort_all();
                            while tasks.join_next().await.is_some() {}
                            return Err(PushError::io("read", Path::new("the target image"), e));
                        }
                    }
                };
                tasks.spawn(put_part(
                    aws.s3_data.clone(),
                    aws.endpoint.clone(),
                    (bucket.to_string(), key.to_string(), upload_id.to_string()),
                    next,
                    buf,
                    policy,
                    stop.clone(),
                    warn_tx.clone(),
                ));
                next += 1;
            }
            let Some(joined) = tasks.join_next().await else { break Ok(()) };
            while let Ok(line) = warn_rx.try_recv() {
                report.warn(&line);
            }
            match joined {
                Ok((n, Ok((cp, sum, tries)))) => {
                    done[n as usize] = Some((cp, sum));
                    retries += tries - 1;
                    finished += 1;
                    report.progress(finished, parts);
                }
                Ok((n, Err(RetryError::Failed(e)))) => {
                    break Err(PushError::Failed(format!("part {} of the image: {e}", n + 1)))
                }
                Ok((_, Err(RetryError::Cancelled))) => break Err(PushError::Cancelled),
                Err(join) => break Err(PushError::Failed(format!("a part upload task ended abnormally: {join}"))),
            }
            if report.cancelled() {
                break Err(PushError::Cancelled);
            }
        };
        if result.is_err() {
            stop.store(true, Ordering::SeqCst);
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        while let Ok(line) = warn_rx.try_recv() {
            report.warn(&line);
        }
        result?;
        let (parts, md5s): (Vec<_>, Vec<_>) = done.into_iter().flatten().unzip();
        Ok(SentParts { parts, md5s, retries })
    })
}

#[allow(clippy::too_many_arguments)]
async fn put_part(
    s3: aws_sdk_s3::Client,
    endpoint: String,
    (bucket, key, upload_id): (String, String, String),
    n: u64,
    data: Vec<u8>,
    policy: RetryPolicy,
    stop: Arc<AtomicBool>,
    warn: mpsc::UnboundedSender<String>,
) -> (u64, PartOutcome) {
    let sum: [u8; 16] = Md5::digest(&data).into();
    let md5 = base64::engine::general_purpose::STANDARD.encode(sum);
    let len = data.len() as i64;
    let data = bytes::Bytes::from(data);
    let number = (n + 1) as i32;
    let cancelled = || stop.load(Ordering::SeqCst);
    let on_retry = |try_no: u32, attempts: u32, e: &AwsError, delay: Duration| {
        let _ = warn.send(format!(
            "part {number}: UploadPart try {try_no} of {attempts} failed ({e}); trying again in {:.1} s",
            delay.as_secs_f64()
        ));
    };
    let out = retry(policy, &cancelled, &on_retry, || {
        let req = s3
            .upload_part()
            .bucket(&bucket)
            .key(&key)
            .upload_id(&upload_id)
            .part_number(number)
            .content_length(len)
            .content_md5(&md5)
            .body(ByteStream::from(data.clone()));
        let endpoint = endpoint.clone();
        async move {
            let out = req.send().await.map_err(|e| AwsError::from_sdk("UploadPart", &endpoint, e))?;
            let etag = out.e_tag().unwrap_or_default().to_string();
            Ok(CompletedPart::builder().e_tag(etag).part_number(number).build())
        }
    })
    .await;
    (n, out.map(|(cp, tries)| (cp, sum, tries)))
}

/// Starts ImportSnapshot of `s3://bucket/key` (raw) and waits for the snapshot.
pub fn import_snapshot(
    aws: &Aws,
    bucket: &str,
    key: &str,
    description: &str,
    timeout: Duration,
    report: &dyn Report,
) -> Result<String, PushError> {
    report.activity(&format!("Importing s3://{bucket}/{key} as a snapshot (ImportSnapshot at {})", aws.endpoint));
    let container = SnapshotDiskContainer::builder()
        .description(description)
        .format("RAW")
        .user_bucket(UserBucket::builder().s3_bucket(bucket).s3_key(key).build())
        .build();
    let out = aws
        .runtime
        .block_on(aws.ec2.import_snapshot().description(description).disk_container(container).send())
        .map_err(|e| AwsError::from_sdk("ImportSnapshot", &aws.endpoint, e))?;
    let task = out
        .import_task_id()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AwsError::other("ImportSnapshot", &aws.endpoint, "the answer has no import task id"))?
        .to_string();
    report.info(&format!("import task {task} started"));
    let started = Instant::now();
    loop {
        let out = aws
            .runtime
            .block_on(aws.ec2.describe_import_snapshot_tasks().import_task_ids(&task).send())
            .map_err(|e| AwsError::from_sdk("DescribeImportSnapshotTasks", &aws.endpoint, e))?;
        let detail = out.import_snapshot_tasks().first().and_then(|t| t.snapshot_task_detail());
        let status = detail.and_then(|d| d.status()).unwrap_or("unknown");
        match status {
            "completed" => {
                return detail
                    .and_then(|d| d.snapshot_id())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(|| PushError::Failed(format!("import task {task} completed without a snapshot id")));
            }
            "deleting" | "deleted" | "error" => {
                let why = detail.and_then(|d| d.status_message()).unwrap_or("no reason given");
                return Err(PushError::Failed(format!("import task {task} failed: {why}")));
            }
            _ => {
                let progress = detail.and_then(|d| d.progress()).unwrap_or("?");
                report.activity(&format!("Waiting for import task {task} ({status}, {progress}%)"));
            }
        }
        if started.elapsed() >= timeout {
            return Err(PushError::Failed(format!("import task {task} did not finish within {} s", timeout.as_secs())));
        }
        if report.cancelled() {
            return Err(PushError::Cancelled);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// Removes the uploaded object (after the import, or at delete time).
pub fn remove_object(aws: &Aws, bucket: &str, key: &str) -> Result<(), PushError> {
    aws.runtime
        .block_on(aws.s3.delete_object().bucket(bucket).key(key).send())
        .map_err(|e| AwsError::from_sdk("DeleteObject", &aws.endpoint, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_stays_within_the_memory_budget() {
        assert_eq!(concurrency(8 * MIB, 4), 4);
        assert_eq!(concurrency(200 * MIB, 4), 1);
    }
}
