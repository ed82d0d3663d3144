//! `create_base_image`: the steps of a Debian build, in order, each announced to the
//! host, with a cancel check between steps (and inside every tool run).
//!
//! Every build is reproducible: the same template from the same mirror state makes the
//! same disk, byte for byte. The mirror's suite files give the state and the
//! SOURCE_DATE_EPOCH ([`state`]), the build key every value that would be random
//! ([`seed`]); the tree is scrubbed of the build's own records ([`scrub`]), its times
//! clamped, and written by a pinned mkfs ([`diskimage::ext4::Pinned`]).

use std::path::{Path, PathBuf};

use diskimage::chroot::Chroot;
use diskimage::clamp::clamp_tree;
use diskimage::ext4::{Ext4, Pinned};
use diskimage::grub::{self, BootEntry};
use diskimage::layout::Layout;
use diskimage::process::Watch;
use diskimage::tools::{self, Tool};
use diskimage::{size, DiskError};
use imagefactory_plugin_api::prelude::*;
use imagefactory_plugin_api::tdl::{ParseOptions, Template};

use crate::error::DebianError;
use crate::plan::Plan;
use crate::seed::BuildKey;
use crate::state::{self, SuiteFile};
use crate::{bootstrap, customize, icicle, mirror, password, sbom, scrub, sources, system};

/// Host tools the Debian build runs besides the disk tools.
const DEBIAN_TOOLS: &[Tool] = &[
    Tool::new("mmdebstrap", "mmdebstrap"),
    Tool::new("openssl", "openssl"),
    Tool::new("curl", "curl"),
    Tool::new("sha256sum", "coreutils"),
];

/// Purposes of the values drawn from the build key ([`BuildKey::bytes_for`]).
pub const EXT4_UUID: &str = "ext4 uuid";
pub const EXT4_HASH_SEED: &str = "ext4 hash seed";

/// Units enabled in every image: DHCP networking and DNS for it.
const UNITS: &[&str] = &["systemd-networkd.service", "systemd-resolved.service"];

/// Reports tool output to the build log and the build's cancel state to the tools.
pub(crate) struct HostWatch<'h, 'a> {
    pub(crate) host: &'h Host<'a>,
    pub(crate) level: LogLevel,
}

impl Watch for HostWatch<'_, '_> {
    fn line(&self, what: &str, line: &str) {
        self.host.log(self.level, &format!("{what}: {line}"));
    }
    fn cancelled(&self) -> bool {
        self.host.is_cancelled()
    }
}

/// Builds the base image the request's template describes.
pub fn create_base_image(host: &Host, req: &BaseImageRequest) -> Result<BaseImageOutcome, PluginError> {
    build(host, req).map_err(|e| {
        for line in e.tail() {
            host.warn(line);
        }
        match e {
            DebianError::Disk(DiskError::Cancelled) => PluginError::cancelled(),
            other => PluginError::new(other.to_string()),
        }
    })
}

/// Writes the image's packages for its SBOM into the files the host keeps.
pub(crate) fn write_sbom(
    host: &Host,
    packages: &[imagefactory_plugin_api::sbom::Package],
    licenses: &[imagefactory_plugin_api::sbom::ExtractedLicense],
) -> Result<(), DebianError> {
    imagefactory_plugin_api::sbom::write(host, packages, licenses)
        .map_err(|e| DebianError::Disk(DiskError::Unexpected(e.to_string())))
}

fn check_cancelled(host: &Host) -> Result<(), DebianError> {
    if host.is_cancelled() {
        Err(DebianError::Disk(DiskError::Cancelled))
    } else {
        Ok(())
    }
}

fn build(host: &Host, req: &BaseImageRequest) -> Result<BaseImageOutcome, DebianError> {
    let template =
        Template::parse(&req.template, &ParseOptions::default()).map_err(|e| DebianError::Template(e.to_string()))?;
    let plan = Plan::new(&template)?;
    // A bad key fails at once, before anything is fetched.
    let given_key = BuildKey::from_parameters(&req.parameters)?;
    tools::require(DEBIAN_TOOLS)?;
    tools::require(tools::DISK_TOOLS)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(DebianError::Disk(DiskError::Unexpected(
            "the Debian plugin needs root (mmdebstrap's root mode and chroot)".into(),
        )));
    }
    let info = HostWatch { host, level: LogLevel::Info };
    let debug = HostWatch { host, level: LogLevel::Debug };
    let mirror = mirror::choose(plan.install_url.as_deref())?;
    let suite = plan.release.suite();
    let root = host.work_dir().join("root");

    host.activity("Reading the mirror's state");
    host.percent(2);
    let files = state::fetch_suite_files(&state::archives(&template, &mirror, suite), &debug)?;
    let (key, epoch) = reproducibility(host, &req.template, given_key, &files)?;
    let chroot = Chroot::new(&root).with_env("SOURCE_DATE_EPOCH", &epoch.to_string());

    host.activity(&format!("Bootstrapping Debian {} ({suite}) with mmdebstrap", plan.release.number));
    host.info(&format!("Mirror {mirror}, suite {suite}, architecture {}", plan.arch));
    host.percent(5);
    let source = bootstrap::Source { suite, arch: plan.arch, mirror: &mirror };
    bootstrap::run(source, &plan.base_packages, &root, epoch, &info)?;
    check_cancelled(host)?;

    host.activity("Configuring the system");
    host.percent(50);
    let uuid = key.uuid(EXT4_UUID)?;
    system::write(&root, &uuid, &plan.hostname)?;
    sources::write_all(&root, &mirror, suite, &template.repositories)?;
    let services = chroot.hold_services()?;
    match &template.os.rootpw {
        Some(pw) => {
            let fixed = password::Fixed { salt: key.crypt_salt()?, epoch };
            password::set_root_password(&root, pw, Some(&fixed), &debug)?
        }
        None => host.info("The template has no root password: root's password stays locked"),
    }
    check_cancelled(host)?;

    host.activity("Applying the template's repositories, packages, files and commands");
    host.percent(55);
    if !template.repositories.is_empty() {
        customize::apt_update(&chroot, &debug)?;
    }
    for c in &template.precommands {
        host.info(&format!("Running precommand '{}'", c.name));
        customize::run_command(&chroot, c, "precommand", &debug)?;
        check_cancelled(host)?;
    }
    if !plan.template_packages.is_empty() {
        let names: Vec<&str> = plan.template_packages.iter().map(String::as_str).collect();
        host.info(&format!("Installing {} template packages", names.len()));
        customize::install_packages(&chroot, &names, &debug)?;
    }
    for f in &template.files {
        customize::write_file(&chroot, f, &debug)?;
    }
    for c in &template.commands {
        host.info(&format!("Running command '{}'", c.name));
        customize::run_command(&chroot, c, "command", &debug)?;
        check_cancelled(host)?;
    }
    customize::enable_units(&chroot, UNITS, &debug)?;
    check_cancelled(host)?;

    host.activity("Building the initramfs");
    host.percent(65);
    bootstrap::build_initramfs(&chroot, &debug)?;
    check_cancelled(host)?;

    host.activity("Generating the ICICLE");
    host.percent(75);
    let packages = customize::installed_packages(&chroot, &debug)?;
    let extra = match &template.os.icicle_extra_command {
        Some(c) => Some(customize::icicle_extra(&chroot, c, &debug)?),
        None => None,
    };
    let icicle = icicle::from_dpkg_query(&packages, template.description.as_deref(), extra.as_deref());
    let (sbom_packages, licenses) = sbom::collect(&chroot, plan.release.number, &debug)?;
    write_sbom(host, &sbom_packages, &licenses)?;

    host.activity("Cleaning up the image");
    host.percent(78);
    for url in state::changed_since(&root, &files) {
        host.warn(&format!(
            "{url} changed while this build ran: the image is of a newer mirror state than its build key \
             names, and another build of the same key may differ (pin a snapshot mirror to avoid this)"
        ));
    }
    sources::remove_unpersisted(&root, &template.repositories)?;
    customize::clean_apt(&chroot, &debug)?;
    system::link_resolv_conf(&root)?;
    services.release()?;
    let scrubbed = scrub::scrub(&root)?;
    if !scrubbed.is_empty() {
        host.info(&format!("Removed what differs between builds: {}", scrubbed.join(", ")));
    }
    refuse_symlink(&root, "boot")?;
    BootEntry {
        title: format!("Debian GNU/Linux {} ({suite})", plan.release.number),
        kernel: "/vmlinuz".into(),
        initrd: "/initrd.img".into(),
        cmdline: system::kernel_cmdline(&uuid, template.os.kernelparam.as_deref()),
        serial: true,
        timeout_secs: 1,
    }
    .stage(&root)?;
    check_cancelled(host)?;

    host.activity("Writing the disk image");
    host.percent(80);
    let clamped = clamp_tree(&root, epoch_secs(epoch))?;
    host.info(&format!("{clamped} files and directories newer than SOURCE_DATE_EPOCH set to it"));
    let usage = size::tree_usage(&root)?;
    let disk_size = size::choose_disk(template.disk_size, usage)?;
    let layout = Layout::single(disk_size)?;
    let body = host.body_path();
    layout.create_with_id(&body, Some(key.disk_id()?), &debug)?;
    let pinned = Pinned { hash_seed: key.uuid(EXT4_HASH_SEED)?, time: epoch };
    Ext4 { uuid: uuid.clone(), label: ROOT_LABEL.into() }.write_pinned(&body, &layout, &root, &pinned, &debug)?;
    check_cancelled(host)?;

    host.activity("Installing the GRUB boot loader");
    host.percent(95);
    grub::install_bios(&body, &layout, &host.work_dir(), &debug)?;
    // The tree is about a gigabyte: free it now rather than when the host gets to it.
    remove_tree(host, &root);
    host.info(&format!(
        "Debian {} image: {} bytes ({} allocated), root file system {uuid}",
        plan.release.number,
        layout.disk_size,
        size::allocated(&body)?
    ));
    host.percent(100);

    let mut properties = Parameters::new();
    properties.insert("debian_release".into(), plan.release.number.to_string().into());
    properties.insert("debian_suite".into(), suite.into());
    properties.insert("disk_format".into(), "raw".into());
    properties.insert("disk_size".into(), layout.disk_size.into());
    properties.insert("root_fs_uuid".into(), uuid.into());
    properties.insert("source_date_epoch".into(), epoch.into());
    Ok(BaseImageOutcome { icicle: Some(icicle), properties })
}

/// The label of the root file system; the target stage knows this plugin's bases by it.
pub const ROOT_LABEL: &str = "root";

/// The build key (`given`, else derived from `template_xml` and the state) and the
/// SOURCE_DATE_EPOCH of a build reading `files` (the main suite's first), logged with
/// the source state: with the key, the same image can be asked for again (parameter
/// `build_key`) while the mirror still has this state.
fn reproducibility(
    host: &Host,
    template_xml: &str,
    given: Option<BuildKey>,
    files: &[SuiteFile],
) -> Result<(BuildKey, u64), DebianError> {
    let main = files.first().ok_or_else(|| DiskError::Unexpected("no suite file was read".into()))?;
    let epoch = state::release_date(&String::from_utf8_lossy(&main.bytes))
        .ok_or_else(|| DebianError::NoReleaseDate { url: main.url.clone() })?;
    let pairs = state::pairs(files)?;
    for (url, digest) in &pairs {
        host.info(&format!("Source state: {url} {digest}"));
    }
    host.info(&format!("SOURCE_DATE_EPOCH={epoch} (the Date of {})", main.url));
    let key = match given {
        Some(k) => {
            host.info(&format!("Build key {} (the request's build_key parameter)", k.hex()));
            k
        }
        None => {
            let k = BuildKey::derive(template_xml, &pairs)?;
            host.info(&format!("Build key {} (derived from the template and the source state)", k.hex()));
            k
        }
    };
    Ok((key, epoch))
}

/// SOURCE_DATE_EPOCH as the signed seconds file times are (a Release file's date is far
/// inside both ranges).
pub(crate) fn epoch_secs(epoch: u64) -> i64 {
    i64::try_from(epoch).unwrap_or(i64::MAX)
}

/// Fails if `rel` in `root` is a symlink: what is written there next must stay inside
/// the tree.
fn refuse_symlink(root: &Path, rel: &str) -> Result<(), DiskError> {
    let p: PathBuf = root.join(rel);
    match std::fs::symlink_metadata(&p) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(DiskError::Unexpected(format!("/{rel} in the image is a symlink; the boot loader needs a directory")))
        }
        _ => Ok(()),
    }
}

fn remove_tree(host: &Host, root: &Path) {
    if let Err(e) = std::fs::remove_dir_all(root) {
        host.warn(&format!("cannot remove {}: {e} (the host removes the work directory)", root.display()));
    }
}
