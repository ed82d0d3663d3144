//! The EC2 cloud plugin: target `ec2`.
//!
//! Target image: the base image as a raw disk (qemu-img), read back before the build is
//! COMPLETE. The original's common cloud changes (no persistent NIC names, a cloud-info
//! file; see `cloudkit::content`) go to the OS plugin's second stage as target content;
//! with them turned off (`cloud_modifications` or `skip_ec2_modifications`) and no host
//! content either, the raw body is converted straight from the base image, never copied
//! first.
//!
//! Push ([`ebs`], the default, `ec2_ami_type`/`ec2_upload` = `ebs`): the EBS direct APIs
//! write the image's data blocks into a new snapshot (sparse, parallel, SHA-256 checked,
//! retried), then RegisterImage makes an HVM AMI of it (root device `/dev/xvda`, ENA).
//! The `s3` method ([`s3`]) uploads the body to the provider's `s3_bucket` by multipart
//! upload and has EC2's ImportSnapshot make the snapshot instead. The provider image's
//! `identifier_on_provider` is the AMI id, its `provider_account_identifier` the access
//! key id (not secret).
//!
//! Delete deregisters the AMI and deletes the snapshots made for it ([`ami`]). Snapshot
//! builds (a JEOS instance customized over SSH) are not done by this plugin.
//!
//! Parameters:
//! - target: `cloud_modifications` / `skip_ec2_modifications` (the original's name):
//!   turn the common cloud changes off; `ec2_flatten` true is refused (flat images need a
//!   paravirtual pv-grub kernel, which EC2 has retired); `ec2_modify` is accepted and
//!   ignored (its pv-grub and rc.local changes are cloud-init's job on HVM images).
//! - push: `ec2_ami_type` or `ec2_upload` (`ebs` | `s3`; the host setting `ec2_ami_type`
//!   is the default), `ec2_virt_type` (`hvm` only), `ec2_ami_name`,
//!   `ec2_upload_concurrency` (requests in flight, 1-32), `ec2_snapshot_timeout` and
//!   `ec2_import_timeout` (seconds), `ec2_ena_support` (true).
//!
//! Credentials ([`credentials`]) are used for the request only: never logged, stored or
//! returned.

pub mod ami;
pub mod aws;
pub mod blocks;
pub mod credentials;
pub mod ebs;
pub mod error;
pub mod params;
pub mod provider;
pub mod report;
pub mod retry;
pub mod s3;

use std::path::{Path, PathBuf};

use imagefactory_plugin_api::prelude::*;
use serde_json::Value;

use crate::error::AwsError;
use crate::params::{PushOptions, UploadMethod};
use crate::report::Report;

/// The targets this plugin builds for.
pub const TARGETS: &[&str] = &["ec2"];

/// Why a push or delete failed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Aws(#[from] AwsError),
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
}

impl PushError {
    pub fn io(what: &'static str, path: &Path, source: std::io::Error) -> PushError {
        PushError::Io { what, path: path.to_path_buf(), source }
    }
}

impl From<PushError> for PluginError {
    fn from(e: PushError) -> PluginError {
        match e {
            PushError::Cancelled => PluginError::cancelled(),
            PushError::Aws(a) => PluginError { message: PluginError::new(a.to_string()).message, chain: a.chain },
            other => PluginError::new(other.to_string()),
        }
    }
}

/// The host as a [`Report`]: progress mapped into `lo..=hi` percent.
struct HostReport<'a, 'h> {
    host: &'a Host<'h>,
    lo: u8,
    hi: u8,
}

impl Report for HostReport<'_, '_> {
    fn activity(&self, line: &str) {
        self.host.activity(line);
    }
    fn info(&self, line: &str) {
        self.host.info(line);
    }
    fn warn(&self, line: &str) {
        self.host.warn(line);
    }
    fn progress(&self, done: u64, total: u64) {
        let span = u64::from(self.hi.saturating_sub(self.lo));
        let pct = done.saturating_mul(span).checked_div(total).unwrap_or(span).min(span);
        self.host.percent(self.lo + pct as u8);
    }
    fn cancelled(&self) -> bool {
        self.host.is_cancelled()
    }
}

fn disk_error(e: diskformat::DiskFormatError) -> PluginError {
    match e {
        diskformat::DiskFormatError::Cancelled => PluginError::cancelled(),
        other => PluginError::new(other.to_string()),
    }
}

/// Converts `src` into the raw target body at `dst` and checks it.
fn make_target_body(host: &Host, src: &Path, dst: &Path) -> Result<(), PluginError> {
    let source = diskformat::info(src).map_err(disk_error)?;
    if source.backing_file.is_some() {
        return Err(PluginError::new(format!(
            "{} has a backing file; cannot make a target image of it",
            src.display()
        )));
    }
    if !(src == dst && source.format == "raw") {
        host.activity(&format!("Converting the {} image to raw for ec2", source.format));
        let opts = diskformat::ConvertOptions::default();
        diskformat::convert(src, &source.format, dst, "raw", &opts, &mut |p| host.percent(p as u8), &|| {
            host.is_cancelled()
        })
        .map_err(disk_error)?;
    }
    host.activity("Checking the target image");
    let got = diskformat::verify(dst, "raw", Some(source.virtual_size)).map_err(disk_error)?;
    host.info(&format!(
        "target image for ec2: raw, virtual size {} bytes, {} bytes on disk",
        got.virtual_size, got.actual_size
    ));
    Ok(())
}

/// The template's name, description and arch, when it parses.
fn template_facts(template: &str) -> (Option<String>, Option<String>, String) {
    let opts = imagefactory_plugin_api::tdl::ParseOptions::default();
    match imagefactory_plugin_api::tdl::Template::parse(template, &opts) {
        Ok(t) => {
            let name = Some(t.name.trim().to_string()).filter(|n| !n.is_empty());
            (name, t.description.clone(), t.os.arch.clone())
        }
        Err(_) => (None, None, "x86_64".to_string()),
    }
}

fn parse_request(
    provider: &str,
    credentials: &str,
) -> Result<(provider::Provider, credentials::Ec2Credentials), PluginError> {
    let p = provider::parse(provider).map_err(|e| PluginError::new(e.to_string()))?;
    let c = credentials::parse(credentials).map_err(|e| PluginError::new(e.to_string()))?;
    Ok((p, c))
}

fn connect(p: &provider::Provider, c: &credentials::Ec2Credentials) -> Result<aws::Aws, PluginError> {
    aws::Aws::connect(p, c).map_err(|e| PluginError::new(e.to_string()))
}

/// The S3 key the `s3` method uploads a target image to.
pub fn s3_key(target_image_id: &str) -> String {
    format!("imagefactory/{target_image_id}.raw")
}

/// The plugin object.
pub struct Ec2;

impl Ec2 {
    fn push(&self, host: &Host, req: &PushRequest) -> Result<ProviderOutcome, PluginError> {
        let opts = params::push_options(&req.parameters, &req.settings)?;
        let (provider, creds) = parse_request(&req.provider, &req.credentials)?;
        if !provider.ignored.is_empty() {
            host.info(&format!(
                "provider definition keys {} are for paravirtual AMIs and have no effect here",
                provider.ignored.join(", ")
            ));
        }
        let body = Path::new(&req.target_body_path);
        let info = diskformat::verify(body, "raw", None).map_err(|e| {
            PluginError::new(format!("the ec2 target image must be a raw disk: {}", disk_error(e).message))
        })?;
        let (tdl_name, tdl_description, arch) = template_facts(&req.template);
        let architecture = ami::architecture(&arch).map_err(PluginError::new)?;
        let aws = connect(&provider, &creds)?;
        let description = tdl_description
            .or(tdl_name.clone())
            .map(|d| format!("{d} (imagefactory target image {})", req.target_image_id))
            .unwrap_or_else(|| format!("imagefactory target image {}", req.target_image_id));

        let mut props = serde_json::Map::new();
        props.insert("ec2_region".into(), Value::String(provider.region.clone()));
        if let Some(e) = &provider.endpoint {
            props.insert("ec2_endpoint".into(), Value::String(e.clone()));
        }
        let (snapshot_id, gib) = match opts.method {
            UploadMethod::Ebs => self.push_ebs(host, &aws, body, &opts, req, &description)?,
            UploadMethod::S3 => self.push_s3(host, &aws, &provider, body, &opts, req, &description)?,
        };
        props.insert("ec2_upload".into(), Value::String(opts.method.as_str().into()));
        props.insert("ec2_snapshot_id".into(), Value::String(snapshot_id.clone()));

        let spec = ami::AmiSpec {
            name: opts.ami_name.clone().unwrap_or_else(|| format!("ImageFactory created AMI - {}", req.image_id)),
            description,
            architecture,
            snapshot_id: snapshot_id.clone(),
            volume_gib: gib.max(ebs::volume_gib(info.virtual_size)),
            image_id: req.image_id.clone(),
            ena_support: opts.ena_support,
        };
        host.activity(&format!("Registering AMI \"{}\" at {}", spec.name, aws.endpoint));
        host.percent(95);
        let ami_id = match ami::register(&aws, &spec) {
            Ok(id) => id,
            Err(e) => {
                // Leave no orphan snapshot behind (best effort, uncancellable).
                match aws.runtime.block_on(aws.ec2.delete_snapshot().snapshot_id(&snapshot_id).send()) {
                    Ok(_) => host.info(&format!("deleted snapshot {snapshot_id} after the failed RegisterImage")),
                    Err(d) => host.warn(&format!(
                        "could not delete snapshot {snapshot_id}: {}",
                        AwsError::from_sdk("DeleteSnapshot", &aws.endpoint, d)
                    )),
                }
                return Err(e.into());
            }
        };
        host.info(&format!(
            "registered {ami_id} (hvm, root {}, snapshot {snapshot_id}) at {}",
            ami::ROOT_DEVICE,
            aws.endpoint
        ));
        let mut out = ProviderOutcome::new(ami_id);
        out.provider_account_identifier = Some(creds.access_key.clone());
        out.properties = props;
        Ok(out)
    }

    fn push_ebs(
        &self,
        host: &Host,
        aws: &aws::Aws,
        body: &Path,
        opts: &PushOptions,
        req: &PushRequest,
        description: &str,
    ) -> Result<(String, u64), PluginError> {
        host.activity(&format!("Writing the image into a new EBS snapshot at {}", aws.endpoint));
        let sopts = ebs::SnapshotOptions {
            description: description.to_string(),
            tags: vec![
                (ami::IMAGE_TAG.to_string(), req.image_id.clone()),
                ("ImageFactoryTargetImage".to_string(), req.target_image_id.clone()),
            ],
            concurrency: opts.concurrency.unwrap_or(8),
            retry: opts.retry,
        };
        let report = HostReport { host, lo: 5, hi: 90 };
        let stats = ebs::push_snapshot(aws, body, &sopts, &report)?;
        let secs = stats.elapsed.as_secs_f64().max(1e-6);
        let mib = stats.bytes as f64 / 1048576.0;
        host.info(&format!(
            "uploaded {mib:.1} MiB of data ({} of {} blocks; the rest holds no data) to snapshot {} in {secs:.2} s \
             ({:.1} MiB/s, {} retr{}){}",
            stats.blocks,
            stats.total_blocks,
            stats.snapshot_id,
            mib / secs,
            stats.retries,
            if stats.retries == 1 { "y" } else { "ies" },
            cloudkit::report::peak_rss_note()
        ));
        host.activity(&format!("Waiting for snapshot {} to complete", stats.snapshot_id));
        if let Err(e) = ami::wait_snapshot(aws, &stats.snapshot_id, opts.snapshot_timeout, &report) {
            let _ = aws.runtime.block_on(aws.ec2.delete_snapshot().snapshot_id(&stats.snapshot_id).send());
            return Err(e.into());
        }
        Ok((stats.snapshot_id, stats.volume_gib))
    }

    #[allow(clippy::too_many_arguments)]
    fn push_s3(
        &self,
        host: &Host,
        aws: &aws::Aws,
        provider: &provider::Provider,
        body: &Path,
        opts: &PushOptions,
        req: &PushRequest,
        description: &str,
    ) -> Result<(String, u64), PluginError> {
        let bucket = provider
            .s3_bucket
            .as_deref()
            .ok_or_else(|| PluginError::new("the s3 upload method needs an s3_bucket in the provider definition"))?;
        let key = s3_key(&req.target_image_id);
        let report = HostReport { host, lo: 5, hi: 80 };
        let stats = s3::upload(aws, bucket, &key, body, opts.retry, opts.concurrency.unwrap_or(4), &report)?;
        if !stats.reused {
            let secs = stats.elapsed.as_secs_f64().max(1e-6);
            let mib = stats.size as f64 / 1048576.0;
            host.info(&format!(
                "uploaded {mib:.1} MiB to s3://{bucket}/{key} in {} parts, ETag {}, in {secs:.2} s ({:.1} MiB/s, {} retr{}){}",
                stats.parts,
                stats.etag,
                mib / secs,
                stats.retries,
                if stats.retries == 1 { "y" } else { "ies" },
                cloudkit::report::peak_rss_note()
            ));
        }
        let report = HostReport { host, lo: 80, hi: 94 };
        let snapshot_id = match s3::import_snapshot(aws, bucket, &key, description, opts.import_timeout, &report) {
            Ok(s) => s,
            Err(e) => {
                host.warn(&format!(
                    "the uploaded image stays at s3://{bucket}/{key}; another push of target image {} reuses it",
                    req.target_image_id
                ));
                return Err(e.into());
            }
        };
        ami::tag_snapshot(aws, &snapshot_id, &req.image_id)?;
        host.info(&format!("import made snapshot {snapshot_id}"));
        match s3::remove_object(aws, bucket, &key) {
            Ok(()) => host.info(&format!("removed s3://{bucket}/{key}: the snapshot holds the image now")),
            Err(e) => host.warn(&format!("could not remove s3://{bucket}/{key}: {e}")),
        }
        Ok((snapshot_id, ebs::volume_gib(stats.size)))
    }
}

impl CloudPlugin for Ec2 {
    fn builder_should_create_target_image(&self, host: &Host, req: TargetHookRequest) -> Result<bool, PluginError> {
        let ours = params::target_content(&req.target, &req.parameters, &req.settings, &mut |w| host.warn(w))?;
        Ok(!cloudkit::content::merged(ours, &req.content).is_empty())
    }

    fn builder_will_create_target_image(
        &self,
        host: &Host,
        req: TargetHookRequest,
    ) -> Result<TargetContent, PluginError> {
        let ours = params::target_content(&req.target, &req.parameters, &req.settings, &mut |_| {})?;
        let content = cloudkit::content::merged(ours, &req.content);
        if content.is_empty() {
            // Nothing for the OS plugin to apply: convert straight from the base image.
            make_target_body(host, Path::new(&req.base_body_path), &host.body_path())?;
        }
        Ok(content)
    }

    fn builder_did_create_target_image(&self, host: &Host, _req: TargetHookRequest) -> Result<(), PluginError> {
        let body = host.body_path();
        make_target_body(host, &body, &body)
    }

    fn push_image_to_provider(&self, host: &Host, req: PushRequest) -> Result<ProviderOutcome, PluginError> {
        self.push(host, &req)
    }

    fn snapshot_image_on_provider(&self, _host: &Host, _req: SnapshotRequest) -> Result<ProviderOutcome, PluginError> {
        Err(PluginError::new(
            "This EC2 plugin does not do snapshot builds (they need a JEOS instance customized over SSH): \
             build an ec2 target image and push it instead",
        ))
    }

    fn delete_from_provider(&self, host: &Host, req: DeleteRequest) -> Result<(), PluginError> {
        let ami_id = req.provider_id();
        let (provider, creds) = parse_request(&req.provider, &req.credentials)?;
        let aws = connect(&provider, &creds)?;
        let report = HostReport { host, lo: 0, hi: 99 };
        let removed = ami::delete(&aws, ami_id, &req.image_id, &report)?;
        host.info(&format!(
            "removed from {}: {}{}",
            aws.endpoint,
            if removed.ami { ami_id.unwrap_or("") } else { "no AMI" },
            if removed.snapshots.is_empty() {
                ", no snapshots".to_string()
            } else {
                format!(", snapshots {}", removed.snapshots.join(" "))
            }
        ));
        Ok(())
    }
}

fn manifest() -> Manifest {
    Manifest::cloud(
        "EC2",
        "1.0",
        "EC2 cloud plugin: raw target images pushed as EBS snapshots and registered AMIs",
        TARGETS,
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(Ec2),
}

/// Used by the benchmark: a push of `body` into a new snapshot with no host around.
pub fn bench_push(
    provider_json: &str,
    credentials_xml: &str,
    body: &Path,
    concurrency: usize,
) -> Result<ebs::SnapshotStats, PushError> {
    let (p, c) = parse_request(provider_json, credentials_xml).map_err(|e| PushError::Failed(e.message))?;
    let aws = aws::Aws::connect(&p, &c).map_err(|e| PushError::Failed(e.to_string()))?;
    let opts = ebs::SnapshotOptions {
        description: "imagefactory benchmark".into(),
        tags: vec![],
        concurrency,
        retry: retry::RetryPolicy::default(),
    };
    ebs::push_snapshot(&aws, body, &opts, &report::Quiet)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_examples_parse() {
        let p = provider::parse(include_str!("../../../conf/examples/ec2-provider.json")).unwrap();
        assert_eq!((p.region.as_str(), p.s3_bucket.as_deref()), ("us-east-1", Some("my-imagefactory-uploads")));
        let c = credentials::parse(include_str!("../../../conf/examples/ec2-credentials.xml")).unwrap();
        assert_eq!(c.access_key, "AKIAIOSFODNN7EXAMPLE");
    }

    #[test]
    fn template_facts_and_keys() {
        let tdl = "<template><name>f</name><description>d</description><os><name>Fedora</name><version>40</version>\
                   <arch>aarch64</arch><install type='url'><url>http://example.invalid/</url></install></os></template>";
        assert_eq!(template_facts(tdl), (Some("f".into()), Some("d".into()), "aarch64".into()));
        assert_eq!(template_facts("junk").2, "x86_64");
        assert_eq!(s3_key("t1"), "imagefactory/t1.raw");
    }

    #[test]
    fn push_errors_become_one_line_plugin_errors() {
        let e: PluginError = PushError::Cancelled.into();
        assert_eq!(e, PluginError::cancelled());
        let e: PluginError = PushError::Failed("a\nb".into()).into();
        assert_eq!(e.message, "a b");
    }
}
