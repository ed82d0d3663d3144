//! The template's content, applied inside the root: repositories' package lists,
//! precommands, packages, files and commands, in Oz's order.
//!
//! Files and scripts are staged in the root's /tmp and moved or run *inside* the
//! chroot, so a path in the template resolves as the guest sees it: a symlink such as
//! /var/run -> /run can never send a write to the build host's own /run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use diskimage::chroot::Chroot;
use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;
use imagefactory_plugin_api::tdl;

use crate::error::DebianError;
use crate::fetch::fetch;

static STAGED: AtomicU64 = AtomicU64::new(0);

/// A file in the root's /tmp, removed when dropped (on every path).
struct Staged {
    host: PathBuf,
    guest: String,
}

impl Staged {
    fn new(chroot: &Chroot, kind: &str, bytes: &[u8]) -> Result<Staged, DiskError> {
        let n = STAGED.fetch_add(1, Ordering::Relaxed);
        let name = format!("imagefactory-{kind}-{}-{n}", std::process::id());
        if let Some(stage) = chroot.stage_dir() {
            // An image: the file goes to the stage directory the commands see.
            let guest = chroot.stage(&name, bytes)?;
            return Ok(Staged { host: stage.join(&name), guest });
        }
        let tmp = chroot.root().join("tmp");
        let real_dir = std::fs::symlink_metadata(&tmp).map(|m| m.is_dir()).unwrap_or(false);
        if !real_dir {
            return Err(DiskError::Unexpected("the image's /tmp is not a directory".into()));
        }
        let host = tmp.join(&name);
        std::fs::write(&host, bytes).map_err(|e| DiskError::io("cannot write", &host, e))?;
        Ok(Staged { host, guest: format!("/tmp/{name}") })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.host);
    }
}

fn content(data: Option<Vec<u8>>, url: &str, watch: &dyn Watch) -> Result<Vec<u8>, DebianError> {
    match data {
        Some(d) => Ok(d),
        None => fetch(url, watch),
    }
}

/// Runs one template command (a shell script) in the root. A failure names the command
/// and its exit status, in one line.
pub fn run_command(chroot: &Chroot, cmd: &tdl::Command, kind: &str, watch: &dyn Watch) -> Result<(), DebianError> {
    let script = content(cmd.data(), &cmd.content, watch)?;
    let staged = Staged::new(chroot, "cmd", &script)?;
    process::run(
        &format!("template {kind} '{}'", cmd.name),
        chroot.command("/bin/sh", [&staged.guest]),
        Options::default(),
        watch,
    )?;
    Ok(())
}

/// Writes one template file (mode 0644, parent directories created).
pub fn write_file(chroot: &Chroot, file: &tdl::File, watch: &dyn Watch) -> Result<(), DebianError> {
    let bytes = content(file.data(), &file.content, watch)?;
    let staged = Staged::new(chroot, "file", &bytes)?;
    process::run(
        &format!("writing template file {}", file.name),
        chroot.command("install", ["-D", "-m", "0644", staged.guest.as_str(), file.name.as_str()]),
        Options::default(),
        watch,
    )?;
    Ok(())
}

/// `apt-get update`: needed when the template added repositories.
pub fn apt_update(chroot: &Chroot, watch: &dyn Watch) -> Result<(), DebianError> {
    process::run("apt-get update", chroot.command("apt-get", ["update"]), Options::default(), watch)?;
    Ok(())
}

/// Installs the template's packages (recommends off, as in the base system).
pub fn install_packages(chroot: &Chroot, names: &[&str], watch: &dyn Watch) -> Result<(), DebianError> {
    let mut args = vec!["install", "-y", "--no-install-recommends", "--"];
    args.extend_from_slice(names);
    process::run("apt-get install", chroot.command("apt-get", args), Options::default(), watch)?;
    Ok(())
}

/// Enables systemd units (symlinks only: nothing is started in the chroot).
pub fn enable_units(chroot: &Chroot, units: &[&str], watch: &dyn Watch) -> Result<(), DebianError> {
    let mut args = vec!["enable"];
    args.extend_from_slice(units);
    process::run("systemctl enable", chroot.command("systemctl", args), Options::default(), watch)?;
    Ok(())
}

/// The installed packages, as `dpkg-query` lists them for the ICICLE.
pub fn installed_packages(chroot: &Chroot, watch: &dyn Watch) -> Result<String, DebianError> {
    let out = process::run(
        "dpkg-query",
        chroot.command("dpkg-query", ["-W", "-f", "${Package} ${Version} ${Architecture}\n"]),
        Options { capture_stdout: true, ..Default::default() },
        watch,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The output of the template's `<icicle><extra_command>`, run in the root.
pub fn icicle_extra(chroot: &Chroot, command: &str, watch: &dyn Watch) -> Result<String, DebianError> {
    let out = process::run(
        "the ICICLE extra command",
        chroot.command("/bin/sh", ["-c", command]),
        Options { capture_stdout: true, ..Default::default() },
        watch,
    )?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Empties apt's caches and package lists: they are large, go stale at once, and
/// `apt-get update` rebuilds them in the running guest.
pub fn clean_apt(chroot: &Chroot, watch: &dyn Watch) -> Result<(), DebianError> {
    process::run("apt-get clean", chroot.command("apt-get", ["clean"]), Options::default(), watch)?;
    let lists = chroot.root().join("var/lib/apt/lists");
    if let Ok(entries) = std::fs::read_dir(&lists) {
        for e in entries.flatten() {
            let p = e.path();
            let keep = p.file_name().is_some_and(|n| n == "lock" || n == "partial" || n == "auxfiles");
            if !keep && p.is_file() {
                std::fs::remove_file(&p).map_err(|err| DiskError::io("cannot remove", &p, err))?;
            }
        }
    }
    Ok(())
}
