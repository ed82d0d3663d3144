//! The tree of a disk image's partition copied out into a directory, so it can be
//! changed in a chroot and written back with [`crate::ext4::Ext4::write_pinned`]: a
//! file system changed through the kernel (journal, allocator, mount times, the last
//! mount point) is never the same bytes twice; one written from a tree can be.
//!
//! The partition is loop-mounted read-only in a private mount namespace (as
//! [`crate::chroot`] does), so the image is never written and the mount never seen
//! outside; `cp -a` keeps ownership, modes, times, hard links, extended attributes
//! (file capabilities such as ping's) and holes.

use std::path::Path;
use std::process::Command;

use crate::error::DiskError;
use crate::process::{self, Options, Watch};

/// Runs inside the new namespace.
const COPY_OUT: &str = r#"set -e
image="$1"; offset="$2"; sizelimit="$3"; mnt="$4"; dest="$5"
mount -o loop,ro,offset="$offset",sizelimit="$sizelimit" "$image" "$mnt"
cp -a "$mnt/." "$dest/"
umount "$mnt""#;

/// A partition of a disk image, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Extent<'a> {
    pub image: &'a Path,
    pub offset: u64,
    pub size: u64,
}

/// Copies everything in the file system of `partition` into `dest` (an empty
/// directory), mounting it at `mountpoint` (another) meanwhile. Needs root.
pub fn copy_out(partition: Extent, mountpoint: &Path, dest: &Path, watch: &dyn Watch) -> Result<(), DiskError> {
    for d in [mountpoint, dest] {
        std::fs::create_dir_all(d).map_err(|e| DiskError::io("cannot create", d, e))?;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c", COPY_OUT, "copy-out"])
        .arg(partition.image)
        .arg(partition.offset.to_string())
        .arg(partition.size.to_string())
        .arg(mountpoint)
        .arg(dest);
    process::run("copying the image's files out", cmd, Options::default(), watch)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::Ext4;
    use crate::layout::Layout;
    use crate::process::Quiet;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_tree_comes_out_as_it_went_in_and_the_image_is_untouched() {
        crate::tools::require(crate::tools::DISK_TOOLS).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
        crate::chroot::set_mode(&root.join("usr/bin/tool"), 0o4755).unwrap();
        std::fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/alias")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        let img = dir.path().join("disk.img");
        let layout = Layout::single(64 << 20).unwrap();
        layout.create(&img, &Quiet).unwrap();
        Ext4 { uuid: "0b8e6c6e-0000-4000-8000-00000000000e".into(), label: "root".into() }
            .write(&img, &layout, &root, &Quiet)
            .unwrap();
        let before = std::fs::read(&img).unwrap();

        let part = Extent { image: &img, offset: layout.partition_start, size: layout.partition_size };
        let out = dir.path().join("out");
        copy_out(part, &dir.path().join("mnt"), &out, &Quiet).unwrap();
        let tool = std::fs::symlink_metadata(out.join("usr/bin/tool")).unwrap();
        assert_eq!(tool.mode() & 0o7777, 0o4755);
        assert_eq!(tool.ino(), std::fs::symlink_metadata(out.join("usr/bin/alias")).unwrap().ino(), "hard link lost");
        assert_eq!(std::fs::read_link(out.join("bin")).unwrap(), Path::new("usr/bin"));
        assert!(out.join("lost+found").is_dir());
        assert!(std::fs::read(&img).unwrap() == before, "copying out changed the image");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(dir.path().to_str().unwrap()), "the mount outlived the copy");
    }
}
