//! Running commands inside a root tree being built.
//!
//! Maintainer scripts and template commands need /proc, /sys and /dev. They are mounted
//! in a private mount namespace (`unshare --mount --propagation private`) that exists
//! only while the command runs: when its last process ends, for whatever reason, the
//! kernel drops the mounts with it. Nothing is ever mounted in the host's namespace, so
//! a killed build cannot leave a mount behind that would stop the work directory from
//! being removed.
//!
//! A finished disk image can be entered the same way ([`Chroot::on_image`]): its root
//! partition is loop-mounted inside that private namespace, used, and unmounted before
//! the command returns (the namespace's end drops it too if the command is killed), so
//! the image is never mounted where anything else could see it, and the loop device is
//! released with it. Files for the command are bind-mounted at /run/imagefactory from a
//! host directory, so nothing is staged inside the image.
//!
//! /run is a fresh tmpfs, as on a booted system, holding the build host's resolver
//! configuration where systemd-resolved's would be: an image whose /etc/resolv.conf
//! points at resolved's stub can still reach the mirror from the chroot, and nothing
//! of the build host's network is left in the image.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::DiskError;

/// Runs inside the new namespace: mounts, then becomes the command in the chroot.
const ENTER: &str = r#"set -e
root="$1"; shift
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mkdir -p "$root/run/systemd/resolve"
if [ -e /etc/resolv.conf ]; then
  cp -L /etc/resolv.conf "$root/run/systemd/resolve/stub-resolv.conf"
  cp -L /etc/resolv.conf "$root/run/systemd/resolve/resolv.conf"
fi
exec chroot "$root" "$@""#;

/// Runs inside the new namespace for an image: mounts its partition, enters it, and
/// unmounts it again when the command is done (recursively: /proc, /sys, /dev, /run).
const ENTER_IMAGE: &str = r#"set -e
image="$1"; offset="$2"; sizelimit="$3"; root="$4"; stage="$5"; shift 5
mount -o loop,offset="$offset",sizelimit="$sizelimit" "$image" "$root"
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/run"
mount -t proc proc "$root/proc"
mount -t sysfs sysfs "$root/sys"
mount --rbind /dev "$root/dev"
mount -t tmpfs -o mode=0755 tmpfs "$root/run"
mkdir -p "$root/run/systemd/resolve" "$root/run/imagefactory"
if [ -e /etc/resolv.conf ]; then
  cp -L /etc/resolv.conf "$root/run/systemd/resolve/stub-resolv.conf"
  cp -L /etc/resolv.conf "$root/run/systemd/resolve/resolv.conf"
fi
mount --bind "$stage" "$root/run/imagefactory"
set +e
chroot "$root" "$@"
rc=$?
umount -R "$root" || umount -R -l "$root"
exit $rc"#;

/// Where commands run in an image's root see the stage directory (ENTER_IMAGE mounts it).
pub const GUEST_STAGE_DIR: &str = "/run/imagefactory";

/// A partition of a disk image to enter ([`Chroot::on_image`]).
#[derive(Debug, Clone)]
pub struct ImagePartition {
    /// The raw disk image.
    pub image: PathBuf,
    /// Where the partition starts, in bytes.
    pub offset: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Host directory shown to commands as [`GUEST_STAGE_DIR`].
    pub stage: PathBuf,
}

/// The environment of commands in the root: nothing of the host's leaks in (the host's
/// PATH, locale or proxy settings describe the host, not the guest).
const ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ("HOME", "/root"),
    ("LC_ALL", "C"),
    ("DEBIAN_FRONTEND", "noninteractive"),
];

/// A root tree commands can be run in: a directory, or a partition of a disk image
/// mounted at `root` for each command's lifetime.
#[derive(Debug, Clone)]
pub struct Chroot {
    root: PathBuf,
    image: Option<ImagePartition>,
    /// Set for every command besides [`ENV`] (see [`Chroot::with_env`]).
    env: Vec<(String, String)>,
}

impl Chroot {
    pub fn new(root: impl Into<PathBuf>) -> Chroot {
        Chroot { root: root.into(), image: None, env: Vec::new() }
    }

    /// The file system of `partition`, mounted at `mountpoint` (an empty directory) only
    /// while each command runs, in the command's private namespace. Needs root.
    pub fn on_image(partition: ImagePartition, mountpoint: impl Into<PathBuf>) -> Chroot {
        Chroot { root: mountpoint.into(), image: Some(partition), env: Vec::new() }
    }

    /// Also sets `key=value` for every command run in the root. The environment is
    /// otherwise fixed ([`ENV`]); this is for what the build decides, such as the
    /// `SOURCE_DATE_EPOCH` that makes package scripts write the same files every time.
    pub fn with_env(mut self, key: &str, value: &str) -> Chroot {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// For an image: the host directory commands see as [`GUEST_STAGE_DIR`].
    pub fn stage_dir(&self) -> Option<&Path> {
        self.image.as_ref().map(|p| p.stage.as_path())
    }

    /// For an image: writes `bytes` as `name` in the stage directory and returns the path
    /// commands see it at. A directory root has no stage directory (an error).
    pub fn stage(&self, name: &str, bytes: &[u8]) -> Result<String, DiskError> {
        let dir = self
            .stage_dir()
            .ok_or_else(|| DiskError::Unexpected("only an image's root has a stage directory".into()))?;
        let host = dir.join(name);
        std::fs::write(&host, bytes).map_err(|e| DiskError::io("cannot write", &host, e))?;
        Ok(format!("{GUEST_STAGE_DIR}/{name}"))
    }

    /// A command that runs `program args...` inside the root, with /proc, /sys and /dev
    /// mounted for its lifetime only. Run it with [`crate::process::run`].
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("unshare");
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"]);
        match &self.image {
            None => cmd.args([ENTER, "enter"]).arg(&self.root),
            Some(p) => cmd
                .args([ENTER_IMAGE, "enter"])
                .arg(&p.image)
                .arg(p.offset.to_string())
                .arg(p.size.to_string())
                .arg(&self.root)
                .arg(&p.stage),
        };
        cmd.arg(program).args(args).env_clear().envs(ENV.iter().copied());
        cmd.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        cmd
    }

    /// Stops package scripts from starting services in the root until the guard drops
    /// (Debian's `policy-rc.d` protocol: exit 101 means "not now"). A service started in
    /// a chroot would run on the build host, outside any guest.
    pub fn hold_services(&self) -> Result<ServicesHeld, DiskError> {
        let path = self.root.join("usr/sbin/policy-rc.d");
        if path.exists() {
            return Err(DiskError::Unexpected(format!("{} exists already", path.display())));
        }
        std::fs::write(&path, "#!/bin/sh\n# imagefactory: no services during the build\nexit 101\n")
            .map_err(|e| DiskError::io("cannot write", &path, e))?;
        set_mode(&path, 0o755)?;
        Ok(ServicesHeld { path })
    }
}

/// See [`Chroot::hold_services`]; removing the file lets services start in the guest.
#[derive(Debug)]
pub struct ServicesHeld {
    path: PathBuf,
}

impl ServicesHeld {
    /// Removes the policy file, reporting a failure (drop ignores it).
    pub fn release(mut self) -> Result<(), DiskError> {
        let path = std::mem::take(&mut self.path);
        std::fs::remove_file(&path).map_err(|e| DiskError::io("cannot remove", &path, e))
    }
}

impl Drop for ServicesHeld {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Sets a file's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<(), DiskError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| DiskError::io("cannot chmod", path, e))
}

/// `guest_path` (absolute, as the guest sees it) under `root`, refusing `..` so a
/// template cannot write outside the tree.
pub fn host_path(root: &Path, guest_path: &str) -> Result<PathBuf, DiskError> {
    let rel = guest_path.trim_start_matches('/');
    if !guest_path.starts_with('/') || rel.is_empty() || rel.split('/').any(|c| c == "..") {
        return Err(DiskError::Unexpected(format!("'{guest_path}' is not an absolute path inside the image")));
    }
    Ok(root.join(rel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_shape() {
        let c = Chroot::new("/w/root").command("/bin/sh", ["/tmp/x"]);
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(c.get_program(), "unshare");
        assert_eq!(&args[..4], &["--mount", "--propagation", "private", "--"]);
        assert_eq!(&args[args.len() - 3..], &["/w/root", "/bin/sh", "/tmp/x"]);
        let envs: Vec<_> = c.get_envs().map(|(k, _)| k.to_string_lossy().into_owned()).collect();
        assert!(envs.contains(&"DEBIAN_FRONTEND".to_string()));
        assert!(!envs.contains(&"SOURCE_DATE_EPOCH".to_string()));
    }

    #[test]
    fn extra_environment_reaches_every_command_once() {
        let c = Chroot::new("/w/root").with_env("SOURCE_DATE_EPOCH", "1").with_env("SOURCE_DATE_EPOCH", "1700000000");
        let cmd = c.command("true", std::iter::empty::<&str>());
        let envs: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_string_lossy().into_owned(), v?.to_string_lossy().into_owned())))
            .collect();
        assert!(envs.contains(&("SOURCE_DATE_EPOCH".to_string(), "1700000000".to_string())), "{envs:?}");
        assert_eq!(envs.iter().filter(|(k, _)| k == "SOURCE_DATE_EPOCH").count(), 1);
    }

    #[test]
    fn guest_paths_stay_inside() {
        let root = Path::new("/w/root");
        assert_eq!(host_path(root, "/etc/motd").unwrap(), PathBuf::from("/w/root/etc/motd"));
        assert!(host_path(root, "etc/motd").is_err());
        assert!(host_path(root, "/etc/../../x").is_err());
        assert!(host_path(root, "/").is_err());
    }

    #[test]
    fn services_are_held_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("usr/sbin")).unwrap();
        let c = Chroot::new(dir.path());
        let p = dir.path().join("usr/sbin/policy-rc.d");
        {
            let _held = c.hold_services().unwrap();
            assert!(std::fs::read_to_string(&p).unwrap().contains("exit 101"));
            assert!(c.hold_services().is_err(), "a second hold would remove the first's file");
        }
        assert!(!p.exists());
        c.hold_services().unwrap().release().unwrap();
        assert!(!p.exists());
    }
}
