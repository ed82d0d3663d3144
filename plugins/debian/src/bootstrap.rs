//! The base system: mmdebstrap from the mirror into a directory.
//!
//! The initramfs is held off while packages install (update-initramfs is diverted to a
//! no-op) and built once at the end, after the template's packages and commands: the
//! kernel, udev and every package with an initramfs hook would each rebuild it
//! otherwise, which is most of a bootstrap's time.

use std::path::Path;
use std::process::Command;

use diskimage::chroot::Chroot;
use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;

/// mmdebstrap's essential hook: runs after the Essential packages are in, before the
/// rest (kernel, initramfs-tools) is installed.
pub const HOLD_INITRAMFS_HOOK: &str = concat!(
    r#"chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && "#,
    r#"printf '#!/bin/sh\n# imagefactory: the initramfs is built once, at the end of the build\nexit 0\n' "#,
    r#"> "$1/usr/sbin/update-initramfs" && chmod 755 "$1/usr/sbin/update-initramfs""#
);

/// mmdebstrap's arguments for a minimal bootable system.
///
/// Root mode (real ownership in the tree, which `mkfs.ext4 -d` copies as is); apt's
/// package lists are kept so the template's packages and commands can use apt, and
/// removed at the end of the build.
pub fn mmdebstrap_args(suite: &str, arch: &str, mirror: &str, packages: &[&str], root: &Path) -> Vec<String> {
    vec![
        "--mode=root".into(),
        "--variant=minbase".into(),
        format!("--architectures={arch}"),
        "--skip=cleanup/apt/lists".into(),
        format!("--include={}", packages.join(",")),
        format!("--essential-hook={HOLD_INITRAMFS_HOOK}"),
        suite.into(),
        root.display().to_string(),
        mirror.into(),
    ]
}

/// What mmdebstrap installs: the suite from the mirror, for the architecture.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub suite: &'a str,
    pub arch: &'a str,
    pub mirror: &'a str,
}

/// Runs mmdebstrap in a private mount namespace: the /proc, /sys and /dev it mounts in
/// the tree vanish with it, even if it is killed half way. `epoch` is its
/// SOURCE_DATE_EPOCH, which it hands to dpkg and every maintainer script (and which
/// makes it empty /etc/machine-id and remove its logs, for a reproducible tree).
pub fn run(source: Source, packages: &[&str], root: &Path, epoch: u64, watch: &dyn Watch) -> Result<(), DiskError> {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "mmdebstrap"])
        .args(mmdebstrap_args(source.suite, source.arch, source.mirror, packages, root))
        .env("SOURCE_DATE_EPOCH", epoch.to_string());
    process::run("mmdebstrap", cmd, Options::default(), watch)?;
    Ok(())
}

/// Lifts the hold and builds the initramfs of every installed kernel, once
/// (initramfs-tools makes the same archive every time when the chroot's
/// SOURCE_DATE_EPOCH is set: sorted entries, every time the epoch).
pub fn build_initramfs(chroot: &Chroot, watch: &dyn Watch) -> Result<(), DiskError> {
    let stub = chroot.root().join("usr/sbin/update-initramfs");
    std::fs::remove_file(&stub).map_err(|e| DiskError::io("cannot remove", &stub, e))?;
    let undivert =
        chroot.command("dpkg-divert", ["--quiet", "--local", "--rename", "--remove", "/usr/sbin/update-initramfs"]);
    process::run("dpkg-divert", undivert, Options::default(), watch)?;
    process::run(
        "update-initramfs",
        chroot.command("update-initramfs", ["-c", "-k", "all"]),
        Options::default(),
        watch,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let a = mmdebstrap_args(
            "bookworm",
            "amd64",
            "http://m.example/debian",
            &["linux-image-amd64", "udev"],
            Path::new("/w/root"),
        );
        assert_eq!(a[0], "--mode=root");
        assert!(a.contains(&"--include=linux-image-amd64,udev".to_string()));
        assert!(a.contains(&"--architectures=amd64".to_string()));
        assert_eq!(&a[a.len() - 3..], &["bookworm", "/w/root", "http://m.example/debian"]);
        let hook = a.iter().find(|x| x.starts_with("--essential-hook=")).unwrap();
        assert!(hook.contains("dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs"));
    }
}
