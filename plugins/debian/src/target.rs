//! `create_target_image`: the second stage, a copy of the base image with a target's
//! content applied (a cloud's in-image changes, the packages the host's
//! target_content.xml names for that target).
//!
//! The base body is copied sparsely (never modified), and its root partition entered
//! with [`Chroot::on_image`]: loop-mounted in a private mount namespace only while each
//! step runs. Steps, in Oz's order: packages (`apt-get update` then install), files,
//! commands. With no content the copy is all there is.

use std::path::Path;

use diskimage::chroot::{Chroot, ImagePartition};
use diskimage::layout::{self, SECTOR};
use diskimage::process::{self, Options};
use diskimage::DiskError;
use imagefactory_plugin_api::prelude::*;
use imagefactory_plugin_api::tdl;

use crate::build::HostWatch;
use crate::customize;
use crate::error::DebianError;

/// Makes the target body from the base body and applies `req.content`.
pub fn create_target_image(host: &Host, req: &TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
    apply(host, req).map_err(|e| {
        for line in e.tail() {
            host.warn(line);
        }
        match e {
            DebianError::Disk(DiskError::Cancelled) => PluginError::cancelled(),
            other => PluginError::new(other.to_string()),
        }
    })
}

fn apply(host: &Host, req: &TargetImageRequest) -> Result<TargetImageOutcome, DebianError> {
    let debug = HostWatch { host, level: LogLevel::Debug };
    let body = host.body_path();
    host.activity(&format!("Copying the base image for the {} target", req.target));
    sparse_copy(Path::new(&req.base_body_path), &body, &debug)?;
    let content = &req.content;
    if content.is_empty() {
        return Ok(TargetImageOutcome::default());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DebianError::Disk(DiskError::Unexpected(
            "the Debian plugin needs root to apply target content (loop mount and chroot)".into(),
        )));
    }
    let chroot = enter(host, &body)?;
    if !content.packages.is_empty() {
        host.activity(&format!("Installing {} packages for the {} target", content.packages.len(), req.target));
        customize::apt_update(&chroot, &debug)?;
        let names: Vec<&str> = content.packages.iter().map(String::as_str).collect();
        customize::install_packages(&chroot, &names, &debug)?;
        customize::clean_apt(&chroot, &debug)?;
    }
    if !content.files.is_empty() || !content.commands.is_empty() {
        host.activity(&format!("Applying the {} target's files and commands", req.target));
    }
    for f in &content.files {
        customize::write_file(&chroot, &as_tdl_file(f), &debug)?;
    }
    for c in &content.commands {
        host.info(&format!("Running target command '{}'", c.name));
        customize::run_command(&chroot, &as_tdl_command(c), "target command", &debug)?;
        if host.is_cancelled() {
            return Err(DebianError::Disk(DiskError::Cancelled));
        }
    }
    // The target's packages changed: its SBOM lists them as they are now.
    let release = tdl::Template::parse(&req.template, &tdl::ParseOptions::default())
        .ok()
        .and_then(|t| crate::release::Release::parse(&t.os.version).ok())
        .map(|r| r.number)
        .unwrap_or(0);
    let (packages, licenses) = crate::sbom::collect(&chroot, release, &debug)?;
    crate::build::write_sbom(host, &packages, &licenses)?;
    let mut properties = Parameters::new();
    properties.insert("target_content_applied".into(), true.into());
    Ok(TargetImageOutcome { icicle: None, properties })
}

/// The root partition of `image` (the first Linux partition), entered through a
/// mountpoint and a stage directory in the work dir.
fn enter(host: &Host, image: &Path) -> Result<Chroot, DebianError> {
    let table = layout::read(image)?;
    let part = table
        .partitions
        .iter()
        .find(|p| p.kind == "83" || p.kind.eq_ignore_ascii_case("0FC63DAF-8483-4772-8E79-3D69D8477DE4"))
        .ok_or_else(|| DiskError::Unexpected("the base image has no Linux partition to apply content to".into()))?;
    let work = host.work_dir();
    let mountpoint = work.join("mnt");
    let stage = work.join("stage");
    for d in [&mountpoint, &stage] {
        std::fs::create_dir_all(d).map_err(|e| DiskError::io("cannot create", d, e))?;
    }
    let partition =
        ImagePartition { image: image.to_path_buf(), offset: part.start * SECTOR, size: part.size * SECTOR, stage };
    Ok(Chroot::on_image(partition, mountpoint))
}

/// `cp --sparse=always`: holes stay holes, so a 2 GiB image with 0.7 GiB of data costs
/// 0.7 GiB (or nothing, on a file system with reflinks).
fn sparse_copy(from: &Path, to: &Path, watch: &HostWatch) -> Result<(), DiskError> {
    let mut cmd = std::process::Command::new("cp");
    cmd.args(["--sparse=always", "--reflink=auto", "--"]).arg(from).arg(to);
    process::run("copying the base image", cmd, Options::default(), watch)?;
    Ok(())
}

fn content_type(e: ContentEncoding) -> tdl::ContentType {
    match e {
        ContentEncoding::Raw => tdl::ContentType::Raw,
        ContentEncoding::Base64 => tdl::ContentType::Base64,
    }
}

fn as_tdl_file(f: &ContentFile) -> tdl::File {
    tdl::File { name: f.name.clone(), content_type: content_type(f.encoding), content: f.file.clone() }
}

fn as_tdl_command(c: &ContentCommand) -> tdl::Command {
    tdl::Command { name: c.name.clone(), content_type: content_type(c.encoding), content: c.command.clone() }
}
