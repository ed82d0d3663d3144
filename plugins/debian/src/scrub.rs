//! What makes two builds of the same image differ, taken out of the tree before it is
//! written: records of the build itself, and identities each machine must have its own.
//!
//! mmdebstrap does the same at the end of its own run (the first list below is its
//! list); this runs again after the template's packages and commands, which write
//! these files anew. Everything else a build writes is the same on every run once
//! SOURCE_DATE_EPOCH is set for the package scripts (shadow's last-change days, the
//! initramfs, Python's byte code) and the tree's times are clamped.
//!
//! - `/etc/machine-id` is left empty, Debian's convention for an image (what
//!   mmdebstrap and Debian's cloud images ship): systemd generates the ID at first boot
//!   and commits it once the root is writable, without treating the boot as a "first
//!   boot" that would reapply unit presets.
//! - SSH host keys are removed, and where OpenSSH's server is installed a unit
//!   ([`SSH_KEYS_UNIT`]) makes them at first boot (Debian's openssh-server makes them
//!   only in its postinst, so without the unit sshd would not start).

use std::path::Path;

use diskimage::DiskError;

/// Logs and caches of the package tools: when they ran, and what they printed.
pub const BUILD_RECORDS: &[&str] = &[
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/cache/ldconfig/aux-cache",
    "var/lib/dbus/machine-id",
    "var/lib/systemd/random-seed",
    "var/lib/systemd/credential.secret",
];

/// Directories whose files are all build records: apt's history, terminal log and
/// solver dump (`eipp.log.xz`).
pub const BUILD_RECORD_DIRS: &[&str] = &["var/log/apt"];

/// The unit that makes SSH host keys at first boot, for images with sshd.
pub const SSH_KEYS_UNIT: &str = "imagefactory-ssh-host-keys.service";

/// Its text: `ssh-keygen -A` makes each missing key type, before the server starts.
/// (Not ordered before `ssh.socket`: sockets start before basic.target, which every
/// ordinary service waits for, so that order would be a cycle.)
pub const SSH_KEYS_UNIT_TEXT: &str = "[Unit]\n\
Description=Generate SSH host keys (removed from the image so each machine has its own)\n\
Before=ssh.service\n\
ConditionPathExists=/usr/bin/ssh-keygen\n\n\
[Service]\nType=oneshot\nExecStart=/usr/bin/ssh-keygen -A\nRemainAfterExit=yes\n\n\
[Install]\nWantedBy=multi-user.target\n";

/// Removes the build's records and per-machine identities from `root`. Returns what was
/// removed or emptied (paths in the guest), for the build log.
pub fn scrub(root: &Path) -> Result<Vec<String>, DiskError> {
    let mut done = Vec::new();
    for rel in BUILD_RECORDS {
        if remove(root, rel)? {
            done.push(format!("/{rel}"));
        }
    }
    for dir in BUILD_RECORD_DIRS {
        for name in file_names(&root.join(dir))? {
            let rel = format!("{dir}/{name}");
            if remove(root, &rel)? {
                done.push(format!("/{rel}"));
            }
        }
    }
    // debconf's backups of its databases, from before the last package configured.
    for name in file_names(&root.join("var/cache/debconf"))?.into_iter().filter(|n| n.ends_with("-old")) {
        let rel = format!("var/cache/debconf/{name}");
        if remove(root, &rel)? {
            done.push(format!("/{rel}"));
        }
    }
    if empty_machine_id(root)? {
        done.push("/etc/machine-id (emptied)".to_string());
    }
    done.extend(ssh_host_keys(root)?);
    Ok(done)
}

/// Removes `rel` (a file or symlink) if it is there.
fn remove(root: &Path, rel: &str) -> Result<bool, DiskError> {
    let path = root.join(rel);
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_dir() => Ok(false),
        Ok(_) => std::fs::remove_file(&path).map(|_| true).map_err(|e| DiskError::io("cannot remove", &path, e)),
        Err(_) => Ok(false),
    }
}

/// The names of the entries of `dir`, sorted; none if it does not exist.
fn file_names(dir: &Path) -> Result<Vec<String>, DiskError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut names = Vec::new();
    for e in entries {
        let e = e.map_err(|err| DiskError::io("cannot read directory", dir, err))?;
        names.push(e.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Empties /etc/machine-id (creating it, mode 0444, if it is missing). Whether it held
/// anything.
fn empty_machine_id(root: &Path) -> Result<bool, DiskError> {
    let path = root.join("etc/machine-id");
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() && m.len() == 0 => Ok(false),
        Ok(m) if m.is_file() => {
            std::fs::write(&path, "").map_err(|e| DiskError::io("cannot empty", &path, e))?;
            Ok(true)
        }
        Ok(_) => {
            // A symlink (or anything else) would make the guest write the ID elsewhere.
            std::fs::remove_file(&path).map_err(|e| DiskError::io("cannot remove", &path, e))?;
            write_machine_id(&path)?;
            Ok(true)
        }
        Err(_) => {
            write_machine_id(&path)?;
            Ok(false)
        }
    }
}

fn write_machine_id(path: &Path) -> Result<(), DiskError> {
    std::fs::write(path, "").map_err(|e| DiskError::io("cannot write", path, e))?;
    diskimage::chroot::set_mode(path, 0o444)
}

/// Removes /etc/ssh/ssh_host_* and, when the image has sshd, installs and enables
/// [`SSH_KEYS_UNIT`] (the `multi-user.target.wants` link `systemctl enable` would make).
fn ssh_host_keys(root: &Path) -> Result<Vec<String>, DiskError> {
    let mut done = Vec::new();
    let ssh = root.join("etc/ssh");
    for name in file_names(&ssh)?.into_iter().filter(|n| n.starts_with("ssh_host_")) {
        let rel = format!("etc/ssh/{name}");
        if remove(root, &rel)? {
            done.push(format!("/{rel}"));
        }
    }
    let has_sshd = ["usr/sbin/sshd", "sbin/sshd"].iter().any(|p| std::fs::symlink_metadata(root.join(p)).is_ok());
    if has_sshd {
        let unit = root.join("etc/systemd/system").join(SSH_KEYS_UNIT);
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        std::fs::create_dir_all(&wants).map_err(|e| DiskError::io("cannot create", &wants, e))?;
        std::fs::write(&unit, SSH_KEYS_UNIT_TEXT).map_err(|e| DiskError::io("cannot write", &unit, e))?;
        diskimage::chroot::set_mode(&unit, 0o644)?;
        let link = wants.join(SSH_KEYS_UNIT);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(format!("/etc/systemd/system/{SSH_KEYS_UNIT}"), &link)
            .map_err(|e| DiskError::io("cannot link", &link, e))?;
        done.push(format!("SSH host keys: made at first boot by {SSH_KEYS_UNIT}"));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn build_records_and_identities_go_and_the_rest_stays() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        put(root, "var/log/dpkg.log", "2026-01-10 10:00:00 install x");
        put(root, "var/log/apt/history.log", "Start-Date: 2026-01-10");
        put(root, "var/log/apt/eipp.log.xz", "xz");
        put(root, "var/cache/debconf/config.dat", "keep");
        put(root, "var/cache/debconf/config.dat-old", "old");
        put(root, "var/cache/ldconfig/aux-cache", "cache");
        put(root, "etc/machine-id", "0123456789abcdef0123456789abcdef\n");
        put(root, "etc/ssh/ssh_host_ed25519_key", "secret");
        put(root, "etc/ssh/ssh_host_ed25519_key.pub", "public");
        put(root, "etc/ssh/sshd_config", "keep");
        put(root, "usr/sbin/sshd", "");
        put(root, "var/log/lastlog", "");

        let done = scrub(root).unwrap();
        for gone in [
            "var/log/dpkg.log",
            "var/log/apt/history.log",
            "var/log/apt/eipp.log.xz",
            "var/cache/debconf/config.dat-old",
            "var/cache/ldconfig/aux-cache",
            "etc/ssh/ssh_host_ed25519_key",
            "etc/ssh/ssh_host_ed25519_key.pub",
        ] {
            assert!(!root.join(gone).exists(), "{gone} is still there");
            assert!(done.contains(&format!("/{gone}")), "{gone} not reported: {done:?}");
        }
        for kept in ["var/cache/debconf/config.dat", "etc/ssh/sshd_config", "var/log/lastlog", "var/log/apt"] {
            assert!(root.join(kept).exists(), "{kept} was removed");
        }
        assert_eq!(std::fs::read(root.join("etc/machine-id")).unwrap(), b"");
        let unit = std::fs::read_to_string(root.join("etc/systemd/system").join(SSH_KEYS_UNIT)).unwrap();
        assert!(unit.contains("ExecStart=/usr/bin/ssh-keygen -A") && unit.contains("Before=ssh.service"));
        let link = root.join("etc/systemd/system/multi-user.target.wants").join(SSH_KEYS_UNIT);
        assert_eq!(std::fs::read_link(link).unwrap(), Path::new("/etc/systemd/system").join(SSH_KEYS_UNIT));

        // Twice changes nothing more, and reports nothing.
        let again = scrub(root).unwrap();
        assert_eq!(again, vec![format!("SSH host keys: made at first boot by {SSH_KEYS_UNIT}")]);
    }

    #[test]
    fn no_sshd_no_unit_and_a_missing_machine_id_is_made_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        assert!(scrub(dir.path()).unwrap().is_empty());
        assert_eq!(std::fs::read(dir.path().join("etc/machine-id")).unwrap(), b"");
        assert!(!dir.path().join("etc/systemd/system").join(SSH_KEYS_UNIT).exists());
    }
}
