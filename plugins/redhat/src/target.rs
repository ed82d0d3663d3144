//! `create_target_image`: the second stage for Fedora and RHEL images, a copy of the base
//! image with a target's content applied (a cloud's in-image changes, the packages the
//! host's target_content.xml names, vSphere's RHEL 5 initrd fix).
//!
//! The base body is copied sparsely (never modified) and its root file system entered with
//! `diskimage`'s [`Chroot::on_image`]: loop-mounted in a private mount namespace only
//! while each step runs, with the step's files shown in its stage directory. The root is the
//! largest Linux partition, or the whole disk when it has no partition table. Steps, in
//! Oz's order: packages (`dnf`, else `yum`), files, commands. Needs root.

use std::path::Path;

use diskimage::chroot::{Chroot, ImagePartition};
use diskimage::layout::{self, SECTOR};
use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;
use imagefactory_plugin_api::prelude::*;
use imagefactory_plugin_api::tdl::ContentType;

/// Build log lines from the tools, and the build's cancel state for them.
struct HostWatch<'h, 'a>(&'h Host<'a>);

impl Watch for HostWatch<'_, '_> {
    fn line(&self, what: &str, line: &str) {
        self.0.debug(&format!("{what}: {line}"));
    }
    fn cancelled(&self) -> bool {
        self.0.is_cancelled()
    }
}

/// Makes the target body from the base body and applies `req.content`.
pub fn create_target_image(host: &Host, req: &TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
    apply(host, req).map_err(|e| {
        for line in e.tail() {
            host.warn(line);
        }
        match e {
            DiskError::Cancelled => PluginError::cancelled(),
            other => PluginError::new(other.to_string()),
        }
    })
}

fn apply(host: &Host, req: &TargetImageRequest) -> Result<TargetImageOutcome, DiskError> {
    let watch = HostWatch(host);
    let body = host.body_path();
    host.activity(&format!("Copying the base image for the {} target", req.target));
    let mut cp = std::process::Command::new("cp");
    cp.args(["--sparse=always", "--reflink=auto", "--"]).arg(&req.base_body_path).arg(&body);
    process::run("copying the base image", cp, Options::default(), &watch)?;
    let content = &req.content;
    if content.is_empty() {
        return Ok(TargetImageOutcome::default());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DiskError::Unexpected(
            "applying target content needs root (the image is loop-mounted to change it)".into(),
        ));
    }
    let chroot = enter(host, &body)?;
    if !content.packages.is_empty() {
        host.activity(&format!("Installing {} packages for the {} target", content.packages.len(), req.target));
        let mut args = vec!["-c".to_string(), INSTALL.to_string(), "install".to_string()];
        args.extend(content.packages.iter().cloned());
        process::run("installing target packages", chroot.command("/bin/sh", args), Options::default(), &watch)?;
    }
    if !content.files.is_empty() || !content.commands.is_empty() {
        host.activity(&format!("Applying the {} target's files and commands", req.target));
    }
    for (i, f) in content.files.iter().enumerate() {
        let staged = chroot.stage(&format!("file-{i}"), &decode(f.encoding, &f.file, &f.name)?)?;
        let args = ["-c", WRITE_FILE, "write", staged.as_str(), f.name.as_str()];
        process::run(
            &format!("writing target file {}", f.name),
            chroot.command("/bin/sh", args),
            Options::default(),
            &watch,
        )?;
    }
    for (i, c) in content.commands.iter().enumerate() {
        host.info(&format!("Running target command '{}'", c.name));
        let staged = chroot.stage(&format!("command-{i}"), &decode(c.encoding, &c.command, &c.name)?)?;
        process::run(
            &format!("target command '{}'", c.name),
            chroot.command("/bin/sh", [staged.as_str()]),
            Options::default(),
            &watch,
        )?;
    }
    let mut properties = Parameters::new();
    properties.insert("target_content_applied".into(), true.into());
    Ok(TargetImageOutcome { icicle: None, properties })
}

/// Installs packages with whatever the image has: dnf (Fedora 22+, RHEL 8+), else yum.
const INSTALL: &str = r#"if command -v dnf >/dev/null 2>&1; then exec dnf -y install "$@"; fi
if command -v yum >/dev/null 2>&1; then exec yum -y install "$@"; fi
echo "the image has neither dnf nor yum to install packages with" >&2; exit 127"#;

/// Writes a staged file to a path as the guest sees it (mode 0644, parents created), with
/// only sh, mkdir, cat and chmod, so a minimal image can take it.
const WRITE_FILE: &str = r#"mkdir -p "$(dirname "$2")" && cat "$1" > "$2" && chmod 0644 "$2""#;

/// The root file system of `image`, entered through a mountpoint and a stage directory in
/// the work dir.
fn enter(host: &Host, image: &Path) -> Result<Chroot, DiskError> {
    let size = std::fs::metadata(image).map_err(|e| DiskError::io("cannot read", image, e))?.len();
    // An ext file system on the whole disk (the fixture's layout, and an old-style
    // superfloppy), or no partition table that sfdisk finds: the whole disk.
    if layout::is_whole_disk_ext(image)? {
        return on_image(host, image, 0, size);
    }
    let (offset, length) = match layout::read(image) {
        Ok(t) if !t.partitions.is_empty() => {
            let p = t
                .partitions
                .iter()
                .filter(|p| p.kind == "83" || p.kind.eq_ignore_ascii_case("0FC63DAF-8483-4772-8E79-3D69D8477DE4"))
                .max_by_key(|p| p.size)
                .ok_or_else(|| DiskError::Unexpected("the base image has no Linux partition to change".into()))?;
            (p.start * SECTOR, p.size * SECTOR)
        }
        _ => (0, size),
    };
    on_image(host, image, offset, length)
}

/// The root file system at `offset`, `length` bytes of `image`, entered through a
/// mountpoint and a stage directory in the work dir.
fn on_image(host: &Host, image: &Path, offset: u64, length: u64) -> Result<Chroot, DiskError> {
    let work = host.work_dir();
    let mountpoint = work.join("mnt");
    let stage = work.join("stage");
    for d in [&mountpoint, &stage] {
        std::fs::create_dir_all(d).map_err(|e| DiskError::io("cannot create", d, e))?;
    }
    Ok(Chroot::on_image(ImagePartition { image: image.to_path_buf(), offset, size: length, stage }, mountpoint))
}

fn decode(encoding: ContentEncoding, text: &str, name: &str) -> Result<Vec<u8>, DiskError> {
    let kind = match encoding {
        ContentEncoding::Raw => ContentType::Raw,
        ContentEncoding::Base64 => ContentType::Base64,
    };
    let file = imagefactory_plugin_api::tdl::File { name: name.to_string(), content_type: kind, content: text.into() };
    file.data().ok_or_else(|| DiskError::Unexpected(format!("the target content {name} is not valid base64")))
}
