//! Writing a root tree into a partition of an image file with `mkfs.ext4 -d`: no loop
//! device, no mount, so no root-only kernel state to clean up if the build dies.
//!
//! [`Ext4::write_pinned`] writes the same tree into the same layout as the same bytes
//! every time (see [`Pinned`]); [`Superblock::read`] reads back what a later stage
//! needs to write a file system like it.

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
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

    /// [`Ext4::mkfs_args`] with the directory hash seed given, instead of a random one.
    pub fn mkfs_args_pinned(&self, image: &Path, layout: &Layout, root: &Path, pinned: &Pinned) -> Vec<OsString> {
        let mut args = self.mkfs_args(image, layout, root);
        if let Some(ext) = args.iter().position(|a| a == "-E").map(|i| i + 1) {
            let mut value = args[ext].clone();
            value.push(format!(",hash_seed={}", pinned.hash_seed));
            args[ext] = value;
        }
        args
    }

    /// Writes `root` like [`Ext4::write`], but so that the same tree (with its times
    /// clamped, [`crate::clamp`]) gives the same bytes every time: see [`Pinned`].
    pub fn write_pinned(
        &self,
        image: &Path,
        layout: &Layout,
        root: &Path,
        pinned: &Pinned,
        watch: &dyn Watch,
    ) -> Result<(), DiskError> {
        let mut cmd = Command::new("mkfs.ext4");
        cmd.args(self.mkfs_args_pinned(image, layout, root, pinned));
        pinned.environment(&mut cmd);
        process::run("mkfs.ext4", cmd, Options::default(), watch)?;
        pinned.pin_inode_times(image, layout.partition_start, watch)
    }
}

/// What makes `mkfs.ext4 -d` write the same bytes for the same tree.
///
/// Besides the UUID ([`Ext4::uuid`]), mke2fs chooses a random directory hash seed (it
/// decides where names land in hashed directories) unless given one, and stamps the
/// superblock and every new inode's creation time with the current time unless
/// `E2FSPROGS_FAKE_TIME` says otherwise. Each inode's access and change times are
/// copied from the build host's `lstat`: the change time is the moment the build
/// created the file and cannot be set from user space, so after mkfs every inode's
/// atime and ctime are set to [`Pinned::time`] with debugfs (mtimes are the tree's own,
/// clamped before). Entries are added in name order (e2fsprogs 1.47 sorts each
/// directory; the C locale is set so the order never depends on the host's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// `-E hash_seed=` (a UUID).
    pub hash_seed: String,
    /// Seconds since 1970: the build's SOURCE_DATE_EPOCH.
    pub time: u64,
}

impl Pinned {
    /// The environment of mke2fs and debugfs.
    fn environment(&self, cmd: &mut Command) {
        cmd.env("E2FSPROGS_FAKE_TIME", self.time.to_string()).env("LC_ALL", "C");
    }

    /// Sets atime and ctime (nanoseconds 0) of every inode in use in the file system
    /// at `offset` of `image`, but the reserved ones mke2fs stamped itself.
    fn pin_inode_times(&self, image: &Path, offset: u64, watch: &dyn Watch) -> Result<(), DiskError> {
        let device = format!("{}?offset={offset}", image.display());
        let mut dump = Command::new("dumpe2fs");
        dump.arg(&device);
        let out = process::run("dumpe2fs", dump, Options { capture_stdout: true, ..Default::default() }, watch)?;
        let used = used_inodes(&String::from_utf8_lossy(&out.stdout))?;
        let script = inode_time_script(&used, self.time);
        // debugfs echoes every request on stdout and reports a request it cannot carry
        // out on stderr, exiting 0 all the same: both are read here, not logged.
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", r#"exec debugfs -w -f - "$1" 2>&1"#, "debugfs"]).arg(&device);
        self.environment(&mut cmd);
        let out = process::run(
            "debugfs",
            cmd,
            Options { stdin: Some(script.into_bytes()), capture_stdout: true, ..Default::default() },
            watch,
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(bad) = text.lines().find(|l| !l.starts_with("debugfs") && !l.trim().is_empty()) {
            return Err(DiskError::Unexpected(format!("debugfs could not set inode times: {bad}")));
        }
        Ok(())
    }
}

/// The debugfs requests that set atime and ctime of `inodes` to `time`.
pub fn inode_time_script(inodes: &[u64], time: u64) -> String {
    let mut script = String::with_capacity(inodes.len() * 120);
    for ino in inodes {
        for field in ["atime", "ctime"] {
            script.push_str(&format!("sif <{ino}> {field} @{time}\nsif <{ino}> {field}_extra 0\n"));
        }
    }
    script
}

/// The first inode of a file system that mke2fs does not reserve (ext4's default).
const FIRST_INO: u64 = 11;
/// The root directory's inode, the one reserved inode that holds the tree.
const ROOT_INO: u64 = 2;

/// The inodes in use, from `dumpe2fs` (every group's "Free inodes:" ranges): the root
/// directory and every inode from [`FIRST_INO`] on that is not free.
pub fn used_inodes(dumpe2fs: &str) -> Result<Vec<u64>, DiskError> {
    let bad = |why: &str| DiskError::Unexpected(format!("cannot read dumpe2fs's inode bitmaps: {why}"));
    let field = |name: &str| {
        dumpe2fs
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse::<u64>()))
            .ok_or_else(|| bad(&format!("no '{name}'")))?
            .map_err(|e| bad(&format!("'{name}' {e}")))
    };
    let total = field("Inode count:")?;
    let mut free = vec![false; total as usize + 1];
    let mut groups = 0;
    for line in dumpe2fs.lines() {
        // Each group's lines are indented; the header's "Free inodes:" is a count.
        let Some(ranges) = line.strip_prefix(' ').and_then(|l| l.trim_start().strip_prefix("Free inodes:")) else {
            continue;
        };
        groups += 1;
        for range in ranges.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (a, b) = range.split_once('-').unwrap_or((range, range));
            let (a, b): (u64, u64) = (a.parse().map_err(|_| bad(range))?, b.parse().map_err(|_| bad(range))?);
            if a == 0 || b > total || a > b {
                return Err(bad(range));
            }
            for i in a..=b {
                free[i as usize] = true;
            }
        }
    }
    if groups == 0 {
        return Err(bad("no group lists its free inodes"));
    }
    Ok(std::iter::once(ROOT_INO).chain((FIRST_INO..=total).filter(|&i| !free[i as usize])).collect())
}

/// What [`Superblock::read`] finds in an ext2/3/4 superblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: String,
    /// The directory hash seed, as `-E hash_seed=` takes it.
    pub hash_seed: String,
    pub label: String,
    /// When mke2fs made it (its `E2FSPROGS_FAKE_TIME`, if it had one).
    pub mkfs_time: u64,
}

impl Superblock {
    /// Reads the superblock of the file system at byte `offset` of `image`.
    pub fn read(image: &Path, offset: u64) -> Result<Superblock, DiskError> {
        let mut f = std::fs::File::open(image).map_err(|e| DiskError::io("cannot open", image, e))?;
        let mut sb = [0u8; 1024];
        f.seek(SeekFrom::Start(offset + 1024))
            .and_then(|_| f.read_exact(&mut sb))
            .map_err(|e| DiskError::io("cannot read the superblock of", image, e))?;
        Superblock::parse(&sb).ok_or_else(|| {
            DiskError::Unexpected(format!("{} has no ext2/3/4 file system at byte {offset}", image.display()))
        })
    }

    /// The fields of a superblock's 1024 bytes (the kernel's `struct ext4_super_block`).
    pub fn parse(sb: &[u8; 1024]) -> Option<Superblock> {
        if u16::from_le_bytes([sb[0x38], sb[0x39]]) != 0xEF53 {
            return None;
        }
        let label = &sb[0x78..0x88];
        let label = &label[..label.iter().position(|&b| b == 0).unwrap_or(label.len())];
        Some(Superblock {
            uuid: format_uuid(&sb[0x68..0x78]),
            hash_seed: format_uuid(&sb[0xEC..0xFC]),
            label: String::from_utf8_lossy(label).into_owned(),
            mkfs_time: u64::from(u32::from_le_bytes([sb[0x108], sb[0x109], sb[0x10A], sb[0x10B]])),
        })
    }
}

/// 16 bytes in a UUID's text form (as libuuid's `uuid_unparse` writes them).
pub fn format_uuid(b: &[u8]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
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
    fn pinned_writes_of_the_same_tree_are_the_same_bytes() {
        crate::tools::require(crate::tools::DISK_TOOLS).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let epoch = 1_700_000_000;
        let fs = Ext4 { uuid: "0b8e6c6e-0000-4000-8000-000000000001".into(), label: "root".into() };
        let pinned = Pinned { hash_seed: "5f1c2a0e-1111-4222-8333-444455556666".into(), time: epoch };
        let layout = Layout::single(64 << 20).unwrap();
        let mut images = Vec::new();
        for (n, names) in [["b", "a", "c"], ["c", "b", "a"]].iter().enumerate() {
            // The same tree made in another order, a second later: other ctimes.
            let root = dir.path().join(format!("root{n}"));
            std::fs::create_dir_all(root.join("etc/many")).unwrap();
            for name in names {
                std::fs::write(root.join("etc").join(name), format!("{name}\n")).unwrap();
            }
            for i in 0..200 {
                std::fs::write(root.join(format!("etc/many/f{i}")), "x").unwrap();
            }
            crate::clamp::clamp_tree(&root, epoch as i64).unwrap();
            let img = dir.path().join(format!("disk{n}.img"));
            layout.create_with_id(&img, Some(7), &Quiet).unwrap();
            fs.write_pinned(&img, &layout, &root, &pinned, &Quiet).unwrap();
            images.push(img);
            std::thread::sleep(std::time::Duration::from_millis(1100));
        }
        let (a, b) = (std::fs::read(&images[0]).unwrap(), std::fs::read(&images[1]).unwrap());
        let differing = a.iter().zip(&b).filter(|(x, y)| x != y).count();
        assert_eq!(differing, 0, "two pinned writes of the same tree differ in {differing} bytes");
        let sb = Superblock::read(&images[0], layout.partition_start).unwrap();
        assert_eq!(
            sb,
            Superblock {
                uuid: fs.uuid.clone(),
                hash_seed: pinned.hash_seed.clone(),
                label: "root".into(),
                mkfs_time: epoch
            }
        );
        let out = Command::new("debugfs")
            .arg("-R")
            .arg("stat /etc/a")
            .arg(format!("{}?offset={}", images[0].display(), layout.partition_start))
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&out.stdout);
        for field in ["ctime", "atime", "mtime"] {
            assert!(stat.contains(&format!("{field}: 0x{epoch:08x}:00000000")), "{field} not pinned: {stat}");
        }
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(format!("{}?offset={}", images[0].display(), layout.partition_start))
            .output()
            .unwrap();
        assert!(fsck.status.success(), "e2fsck: {}", String::from_utf8_lossy(&fsck.stdout));
    }

    #[test]
    fn used_inodes_from_the_free_ranges() {
        let dump = "Inode count:              32\nFree inodes:              12\nInodes per group:         16\n\
Group 0: (Blocks 0-99)\n  Free inodes: 14-16\nGroup 1: (Blocks 100-199)\n  Free inodes: 17, 20-32\n";
        assert_eq!(used_inodes(dump).unwrap(), vec![2, 11, 12, 13, 18, 19]);
        assert!(used_inodes("Inode count: 8\n").is_err(), "no group: nothing can be said");
        assert!(used_inodes("Inode count: 8\n  Free inodes: 3-99\n").is_err());
        assert_eq!(
            inode_time_script(&[12], 5),
            "sif <12> atime @5\nsif <12> atime_extra 0\nsif <12> ctime @5\nsif <12> ctime_extra 0\n"
        );
    }

    #[test]
    fn superblock_fields_and_refusal() {
        let mut sb = [0u8; 1024];
        assert_eq!(Superblock::parse(&sb), None);
        sb[0x38] = 0x53;
        sb[0x39] = 0xEF;
        sb[0x68..0x78].copy_from_slice(&[0x11; 16]);
        sb[0x78..0x7c].copy_from_slice(b"root");
        sb[0x108..0x10c].copy_from_slice(&1_700_000_000u32.to_le_bytes());
        let got = Superblock::parse(&sb).unwrap();
        assert_eq!(got.uuid, "11111111-1111-1111-1111-111111111111");
        assert_eq!(got.hash_seed, "00000000-0000-0000-0000-000000000000");
        assert_eq!((got.label.as_str(), got.mkfs_time), ("root", 1_700_000_000));
    }

    #[test]
    fn pinned_arguments_add_the_hash_seed() {
        let fs = Ext4 { uuid: "u".into(), label: "root".into() };
        let layout = Layout::single(64 << 20).unwrap();
        let pinned = Pinned { hash_seed: "h".into(), time: 1 };
        let args: Vec<String> = fs
            .mkfs_args_pinned(Path::new("/x/d"), &layout, Path::new("/x/r"), &pinned)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(args.join(" ").contains("-E offset=1048576,root_owner=0:0,hash_seed=h "), "{args:?}");
    }

    #[test]
    fn uuids_are_random() {
        let a = random_uuid().unwrap();
        assert_eq!(a.len(), 36);
        assert_ne!(a, random_uuid().unwrap());
    }
}
