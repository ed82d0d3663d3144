//! `create_base_image` for Fedora and the RHEL family: the steps of an install, in order,
//! each announced to the host, with a cancel check between them.
//!
//! 1. Read the template and the version table; refuse what cannot be built, at once.
//! 2. Hash the root password; fetch template content given by URL.
//! 3. Installer media. URL installs: the tree's `.treeinfo` (else images/pxeboot) gives
//!    the kernel and initrd, fetched on the build host; the kickstart is appended to the
//!    initrd; the guest boots the kernel directly. ISO installs: the ISO is fetched (or
//!    used in place when local), checked against the template's checksum file, and
//!    remastered with the kickstart; the guest boots it as a CD-ROM.
//! 4. The kickstart and the kernel arguments are kept: the kickstart as the image's file
//!    `anaconda-ks.cfg` (root password as a hash only), the arguments in the build log.
//! 5. One guest (plugins/guest) installs onto the raw body: user-mode networking, the
//!    operator's accelerator and hard timeout, and an inactivity watchdog.
//! 6. Success is the guest powering off *and* the kickstart's done marker on the serial
//!    console; the ICICLE is read from the same console. The console log is kept as the
//!    image's file `console.log`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use guest::{Boot, Disk, Guest, GuestConfig, GuestError, GuestSettings, Network};
use imagefactory_plugin_api::ops::parameter_as_bool;
use imagefactory_plugin_api::prelude::*;
use imagefactory_plugin_api::tdl::{ChecksumKind, Command, Install, ParseOptions, Template};
use serde_json::Value;

use crate::distro::{Family, Release};
use crate::error::RedHatError;
use crate::fetch::{self, Progress};
use crate::kickstart::{self, Content, Markers, Source};
use crate::{checksum, console, cpio, guesturl, icicle, iso, password, treeinfo};

/// The kickstart as kept with the image (anaconda's own name for it).
pub const KICKSTART_FILE: &str = "anaconda-ks.cfg";
/// The installer's serial console, kept with the image.
pub const CONSOLE_FILE: &str = guest::CONSOLE_FILE;
/// Oz's default disk size.
pub const DEFAULT_DISK: u64 = 10 << 30;
/// Oz's `[timeouts] inactivity` default.
pub const DEFAULT_INACTIVITY: Duration = Duration::from_secs(300);
/// Memory for the installer guest: anaconda needs about 1.5 GiB from Fedora 27 / RHEL 8.
pub const DEFAULT_MEMORY_MIB: u32 = 2048;

/// Settings (host config keys) this plugin reads besides the guest engine's
/// `accelerator`, `libvirt_uri` and `timeout`.
pub const SETTING_INACTIVITY: &str = "inactivity_timeout";
pub const SETTING_MEMORY: &str = "install_memory_mib";

/// Download progress as the image's percent complete, from `base` to `base + span`.
/// Only changes are reported: every report is a message to the host, which persists it.
struct HostProgress<'h, 'a> {
    host: &'h Host<'a>,
    base: u8,
    span: u8,
    last: std::cell::Cell<u8>,
}

impl<'h, 'a> HostProgress<'h, 'a> {
    fn new(host: &'h Host<'a>, base: u8, span: u8) -> Self {
        HostProgress { host, base, span, last: std::cell::Cell::new(base) }
    }
}

impl Progress for HostProgress<'_, '_> {
    fn bytes(&self, done: u64, total: Option<u64>) {
        if let Some(t) = total.filter(|t| *t > 0) {
            let p = self.base + ((done.min(t) * self.span as u64) / t) as u8;
            if p != self.last.get() {
                self.last.set(p);
                self.host.percent(p);
            }
        }
    }
    fn cancelled(&self) -> bool {
        self.host.is_cancelled()
    }
}

/// Builds the base image the request's template describes, for `family`'s plugin.
pub fn create_base_image(host: &Host, req: &BaseImageRequest, family: Family) -> Result<BaseImageOutcome, PluginError> {
    build(host, req, family).map_err(|e| match e {
        RedHatError::Cancelled => PluginError::cancelled(),
        other => {
            let mut chain = Vec::new();
            let mut next = std::error::Error::source(&other);
            while let Some(s) = next {
                chain.push(s.to_string());
                next = s.source();
            }
            for c in &chain {
                host.warn(c);
            }
            PluginError { message: PluginError::new(other.to_string()).message, chain }
        }
    })
}

fn check_cancelled(host: &Host) -> Result<(), RedHatError> {
    if host.is_cancelled() {
        Err(RedHatError::Cancelled)
    } else {
        Ok(())
    }
}

/// A number of seconds or MiB from the settings (a number or a numeric string).
fn setting_u64(settings: &Parameters, key: &'static str) -> Result<Option<u64>, RedHatError> {
    match settings.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_u64().filter(|v| *v > 0).map(Some).ok_or(()),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok().filter(|v| *v > 0).map(Some).ok_or(()),
        Some(_) => Err(()),
    }
    .map_err(|_| RedHatError::Setting { name: key, reason: "must be a positive whole number".into() })
}

fn random_nonce() -> Result<String, RedHatError> {
    let p = Path::new("/proc/sys/kernel/random/uuid");
    let u = std::fs::read_to_string(p).map_err(|e| RedHatError::io("cannot read", p, e))?;
    Ok(u.trim().replace('-', ""))
}

fn resolve(name: &str, data: Option<Vec<u8>>, content: &str) -> Result<Content, RedHatError> {
    let data = match data {
        Some(d) => d,
        None => fetch::small(content.trim())?,
    };
    Ok(Content { name: name.to_string(), data })
}

fn resolve_commands(cmds: &[Command]) -> Result<Vec<Content>, RedHatError> {
    cmds.iter().map(|c| resolve(&c.name, c.data(), &c.content)).collect()
}

fn build(host: &Host, req: &BaseImageRequest, family: Family) -> Result<BaseImageOutcome, RedHatError> {
    let template =
        Template::parse(&req.template, &ParseOptions::default()).map_err(|e| RedHatError::Template(e.to_string()))?;
    let release = Release::parse(family, &template.os.name, &template.os.version)?;
    if template.os.arch != "x86_64" {
        return Err(RedHatError::UnsupportedArch(template.os.arch.clone()));
    }
    if release.newer_than_known {
        host.warn(&format!(
            "{} {} is newer than this plugin knows; building it as {release}",
            template.os.name, template.os.version
        ));
    }
    let profile = release.profile();
    let guest_settings = GuestSettings::from_settings(&req.settings).map_err(|e| RedHatError::Guest(e.to_string()))?;
    let inactivity =
        setting_u64(&req.settings, SETTING_INACTIVITY)?.map(Duration::from_secs).unwrap_or(DEFAULT_INACTIVITY);
    let memory = setting_u64(&req.settings, SETTING_MEMORY)?.map(|m| m as u32).unwrap_or(DEFAULT_MEMORY_MIB);
    let custom_ks = match req.parameters.get("install_script") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
        Some(_) => {
            return Err(RedHatError::Parameter {
                name: "install_script",
                reason: "must be the kickstart's text".into(),
            })
        }
    };
    let generate_icicle = parameter_as_bool(&req.parameters, "generate_icicle").unwrap_or(true);
    let work = host.work_dir();
    let files_dir = host.files_dir();

    host.activity(&format!("Preparing the {release} install"));
    host.percent(2);
    let root_hash = match &template.os.rootpw {
        Some(pw) => Some(password::hash(pw, profile.hash)?),
        None => {
            host.info("The template has no root password: root's password is locked");
            None
        }
    };
    let files = template.files.iter().map(|f| resolve(&f.name, f.data(), &f.content)).collect::<Result<Vec<_>, _>>()?;
    let commands = resolve_commands(&template.commands)?;
    let precommands = resolve_commands(&template.precommands)?;
    let markers = Markers::new(random_nonce()?);
    check_cancelled(host)?;

    let source = match &template.os.install {
        Install::Url { url } => Source::Url(guesturl::for_guest(url.trim())),
        Install::Iso { .. } => Source::Cdrom,
    };
    let input = kickstart::Input {
        template: &template,
        release,
        source: source.clone(),
        root_hash,
        markers: markers.clone(),
        files,
        commands,
        precommands,
        icicle: generate_icicle,
    };
    let ks = match &custom_ks {
        Some(custom) => {
            host.info("Using the kickstart of parameters.install_script, with the template's %post appended");
            kickstart::with_custom(custom, &input)
        }
        None => kickstart::generate(&input),
    };
    let ks_path = files_dir.join(KICKSTART_FILE);
    std::fs::write(&ks_path, &ks).map_err(|e| RedHatError::io("cannot write", &ks_path, e))?;
    let args =
        kickstart::kernel_args(&profile, &source, kickstart::ks_location(&source), template.os.kernelparam.as_deref());
    host.info(&format!("Installer kernel arguments: {args}"));

    let (boot, cdrom) = match &template.os.install {
        Install::Url { url } => {
            host.activity("Fetching the installer kernel and initrd");
            host.percent(5);
            let (kernel, initrd) = fetch_boot_files(host, url.trim(), &work)?;
            cpio::append_file(&initrd, "ks.cfg", ks.as_bytes())?;
            (Boot::Kernel { kernel, initrd: Some(initrd), append: args.clone() }, None)
        }
        Install::Iso { iso: iso_url, checksum: sum, extras } => {
            host.activity("Fetching the installation ISO");
            host.percent(5);
            let iso_path = match fetch::local_path(iso_url.trim()) {
                Some(p) => p,
                None => {
                    let p = work.join("install.iso");
                    let progress = HostProgress::new(host, 5, 15);
                    fetch::to_file(iso_url.trim(), &p, &progress)?;
                    p
                }
            };
            check_cancelled(host)?;
            if let Some(sum) = sum {
                host.activity("Verifying the ISO's checksum");
                host.percent(20);
                verify_iso(host, &iso_path, iso_url.trim(), sum.kind, &sum.url)?;
            }
            host.activity("Remastering the ISO with the kickstart");
            host.percent(24);
            let out = work.join("remastered.iso");
            iso::remaster(&iso_path, &out, &ks, &args, extras, &work.join("iso-stage"))?;
            (Boot::Cdrom, Some(out))
        }
    };
    check_cancelled(host)?;

    host.activity("Creating the disk");
    host.percent(28);
    let body = host.body_path();
    let disk_size = template.disk_size.unwrap_or(DEFAULT_DISK);
    let f = std::fs::File::create(&body).map_err(|e| RedHatError::io("cannot create", &body, e))?;
    f.set_len(disk_size).map_err(|e| RedHatError::io("cannot size", &body, e))?;
    drop(f);

    host.activity(&format!("Installing {release} with anaconda"));
    host.percent(30);
    let run_dir = work.join("guest");
    std::fs::create_dir_all(&run_dir).map_err(|e| RedHatError::io("cannot create", &run_dir, e))?;
    let mut cfg = GuestConfig::new(format!("imagefactory-{}", req.image_id), &run_dir, boot);
    cfg.disks.push(Disk::raw(&body));
    cfg.cdrom = cdrom;
    cfg.network = Network::User;
    cfg.memory_mib = memory;
    cfg.inactivity = Some(inactivity);
    guest_settings.apply(&mut cfg);
    host.info(&format!(
        "Installer guest: {} MiB, accelerator {}, timeout {} s, inactivity {} s",
        cfg.memory_mib,
        cfg.accel,
        cfg.timeout.as_secs(),
        inactivity.as_secs()
    ));
    let serial = cfg.serial_log();
    let started = std::time::Instant::now();
    let run = Guest::start(&cfg).and_then(|mut g| g.wait_for_poweroff(&|| host.is_cancelled(), Some(&files_dir)));
    let install_time = started.elapsed();
    let report = match run {
        Ok(r) => r,
        Err(GuestError::Cancelled) => return Err(RedHatError::Cancelled),
        Err(GuestError::Hung { seconds, files }) => {
            return Err(RedHatError::Timeout { seconds, files: format!("; {files}") })
        }
        Err(GuestError::Inactive { seconds, files }) => {
            return Err(RedHatError::Inactive { seconds, files: format!("; {files}") })
        }
        Err(GuestError::Crashed { files, detail }) => {
            host.warn(&format!("installer guest: {detail}"));
            return Err(RedHatError::InstallerCrashed {
                files: if files.is_empty() { String::new() } else { format!("; {files}") },
            });
        }
        Err(e) => return Err(RedHatError::Guest(e.to_string())),
    };
    host.percent(92);
    let log = std::fs::read(&serial).map_err(|e| RedHatError::io("cannot read", &serial, e))?;
    let kept = files_dir.join(CONSOLE_FILE);
    std::fs::write(&kept, &log).map_err(|e| RedHatError::io("cannot write", &kept, e))?;
    let out = console::read(&log, &markers);
    if let Some((kind, index, status)) = out.failed {
        let list = if kind == "precommand" { &template.precommands } else { &template.commands };
        let name = list.get(index).map(|c| c.name.clone()).unwrap_or_else(|| format!("#{index}"));
        return Err(RedHatError::CommandFailed {
            kind: if kind == "precommand" { "precommand" } else { "command" },
            name,
            status,
        });
    }
    if !out.done {
        return Err(RedHatError::InstallerCrashed { files: format!("; see file {CONSOLE_FILE} of this image") });
    }
    host.info(&format!(
        "{release} installed in {:.1} s ({} bytes written to the disk)",
        install_time.as_secs_f64(),
        report.disk_bytes_written
    ));

    host.activity("Generating the ICICLE");
    host.percent(96);
    let icicle = if generate_icicle {
        let packages = out.packages.unwrap_or_default();
        host.info(&format!("ICICLE: {} packages", packages.len()));
        let extra = if template.os.icicle_extra_command.is_some() { Some(out.extra.unwrap_or_default()) } else { None };
        Some(icicle::xml(&packages, extra.as_deref(), template.description.as_deref())?)
    } else {
        Some("<icicle></icicle>".to_string())
    };
    let _ = std::fs::remove_dir_all(&run_dir);
    host.percent(100);

    let mut properties = Parameters::new();
    properties.insert("os_release".into(), release.to_string().into());
    properties.insert("disk_format".into(), "raw".into());
    properties.insert("disk_size".into(), disk_size.into());
    properties.insert("installer_kernel_args".into(), args.into());
    properties.insert("install_seconds".into(), install_time.as_secs().into());
    Ok(BaseImageOutcome { icicle, properties })
}

/// Fetches the tree's kernel and initrd into `work`.
fn fetch_boot_files(host: &Host, url: &str, work: &Path) -> Result<(PathBuf, PathBuf), RedHatError> {
    let info = match fetch::small_optional(&fetch::join(url, ".treeinfo"))? {
        Some(bytes) => {
            let t = treeinfo::TreeInfo::parse(&String::from_utf8_lossy(&bytes));
            if let Some(d) = t.describe() {
                host.info(&format!("Install tree: {d}"));
            }
            t
        }
        None => {
            host.info("The install tree has no .treeinfo: using images/pxeboot");
            treeinfo::TreeInfo::default()
        }
    };
    let files = info.boot_files("x86_64");
    host.info(&format!("Installer kernel {} and initrd {} (from {})", files.kernel, files.initrd, files.source));
    let kernel = work.join("vmlinuz");
    let initrd = work.join("initrd.img");
    let no_boot = |e: RedHatError| match e {
        RedHatError::Fetch { reason, .. } if reason.contains("404") => RedHatError::NoBootFiles {
            url: url.to_string(),
            reason: format!("{} and {} not found", files.kernel, files.initrd),
        },
        other => other,
    };
    let started = std::time::Instant::now();
    let p = HostProgress::new(host, 5, 5);
    let k = fetch::to_file(&fetch::join(url, &files.kernel), &kernel, &p).map_err(no_boot)?;
    let p = HostProgress::new(host, 10, 15);
    let i = fetch::to_file(&fetch::join(url, &files.initrd), &initrd, &p).map_err(no_boot)?;
    host.info(&format!(
        "Fetched the kernel ({k} bytes) and initrd ({i} bytes) in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok((kernel, initrd))
}

/// Checks the ISO against the template's checksum file.
fn verify_iso(
    host: &Host,
    iso_path: &Path,
    iso_url: &str,
    kind: ChecksumKind,
    sum_url: &str,
) -> Result<(), RedHatError> {
    let text = String::from_utf8_lossy(&fetch::small(sum_url.trim())?).into_owned();
    let name = iso_url.rsplit('/').next().unwrap_or(iso_url).to_string();
    let expected = checksum::expected_for(&text, kind, &name)
        .ok_or_else(|| RedHatError::ChecksumMissing { url: sum_url.trim().to_string(), iso: name.clone() })?;
    let progress = HostProgress::new(host, 20, 4);
    let actual = checksum::digest_file(kind, iso_path, &progress)?;
    if actual != expected {
        return Err(RedHatError::ChecksumMismatch { iso: name, kind: checksum::kind_name(kind), actual, expected });
    }
    host.info(&format!("{} of {name} matches the checksum file", checksum::kind_name(kind)));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_settings() {
        let s: Parameters = serde_json::from_str(r#"{"a": 15, "b": "20", "c": -1, "d": "soon", "e": null}"#).unwrap();
        assert_eq!(setting_u64(&s, "a").unwrap(), Some(15));
        assert_eq!(setting_u64(&s, "b").unwrap(), Some(20));
        assert_eq!(setting_u64(&s, "e").unwrap(), None);
        assert_eq!(setting_u64(&s, "missing").unwrap(), None);
        for bad in ["c", "d"] {
            let key: &'static str = if bad == "c" { "c" } else { "d" };
            let e = setting_u64(&s, key).unwrap_err().to_string();
            assert_eq!(
                e,
                format!("invalid setting {key} in the imagefactory configuration: must be a positive whole number")
            );
        }
    }
}
