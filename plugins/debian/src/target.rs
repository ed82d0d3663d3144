//! `create_target_image`: the second stage, a copy of the base image with a target's
//! content applied (a cloud's in-image changes, the packages the host's
//! target_content.xml names for that target).
//!
//! The base body is only ever read. Steps, in Oz's order: packages (`apt-get update`
//! then install), files, commands. With no content a sparse copy is all there is.
//!
//! A base this plugin wrote ([`ours`]) is made into a target the reproducible way: its
//! tree is copied out ([`diskimage::extract`]), changed in a chroot with the base's
//! SOURCE_DATE_EPOCH, scrubbed and clamped as a base is, and written back by the pinned
//! mkfs with the base's UUID, hash seed and time, behind the base's own MBR and GRUB.
//! The same base and content make the same target, byte for byte. Any other base gets
//! the content applied in place ([`Chroot::on_image`]: loop-mounted in a private mount
//! namespace only while each step runs), which works on any Linux partition but is not
//! reproducible (the kernel's ext4 writes mount times, the mount point and a journal).

use std::io::{Read, Write};
use std::path::Path;

use diskimage::chroot::{Chroot, ImagePartition};
use diskimage::clamp::clamp_tree;
use diskimage::ext4::{Ext4, Pinned, Superblock};
use diskimage::extract::{self, Extent};
use diskimage::layout::{self, Layout, SECTOR};
use diskimage::process::{self, Options};
use diskimage::DiskError;
use imagefactory_plugin_api::prelude::*;
use imagefactory_plugin_api::tdl;

use crate::build::{epoch_secs, HostWatch, ROOT_LABEL};
use crate::error::DebianError;
use crate::{customize, scrub};

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
    let base = Path::new(&req.base_body_path);
    if req.content.is_empty() {
        host.activity(&format!("Copying the base image for the {} target", req.target));
        sparse_copy(base, &body, &debug)?;
        return Ok(TargetImageOutcome::default());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DebianError::Disk(DiskError::Unexpected(
            "the Debian plugin needs root to apply target content (loop mount and chroot)".into(),
        )));
    }
    match ours(base)? {
        Some(disk) => rebuild(host, req, base, &body, &disk, &debug)?,
        None => {
            host.info(
                "The base image's file system was not written by this plugin: the target's content is applied \
                 to it in place, and the target image is not reproducible",
            );
            host.activity(&format!("Copying the base image for the {} target", req.target));
            sparse_copy(base, &body, &debug)?;
            let chroot = enter(host, &body)?;
            apply_content(host, req, &chroot, &debug)?;
        }
    }
    let mut properties = Parameters::new();
    properties.insert("target_content_applied".into(), true.into());
    Ok(TargetImageOutcome { icicle: None, properties })
}

/// A base image's disk as this plugin writes it: a dos label with one Linux partition
/// holding an ext4 labelled [`ROOT_LABEL`] with its mkfs time set.
#[derive(Debug, Clone)]
pub struct BaseDisk {
    pub layout: Layout,
    pub superblock: Superblock,
}

/// The base's disk, if this plugin wrote it; `None` for any other (an imported image).
pub fn ours(base: &Path) -> Result<Option<BaseDisk>, DebianError> {
    let table = layout::read(base)?;
    let [part] = table.partitions.as_slice() else { return Ok(None) };
    if table.label != "dos" || part.kind != "83" {
        return Ok(None);
    }
    let disk_size = std::fs::metadata(base).map_err(|e| DiskError::io("cannot stat", base, e))?.len();
    let layout = Layout { disk_size, partition_start: part.start * SECTOR, partition_size: part.size * SECTOR };
    match Superblock::read(base, layout.partition_start) {
        Ok(sb) if sb.label == ROOT_LABEL && sb.mkfs_time > 0 => Ok(Some(BaseDisk { layout, superblock: sb })),
        _ => Ok(None),
    }
}

/// The reproducible way: the base's tree out, the content in, a pinned mkfs back.
fn rebuild(
    host: &Host,
    req: &TargetImageRequest,
    base: &Path,
    body: &Path,
    disk: &BaseDisk,
    watch: &HostWatch,
) -> Result<(), DebianError> {
    let work = host.work_dir();
    let root = work.join("root");
    let sb = &disk.superblock;
    host.activity(&format!("Copying the base image's files for the {} target", req.target));
    let extent = Extent { image: base, offset: disk.layout.partition_start, size: disk.layout.partition_size };
    extract::copy_out(extent, &work.join("mnt"), &root, watch)?;
    // The base's SOURCE_DATE_EPOCH is its file system's creation time (its pinned mkfs).
    let epoch = sb.mkfs_time;
    let chroot = Chroot::new(&root).with_env("SOURCE_DATE_EPOCH", &epoch.to_string());
    let services = chroot.hold_services()?;
    apply_content(host, req, &chroot, watch)?;
    services.release()?;
    let scrubbed = scrub::scrub(&root)?;
    if !scrubbed.is_empty() {
        host.info(&format!("Removed what differs between builds: {}", scrubbed.join(", ")));
    }

    host.activity(&format!("Writing the {} target image", req.target));
    clamp_tree(&root, epoch_secs(epoch))?;
    copy_boot_area(base, body, &disk.layout)?;
    let pinned = Pinned { hash_seed: sb.hash_seed.clone(), time: epoch };
    Ext4 { uuid: sb.uuid.clone(), label: sb.label.clone() }.write_pinned(body, &disk.layout, &root, &pinned, watch)?;
    // About a gigabyte: freed now rather than when the host gets to the work directory.
    if let Err(e) = std::fs::remove_dir_all(&root) {
        host.warn(&format!("cannot remove {}: {e} (the host removes the work directory)", root.display()));
    }
    Ok(())
}

/// `body` as a sparse file of the base's size holding the base's bytes before its
/// partition (MBR, partition table and GRUB's core.img): the boot loader the base was
/// made with, and zeros where mkfs writes next.
fn copy_boot_area(base: &Path, body: &Path, layout: &Layout) -> Result<(), DiskError> {
    let mut head = Vec::with_capacity(layout.partition_start as usize);
    std::fs::File::open(base)
        .and_then(|f| f.take(layout.partition_start).read_to_end(&mut head))
        .map_err(|e| DiskError::io("cannot read", base, e))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(body)
        .map_err(|e| DiskError::io("cannot create", body, e))?;
    out.write_all(&head)
        .and_then(|_| out.set_len(layout.disk_size))
        .and_then(|_| out.sync_all())
        .map_err(|e| DiskError::io("cannot write", body, e))
}

/// The target's packages, files and commands, applied in `chroot`, then its SBOM.
fn apply_content(host: &Host, req: &TargetImageRequest, chroot: &Chroot, watch: &HostWatch) -> Result<(), DebianError> {
    let content = &req.content;
    if !content.packages.is_empty() {
        host.activity(&format!("Installing {} packages for the {} target", content.packages.len(), req.target));
        customize::apt_update(chroot, watch)?;
        let names: Vec<&str> = content.packages.iter().map(String::as_str).collect();
        customize::install_packages(chroot, &names, watch)?;
        customize::clean_apt(chroot, watch)?;
    }
    if !content.files.is_empty() || !content.commands.is_empty() {
        host.activity(&format!("Applying the {} target's files and commands", req.target));
    }
    for f in &content.files {
        customize::write_file(chroot, &as_tdl_file(f), watch)?;
    }
    for c in &content.commands {
        host.info(&format!("Running target command '{}'", c.name));
        customize::run_command(chroot, &as_tdl_command(c), "target command", watch)?;
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
    let (packages, licenses) = crate::sbom::collect(chroot, release, watch)?;
    crate::build::write_sbom(host, &packages, &licenses)?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage::process::Quiet;

    fn disk(dir: &Path, name: &str, label: &str) -> (std::path::PathBuf, Layout) {
        let root = dir.join(format!("{name}.root"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        let img = dir.join(name);
        let layout = Layout::single(32 << 20).unwrap();
        layout.create_with_id(&img, Some(0x0bad_cafe), &Quiet).unwrap();
        let pinned = Pinned { hash_seed: "5f1c2a0e-1111-4222-8333-444455556666".into(), time: 1_700_000_000 };
        Ext4 { uuid: "0b8e6c6e-0000-4000-8000-000000000001".into(), label: label.into() }
            .write_pinned(&img, &layout, &root, &pinned, &Quiet)
            .unwrap();
        (img, layout)
    }

    #[test]
    fn this_plugins_bases_are_told_from_others() {
        let dir = tempfile::tempdir().unwrap();
        let (img, layout) = disk(dir.path(), "ours.img", ROOT_LABEL);
        let found = ours(&img).unwrap().expect("a base this plugin writes");
        assert_eq!(found.layout, layout);
        assert_eq!(found.superblock.mkfs_time, 1_700_000_000);
        assert_eq!(found.superblock.hash_seed, "5f1c2a0e-1111-4222-8333-444455556666");
        let (other, _) = disk(dir.path(), "other.img", "data");
        assert!(ours(&other).unwrap().is_none(), "a file system of another label is not ours");
        let blank = dir.path().join("blank.img");
        layout.create(&blank, &Quiet).unwrap();
        assert!(ours(&blank).unwrap().is_none(), "a partition without a file system is not ours");
    }

    #[test]
    fn the_boot_area_is_copied_and_the_rest_is_a_hole() {
        let dir = tempfile::tempdir().unwrap();
        let (img, layout) = disk(dir.path(), "base.img", ROOT_LABEL);
        let body = dir.path().join("target.img");
        copy_boot_area(&img, &body, &layout).unwrap();
        let (base, target) = (std::fs::read(&img).unwrap(), std::fs::read(&body).unwrap());
        assert_eq!(target.len(), base.len());
        let start = layout.partition_start as usize;
        assert!(target[..start] == base[..start], "the MBR and boot loader area differ");
        assert!(target[start..].iter().all(|&b| b == 0), "the partition should be empty");
        assert!(diskimage::size::allocated(&body).unwrap() <= layout.partition_start + (64 << 10));
    }
}
