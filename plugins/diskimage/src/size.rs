//! How big a disk has to be for a root tree, and how big an image file really is.
//!
//! The file system is written straight from a directory (`mkfs.ext4 -d`), so its size
//! must be chosen before anything is written: too small and mkfs fails half way with
//! "Could not allocate block"; so the need is computed from the tree and checked first.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::DiskError;
use crate::layout::PARTITION_START;

/// ext4 block size used by [`crate::ext4`].
pub const BLOCK: u64 = 4096;

/// The disk size used when a template names none: the images are sparse, so a roomy
/// default costs nothing until it is used.
pub const DEFAULT_DISK: u64 = 2 << 30;

/// What a directory tree will take in a file system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Data, each file rounded up to whole blocks (hard links counted once).
    pub bytes: u64,
    /// Files, directories and links.
    pub inodes: u64,
}

/// Walks `dir` without following symlinks.
pub fn tree_usage(dir: &Path) -> Result<Usage, DiskError> {
    let mut usage = Usage::default();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| DiskError::io("cannot read directory", &d, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| DiskError::io("cannot read directory", &d, e))?;
            let path = entry.path();
            let md = std::fs::symlink_metadata(&path).map_err(|e| DiskError::io("cannot stat", &path, e))?;
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            usage.inodes += 1;
            usage.bytes += md.len().div_ceil(BLOCK) * BLOCK;
            if md.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(usage)
}

/// The smallest disk that holds `usage`: the tree, plus a quarter for ext4's metadata,
/// inode tables (256 bytes per inode at one inode per 16 KiB) and the journal, plus
/// 256 MiB for the first boot's logs and a little room to work.
pub fn needed_disk(usage: Usage) -> u64 {
    let fs = usage.bytes + usage.bytes / 4 + usage.inodes * 256 + (256 << 20);
    round_up_mib(PARTITION_START + fs)
}

/// The disk size to build: the template's, if it names one (refused if too small), or
/// the larger of [`DEFAULT_DISK`] and what the content needs.
pub fn choose_disk(requested: Option<u64>, usage: Usage) -> Result<u64, DiskError> {
    let needed = needed_disk(usage);
    match requested {
        Some(r) if r < needed => Err(DiskError::TooSmall { requested: r, needed }),
        Some(r) => Ok(r),
        None => Ok(DEFAULT_DISK.max(needed)),
    }
}

fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20) << 20
}

/// Bytes a file really occupies on the host (a sparse image's holes take none).
pub fn allocated(path: &Path) -> Result<u64, DiskError> {
    let md = std::fs::metadata(path).map_err(|e| DiskError::io("cannot stat", path, e))?;
    Ok(md.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_blocks_and_inodes_once_per_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 5000]).unwrap();
        std::fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", dir.path().join("d/l")).unwrap();
        let u = tree_usage(dir.path()).unwrap();
        assert_eq!(u.inodes, 3, "a (b is the same inode), d, d/l");
        // a: 2 blocks; d: a directory of one block; the symlink's length rounds to one block.
        assert_eq!(u.bytes, 2 * BLOCK + 4096_u64.div_ceil(BLOCK) * BLOCK + BLOCK);
    }

    #[test]
    fn disk_size_choice() {
        let small = Usage { bytes: 600 << 20, inodes: 20_000 };
        let need = needed_disk(small);
        assert_eq!(need % (1 << 20), 0);
        assert!(need > (600 << 20) + (256 << 20));
        assert_eq!(choose_disk(None, small).unwrap(), DEFAULT_DISK);
        assert_eq!(choose_disk(Some(10 << 30), small).unwrap(), 10 << 30);
        let err = choose_disk(Some(100 << 20), small).unwrap_err();
        assert!(matches!(err, DiskError::TooSmall { requested, needed } if requested == 100 << 20 && needed == need));
        let big = Usage { bytes: 3 << 30, inodes: 100_000 };
        assert!(choose_disk(None, big).unwrap() > 3 << 30);
    }
}
