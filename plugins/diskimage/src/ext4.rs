//! Writing a root tree into a partition of an image file with `mkfs.ext4 -d`: no loop
//! device, no mount, so no root-only kernel state to clean up if the build dies.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::error::DiskError;
use crate::layout::Layout;
use crate::process::{self, Options, Watch};

/// The file system to write into partition 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4 {
    /// The file system UUID, chosen beforehand so /etc/fstab and the kernel command line
    /// can name it before the file system exists.
    pub uuid: String,
    pub label: String,
}

impl Ext4 {
    /// The `mkfs.ext4` arguments that write `root` into the layout's partition.
    ///
    /// `metadata_csum_seed` and `orphan_file` are turned off: e2fsprogs 1.47 enables them
    /// by default, but kernels before 5.15 (Debian 11) cannot mount a file system with
    /// `orphan_file`, and older GRUBs cannot read one with `metadata_csum_seed`.
    pub fn mkfs_args(&self, image: &Path, layout: &Layout, root: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["-F", "-q", "-t", "ext4", "-b", "4096", "-L", &self.label, "-U", &self.uuid]
            .iter()
            .map(OsString::from)
            .collect();
        args.push("-O".into());
        args.push("^metadata_csum_seed,^orphan_file".into());
        args.push("-E".into());
        args.push(format!("offset={},root_owner=0:0", layout.partition_start).into());
        args.push("-d".into());
        args.push(root.into());
        args.push(image.into());
        args.push(format!("{}k", layout.partition_size / 1024).into());
        args
    }

    /// Writes `root` into partition 1 of `image`, which [`Layout::create`] made.
    pub fn write(&self, image: &Path, layout: &Layout, root: &Path, watch: &dyn Watch) -> Result<(), DiskError> {
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args(self.mkfs_args(image, layout, root));
        process::run("mkfs.ext4", cmd, Options::default(), watch)?;
        Ok(())
    }
}

/// A random UUID in its text form, from the kernel (no crate needed for 16 random bytes).
pub fn random_uuid() -> Result<String, DiskError> {
    let path = Path::new("/proc/sys/kernel/random/uuid");
    let text = std::fs::read_to_string(path).map_err(|e| DiskError::io("cannot read", path, e))?;
    Ok(text.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Quiet;

    #[test]
    fn mkfs_arguments() {
        let fs = Ext4 { uuid: "0b8e6c6e-0000-4000-8000-000000000001".into(), label: "root".into() };
        let layout = Layout::single(2 << 30).unwrap();
        let args: Vec<String> = fs
            .mkfs_args(Path::new("/x/disk.raw"), &layout, Path::new("/x/root"))
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("-U 0b8e6c6e-0000-4000-8000-000000000001"), "{joined}");
        assert!(joined.contains("-E offset=1048576,root_owner=0:0"), "{joined}");
        assert!(joined.ends_with("-d /x/root /x/disk.raw 2096128k"), "{joined}");
    }

    #[test]
    fn writes_a_tree_into_the_partition() {
        crate::tools::require(crate::tools::DISK_TOOLS).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hostname"), "probe\n").unwrap();
        let img = dir.path().join("disk.img");
        let layout = Layout::single(64 << 20).unwrap();
        layout.create(&img, &Quiet).unwrap();
        let uuid = random_uuid().unwrap();
        Ext4 { uuid: uuid.clone(), label: "root".into() }.write(&img, &layout, &root, &Quiet).unwrap();
        // Read it back with debugfs through the same offset.
        let out = Command::new("debugfs")
            .arg("-R")
            .arg("cat /etc/hostname")
            .arg(format!("{}?offset={}", img.display(), layout.partition_start))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "probe\n");
        let out = Command::new("dumpe2fs")
            .arg("-h")
            .arg(format!("{}?offset={}", img.display(), layout.partition_start))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&uuid), "{text}");
        assert!(!text.contains("orphan_file"), "{text}");
    }

    #[test]
    fn uuids_are_random() {
        let a = random_uuid().unwrap();
        assert_eq!(a.len(), 36);
        assert_ne!(a, random_uuid().unwrap());
    }
}
