//! Finding the host tools a build needs before it starts, so a missing one fails the
//! build at once with the package to install, not half an hour in with "No such file".

use std::path::{Path, PathBuf};

use crate::error::DiskError;

/// A host tool and the Debian package that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tool {
    pub name: &'static str,
    pub package: &'static str,
}

impl Tool {
    pub const fn new(name: &'static str, package: &'static str) -> Tool {
        Tool { name, package }
    }
}

/// The tools [`crate::layout`], [`crate::ext4`], [`crate::grub`] and [`crate::chroot`] run.
pub const DISK_TOOLS: &[Tool] = &[
    Tool::new("sfdisk", "fdisk"),
    Tool::new("mkfs.ext4", "e2fsprogs"),
    Tool::new("debugfs", "e2fsprogs"),
    Tool::new("dumpe2fs", "e2fsprogs"),
    Tool::new("grub-mkimage", "grub-pc-bin"),
    Tool::new("unshare", "util-linux"),
    Tool::new("chroot", "coreutils"),
];

/// Directories searched besides `$PATH`: sbin tools are often not on a user's PATH.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Where `name` is installed, if it is.
pub fn find(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Fails with [`DiskError::MissingTool`] for the first tool that is not installed.
pub fn require(tools: &[Tool]) -> Result<(), DiskError> {
    match tools.iter().find(|t| find(t.name).is_none()) {
        Some(t) => Err(DiskError::MissingTool { tool: t.name.to_string(), package: t.package.to_string() }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn present_and_missing_tools() {
        assert!(find("sh").is_some());
        assert!(require(&[Tool::new("sh", "dash")]).is_ok());
        let err = require(&[Tool::new("sh", "dash"), Tool::new("no-such-tool-xyz", "nothing")]).unwrap_err();
        assert_eq!(err.to_string(), "no-such-tool-xyz is not installed (Debian package nothing; run scripts/setup.sh)");
    }
}
