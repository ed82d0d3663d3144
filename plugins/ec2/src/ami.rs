//! AMIs and snapshots on the EC2 side: waiting for a snapshot, registering an HVM AMI
//! on it, and removing both again.
//!
//! Every snapshot the plugin makes carries the tag [`IMAGE_TAG`] = the provider image's
//! id. Delete deregisters the AMI and deletes the snapshots with that tag, and only
//! those: a snapshot the AMI maps but imagefactory did not make is left alone.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    ArchitectureValues, BlockDeviceMapping, EbsBlockDevice, Filter, ResourceType, SnapshotState, Tag, TagSpecification,
    VolumeType,
};

use crate::aws::Aws;
use crate::error::AwsError;
use crate::report::Report;
use crate::PushError;

/// The tag naming the provider image a snapshot (and AMI) was made for.
pub const IMAGE_TAG: &str = "ImageFactoryProviderImage";

/// The root device of the AMIs made here (full-disk HVM images).
pub const ROOT_DEVICE: &str = "/dev/xvda";

/// What to register.
#[derive(Debug, Clone)]
pub struct AmiSpec {
    pub name: String,
    pub description: String,
    pub architecture: ArchitectureValues,
    pub snapshot_id: String,
    pub volume_gib: u64,
    /// The provider image id, tagged on the AMI.
    pub image_id: String,
    pub ena_support: bool,
}

/// Waits until EC2 reports `snapshot_id` completed; fails on `error` or after `timeout`.
pub fn wait_snapshot(aws: &Aws, snapshot_id: &str, timeout: Duration, report: &dyn Report) -> Result<(), PushError> {
    let started = Instant::now();
    loop {
        let out = aws
            .runtime
            .block_on(aws.ec2.describe_snapshots().snapshot_ids(snapshot_id).send())
            .map_err(|e| AwsError::from_sdk("DescribeSnapshots", &aws.endpoint, e))?;
        let snap = out.snapshots().iter().find(|s| s.snapshot_id() == Some(snapshot_id));
        match snap.and_then(|s| s.state()) {
            Some(SnapshotState::Completed) => return Ok(()),
            Some(SnapshotState::Error) => {
                let why = snap.and_then(|s| s.state_message()).unwrap_or("no reason given");
                return Err(PushError::Failed(format!("snapshot {snapshot_id} failed on the provider: {why}")));
            }
            Some(state) => report.activity(&format!("Waiting for snapshot {snapshot_id} ({})", state.as_str())),
            None => report.activity(&format!("Waiting for snapshot {snapshot_id} to appear")),
        }
        if started.elapsed() >= timeout {
            return Err(PushError::Failed(format!(
                "snapshot {snapshot_id} was not completed within {} s",
                timeout.as_secs()
            )));
        }
        if report.cancelled() {
            return Err(PushError::Cancelled);
        }
        std::thread::sleep(Duration::from_secs(2).min(timeout));
    }
}

/// Registers an HVM AMI whose root device `/dev/xvda` is made from the snapshot.
pub fn register(aws: &Aws, spec: &AmiSpec) -> Result<String, PushError> {
    let root = BlockDeviceMapping::builder()
        .device_name(ROOT_DEVICE)
        .ebs(
            EbsBlockDevice::builder()
                .snapshot_id(&spec.snapshot_id)
                .volume_size(i32::try_from(spec.volume_gib).unwrap_or(i32::MAX))
                .volume_type(VolumeType::Gp3)
                .delete_on_termination(true)
                .build(),
        )
        .build();
    let tags = TagSpecification::builder()
        .resource_type(ResourceType::Image)
        .tags(Tag::builder().key(IMAGE_TAG).value(&spec.image_id).build())
        .build();
    let out = aws
        .runtime
        .block_on(
            aws.ec2
                .register_image()
                .name(&spec.name)
                .description(&spec.description)
                .architecture(spec.architecture.clone())
                .root_device_name(ROOT_DEVICE)
                .block_device_mappings(root)
                .virtualization_type("hvm")
                .ena_support(spec.ena_support)
                .tag_specifications(tags)
                .send(),
        )
        .map_err(|e| AwsError::from_sdk("RegisterImage", &aws.endpoint, e))?;
    out.image_id()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| AwsError::other("RegisterImage", &aws.endpoint, "the answer has no image id").into())
}

/// Tags a snapshot (ImportSnapshot cannot tag at creation).
pub fn tag_snapshot(aws: &Aws, snapshot_id: &str, image_id: &str) -> Result<(), PushError> {
    aws.runtime
        .block_on(
            aws.ec2
                .create_tags()
                .resources(snapshot_id)
                .tags(Tag::builder().key(IMAGE_TAG).value(image_id).build())
                .send(),
        )
        .map_err(|e| AwsError::from_sdk("CreateTags", &aws.endpoint, e))?;
    Ok(())
}

/// The snapshots tagged as made for provider image `image_id`.
pub fn tagged_snapshots(aws: &Aws, image_id: &str) -> Result<Vec<String>, PushError> {
    let out = aws
        .runtime
        .block_on(
            aws.ec2
                .describe_snapshots()
                .owner_ids("self")
                .filters(Filter::builder().name(format!("tag:{IMAGE_TAG}")).values(image_id).build())
                .send(),
        )
        .map_err(|e| AwsError::from_sdk("DescribeSnapshots", &aws.endpoint, e))?;
    Ok(out.snapshots().iter().filter_map(|s| s.snapshot_id()).map(str::to_string).collect())
}

/// What a delete removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub ami: bool,
    pub snapshots: Vec<String>,
}

/// Deregisters `ami_id` (when it still exists) and deletes the snapshots tagged for
/// provider image `image_id`.
pub fn delete(aws: &Aws, ami_id: Option<&str>, image_id: &str, report: &dyn Report) -> Result<Removed, PushError> {
    let mut removed = Removed::default();
    if let Some(ami) = ami_id {
        report.activity(&format!("Deregistering {ami} at {}", aws.endpoint));
        let found = aws
            .runtime
            .block_on(aws.ec2.describe_images().image_ids(ami).send())
            .map_err(|e| AwsError::from_sdk("DescribeImages", &aws.endpoint, e));
        let exists = match found {
            Ok(out) => out.images().iter().any(|i| i.image_id() == Some(ami)),
            Err(e) if e.code().is_some_and(|c| c.starts_with("InvalidAMIID")) => false,
            Err(e) => return Err(e.into()),
        };
        if exists {
            aws.runtime
                .block_on(aws.ec2.deregister_image().image_id(ami).send())
                .map_err(|e| AwsError::from_sdk("DeregisterImage", &aws.endpoint, e))?;
            removed.ami = true;
            report.info(&format!("deregistered {ami}"));
        } else {
            report.warn(&format!("{ami} was already gone from {}", aws.endpoint));
        }
    }
    for snap in tagged_snapshots(aws, image_id)? {
        report.activity(&format!("Deleting snapshot {snap}"));
        aws.runtime
            .block_on(aws.ec2.delete_snapshot().snapshot_id(&snap).send())
            .map_err(|e| AwsError::from_sdk("DeleteSnapshot", &aws.endpoint, e))?;
        report.info(&format!("deleted snapshot {snap}"));
        removed.snapshots.push(snap);
    }
    Ok(removed)
}

/// The EC2 architecture of a template's arch.
pub fn architecture(template_arch: &str) -> Result<ArchitectureValues, String> {
    match template_arch.trim() {
        "x86_64" | "amd64" | "" => Ok(ArchitectureValues::X8664),
        "aarch64" | "arm64" => Ok(ArchitectureValues::Arm64),
        "i386" | "i686" => Ok(ArchitectureValues::I386),
        other => Err(format!("EC2 has no architecture for the template's arch {other:?}")),
    }
}
