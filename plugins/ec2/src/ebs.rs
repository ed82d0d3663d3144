//! Pushing a raw disk image into a new EBS snapshot with the EBS direct APIs.
//!
//! StartSnapshot, then PutSnapshotBlock for every 512 KiB block that holds data (holes
//! and zero blocks are skipped: an unwritten block of a snapshot reads as zeros), several
//! at once, each with its SHA-256 (base64) for the service to check, then
//! CompleteSnapshot with the number of blocks sent. The file is read block by block with
//! one buffer per block in flight, so memory stays the same whatever the image's size.
//! A failed block is tried again with backoff ([`crate::retry`]); when the push fails
//! after StartSnapshot, the unfinished snapshot is deleted (best effort).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ebs::types::{ChecksumAlgorithm, Tag};
use aws_smithy_types::byte_stream::ByteStream;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::aws::Aws;
use crate::blocks::{DataBlocks, EBS_BLOCK_SIZE};
use crate::error::AwsError;
use crate::report::Report;
use crate::retry::{retry, RetryError, RetryPolicy};
use crate::PushError;

const GIB: u64 = 1 << 30;

/// How to push.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    pub description: String,
    /// Tags put on the snapshot (they find it again at delete time).
    pub tags: Vec<(String, String)>,
    /// PutSnapshotBlock calls in flight at once.
    pub concurrency: usize,
    pub retry: RetryPolicy,
}

/// What a finished push did.
#[derive(Debug, Clone)]
pub struct SnapshotStats {
    pub snapshot_id: String,
    pub volume_gib: u64,
    /// Blocks sent (the ChangedBlocksCount).
    pub blocks: u64,
    /// Bytes of block data sent (without retries).
    pub bytes: u64,
    /// Blocks of the image, data or not.
    pub total_blocks: u64,
    /// Tries beyond the first, over all blocks.
    pub retries: u32,
    pub elapsed: Duration,
}

/// Size in GiB of the volume a snapshot of `bytes` needs (at least 1).
pub fn volume_gib(bytes: u64) -> u64 {
    bytes.div_ceil(GIB).max(1)
}

/// Pushes `body` (a raw disk image) into a new snapshot; returns once it is completed
/// on the EBS side (the EC2 side may still say `pending`: see [`crate::ami::wait_snapshot`]).
pub fn push_snapshot(
    aws: &Aws,
    body: &Path,
    opts: &SnapshotOptions,
    report: &dyn Report,
) -> Result<SnapshotStats, PushError> {
    let reader = DataBlocks::open(body, EBS_BLOCK_SIZE).map_err(|e| PushError::io("read", body, e))?;
    let gib = volume_gib(reader.size());
    let started = Instant::now();
    let tags: Vec<Tag> = opts.tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect();
    let start = aws
        .runtime
        .block_on(
            aws.ebs
                .start_snapshot()
                .volume_size(gib as i64)
                .description(&opts.description)
                .set_tags(Some(tags))
                // Minutes until an unfinished snapshot is given up by EBS (the default 60).
                .timeout(60)
                .send(),
        )
        .map_err(|e| AwsError::from_sdk("StartSnapshot", &aws.endpoint, e))?;
    let snapshot_id = start
        .snapshot_id()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| AwsError::other("StartSnapshot", &aws.endpoint, "the answer has no snapshot id"))?
        .to_string();
    report.info(&format!("started snapshot {snapshot_id} ({gib} GiB) at {}", aws.endpoint));

    match send_blocks(aws, &snapshot_id, reader, opts, report) {
        Ok((blocks, bytes, total_blocks, retries)) => {
            report.activity(&format!("Completing snapshot {snapshot_id}"));
            let done = aws
                .runtime
                .block_on(
                    aws.ebs
                        .complete_snapshot()
                        .snapshot_id(&snapshot_id)
                        .changed_blocks_count(i32::try_from(blocks).unwrap_or(i32::MAX))
                        .send(),
                )
                .map_err(|e| AwsError::from_sdk("CompleteSnapshot", &aws.endpoint, e));
            match done {
                Ok(out) => {
                    let status = out.status().map(|s| s.as_str().to_string()).unwrap_or_default();
                    if status == "error" {
                        abandon(aws, &snapshot_id, report);
                        return Err(PushError::Failed(format!(
                            "CompleteSnapshot at {} put snapshot {snapshot_id} in state error",
                            aws.endpoint
                        )));
                    }
                    Ok(SnapshotStats {
                        snapshot_id,
                        volume_gib: gib,
                        blocks,
                        bytes,
                        total_blocks,
                        retries,
                        elapsed: started.elapsed(),
                    })
                }
                Err(e) => {
                    abandon(aws, &snapshot_id, report);
                    Err(e.into())
                }
            }
        }
        Err(e) => {
            abandon(aws, &snapshot_id, report);
            Err(e)
        }
    }
}

/// Deletes an unfinished snapshot; a failure is only logged (EBS gives it up by itself
/// after the StartSnapshot timeout).
fn abandon(aws: &Aws, snapshot_id: &str, report: &dyn Report) {
    match aws.runtime.block_on(aws.ec2.delete_snapshot().snapshot_id(snapshot_id).send()) {
        Ok(_) => report.info(&format!("deleted the unfinished snapshot {snapshot_id}")),
        Err(e) => report.warn(&format!(
            "could not delete the unfinished snapshot {snapshot_id} (EBS abandons it within 60 minutes): {}",
            AwsError::from_sdk("DeleteSnapshot", &aws.endpoint, e)
        )),
    }
}

/// The result of one block's upload task.
type BlockOutcome = Result<u32, RetryError>;

/// Reads the data blocks and puts them, `opts.concurrency` at a time. Returns (blocks
/// sent, bytes sent, blocks in the image, retries).
fn send_blocks(
    aws: &Aws,
    snapshot_id: &str,
    mut reader: DataBlocks,
    opts: &SnapshotOptions,
    report: &dyn Report,
) -> Result<(u64, u64, u64, u32), PushError> {
    let total_blocks = reader.block_count();
    let size = reader.size();
    let stop = Arc::new(AtomicBool::new(false));
    let (warn_tx, mut warn_rx) = mpsc::unbounded_channel::<String>();
    let concurrency = opts.concurrency.max(1);

    aws.runtime.block_on(async {
        let mut tasks: JoinSet<(u64, BlockOutcome)> = JoinSet::new();
        let (mut sent, mut bytes, mut retries) = (0u64, 0u64, 0u32);
        let mut reading = true;
        let mut last_report = Instant::now();
        let result = loop {
            // Reading happens here, on the blocking thread; hashing and sending on the workers.
            let mut read_error = None;
            while reading && tasks.len() < concurrency {
                let mut buf = Vec::with_capacity(EBS_BLOCK_SIZE);
                match reader.next_block(&mut buf) {
                    Ok(Some(index)) => {
                        bytes += buf.len() as u64;
                        tasks.spawn(put_block(
                            aws.ebs_data.clone(),
                            aws.endpoint.clone(),
                            snapshot_id.to_string(),
                            index,
                            buf,
                            opts.retry,
                            stop.clone(),
                            warn_tx.clone(),
                        ));
                    }
                    Ok(None) => reading = false,
                    Err(e) => {
                        read_error = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = read_error {
                break Err(PushError::io("read", Path::new("the target image"), e));
            }
            let Some(joined) = tasks.join_next().await else { break Ok(()) };
            while let Ok(line) = warn_rx.try_recv() {
                report.warn(&line);
            }
            match joined {
                Ok((_, Ok(tries))) => {
                    sent += 1;
                    retries += tries - 1;
                }
                Ok((index, Err(RetryError::Failed(e)))) => {
                    break Err(PushError::Failed(format!("block {index} of the image: {e}")));
                }
                Ok((_, Err(RetryError::Cancelled))) => break Err(PushError::Cancelled),
                Err(join) => break Err(PushError::Failed(format!("a block upload task ended abnormally: {join}"))),
            }
            if report.cancelled() {
                break Err(PushError::Cancelled);
            }
            if last_report.elapsed() > Duration::from_millis(250) {
                last_report = Instant::now();
                report.progress(reader.position(), size);
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
        report.progress(size, size);
        result.map(|()| (sent, bytes, total_blocks, retries))
    })
}

/// Hashes one block and puts it, trying again on transient failures. Returns the block
/// index and the number of tries it took.
#[allow(clippy::too_many_arguments)]
async fn put_block(
    ebs: aws_sdk_ebs::Client,
    endpoint: String,
    snapshot_id: String,
    index: u64,
    data: Vec<u8>,
    policy: RetryPolicy,
    stop: Arc<AtomicBool>,
    warn: mpsc::UnboundedSender<String>,
) -> (u64, BlockOutcome) {
    let checksum = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&data));
    let len = data.len() as i32;
    let data = bytes::Bytes::from(data);
    let Ok(block_index) = i32::try_from(index) else {
        let e = AwsError::other("PutSnapshotBlock", &endpoint, format!("block index {index} is too large for EBS"));
        return (index, Err(RetryError::Failed(e)));
    };
    let cancelled = || stop.load(Ordering::SeqCst);
    let on_retry = |try_no: u32, attempts: u32, e: &AwsError, delay: Duration| {
        let _ = warn.send(format!(
            "block {index}: PutSnapshotBlock try {try_no} of {attempts} failed ({e}); trying again in {:.1} s",
            delay.as_secs_f64()
        ));
    };
    let out = retry(policy, &cancelled, &on_retry, || {
        let req = ebs
            .put_snapshot_block()
            .snapshot_id(&snapshot_id)
            .block_index(block_index)
            .block_data(ByteStream::from(data.clone()))
            .data_length(len)
            .checksum(&checksum)
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256);
        let (endpoint, checksum) = (endpoint.clone(), checksum.clone());
        async move {
            let answer = req.send().await.map_err(|e| AwsError::from_sdk("PutSnapshotBlock", &endpoint, e))?;
            // The service echoes the checksum it computed; a different one means corruption.
            match answer.checksum() {
                Some(c) if c != checksum => Err(AwsError::other(
                    "PutSnapshotBlock",
                    &endpoint,
                    "the service's checksum of the block differs from the data sent",
                )),
                _ => Ok(()),
            }
        }
    })
    .await;
    (index, out.map(|((), tries)| tries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_sizes_round_up_to_whole_gib() {
        assert_eq!(volume_gib(0), 1);
        assert_eq!(volume_gib(64 << 20), 1);
        assert_eq!(volume_gib(GIB), 1);
        assert_eq!(volume_gib(GIB + 1), 2);
        assert_eq!(volume_gib(8 * GIB), 8);
    }
}
