//! A tree's file times pinned to a build's SOURCE_DATE_EPOCH before it is written
//! into a file system.
//!
//! `mkfs.ext4 -d` copies each file's times as the build host reports them. What a
//! package shipped keeps its own (older) mtime; what the build created or changed has
//! the moment of the build, which differs on every run. Clamping sets every mtime later
//! than the epoch to the epoch (the convention of reproducible-builds.org), and every
//! atime to the mtime (reading a file moves its atime, so it says nothing about the
//! image). The change time cannot be set from user space at all; see
//! [`crate::ext4::Pinned`] for how the file system gets a fixed one instead.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::DiskError;

/// Clamps the times of `root` and everything under it (symlinks themselves, never what
/// they point at). Returns how many entries had an mtime later than `epoch`.
pub fn clamp_tree(root: &Path, epoch: i64) -> Result<u64, DiskError> {
    let mut clamped = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let md = std::fs::symlink_metadata(&path).map_err(|e| DiskError::io("cannot stat", &path, e))?;
        if md.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| DiskError::io("cannot read directory", &path, e))? {
                stack.push(entry.map_err(|e| DiskError::io("cannot read directory", &path, e))?.path());
            }
        }
        // Setting a child's times leaves its directory's mtime alone, so the order of
        // the walk does not matter.
        let mtime = md.mtime();
        let pinned = mtime.min(epoch);
        if mtime > epoch {
            clamped += 1;
        }
        set_times(&path, pinned)?;
    }
    Ok(clamped)
}

/// Sets atime and mtime of `path` (not following a symlink) to `secs`, nanoseconds 0.
fn set_times(path: &Path, secs: i64) -> Result<(), DiskError> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| DiskError::Unexpected(format!("{} holds a NUL byte", path.display())))?;
    let t = libc::timespec { tv_sec: secs as libc::time_t, tv_nsec: 0 };
    let times = [t, t];
    // SAFETY: `c` is a NUL-terminated path and `times` two valid timespecs, both alive
    // for the call; utimensat only reads them.
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) };
    if rc != 0 {
        return Err(DiskError::io("cannot set the times of", path, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(p: &Path) -> (i64, i64) {
        let md = std::fs::symlink_metadata(p).unwrap();
        (md.atime(), md.mtime())
    }

    #[test]
    fn newer_times_are_clamped_older_ones_kept_and_links_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/new"), "made by the build").unwrap();
        let old = root.join("etc/old");
        std::fs::write(&old, "from a package").unwrap();
        set_times(&old, 1_000_000).unwrap();
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "not in the tree").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("etc/link")).unwrap();

        let epoch = 1_700_000_000;
        // root, etc, new and the link are newer; old is not.
        assert_eq!(clamp_tree(&root, epoch).unwrap(), 4);
        assert_eq!(times(&root.join("etc/new")), (epoch, epoch));
        assert_eq!(times(&root.join("etc")), (epoch, epoch));
        assert_eq!(times(&root), (epoch, epoch));
        assert_eq!(times(&old), (1_000_000, 1_000_000));
        assert_eq!(times(&root.join("etc/link")), (epoch, epoch));
        assert!(times(&outside).1 > epoch, "the symlink's target outside the tree was changed");
        assert_eq!(clamp_tree(&root, epoch).unwrap(), 0, "a second pass finds nothing newer");
    }
}
