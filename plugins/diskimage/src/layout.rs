//! The partition table: one MBR (dos) table with a single Linux partition starting at
//! 1 MiB. The gap before it holds GRUB's core.img (BIOS boot from an MBR disk), and a
//! 1 MiB start keeps the partition aligned for every storage the image may land on.

use std::fs::OpenOptions;
use std::path::Path;
use std::process::Command;

use crate::error::DiskError;
use crate::process::{self, Options, Watch};

/// Bytes per sector of the images built here.
pub const SECTOR: u64 = 512;

/// Where partition 1 starts, in bytes.
pub const PARTITION_START: u64 = 1 << 20;

/// The whole disk and its one partition, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub disk_size: u64,
    pub partition_start: u64,
    pub partition_size: u64,
}

impl Layout {
    /// A disk of `disk_size` bytes (rounded down to whole MiB, so the partition ends on a
    /// MiB boundary) with one partition from 1 MiB to the end.
    pub fn single(disk_size: u64) -> Result<Layout, DiskError> {
        let disk_size = disk_size & !((1 << 20) - 1);
        if disk_size < PARTITION_START + (16 << 20) {
            return Err(DiskError::TooSmall { requested: disk_size, needed: PARTITION_START + (16 << 20) });
        }
        Ok(Layout { disk_size, partition_start: PARTITION_START, partition_size: disk_size - PARTITION_START })
    }

    /// The input `sfdisk` reads: a dos label, partition 1 bootable, type 83 (Linux).
    pub fn sfdisk_script(&self) -> String {
        self.sfdisk_script_with_id(None)
    }

    /// [`Layout::sfdisk_script`] with the MBR's disk identifier given, instead of the
    /// random one sfdisk chooses (a reproducible build needs the same one every time).
    pub fn sfdisk_script_with_id(&self, disk_id: Option<u32>) -> String {
        let id = disk_id.map(|id| format!("label-id: 0x{id:08x}\n")).unwrap_or_default();
        format!(
            "label: dos\n{id}unit: sectors\n\nstart={}, size={}, type=83, bootable\n",
            self.partition_start / SECTOR,
            self.partition_size / SECTOR
        )
    }

    /// Creates `image` as a sparse file of the disk's size and writes the partition table.
    pub fn create(&self, image: &Path, watch: &dyn Watch) -> Result<(), DiskError> {
        self.create_with_id(image, None, watch)
    }

    /// [`Layout::create`] with the MBR's disk identifier given (`None`: sfdisk's random one).
    pub fn create_with_id(&self, image: &Path, disk_id: Option<u32>, watch: &dyn Watch) -> Result<(), DiskError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(image)
            .map_err(|e| DiskError::io("cannot create the disk image", image, e))?;
        file.set_len(self.disk_size).map_err(|e| DiskError::io("cannot size the disk image", image, e))?;
        drop(file);
        let mut cmd = Command::new("sfdisk");
        cmd.args(["--quiet", "--no-reread", "--no-tell-kernel", "--wipe", "always"]).arg(image);
        process::run(
            "sfdisk",
            cmd,
            Options { stdin: Some(self.sfdisk_script_with_id(disk_id).into_bytes()), ..Default::default() },
            watch,
        )?;
        Ok(())
    }
}

/// One partition as `sfdisk -J` reports it (sectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub start: u64,
    pub size: u64,
    pub kind: String,
    pub bootable: bool,
}

/// The partition table of an image, as `sfdisk -J` reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// "dos" for MBR, "gpt" for GPT.
    pub label: String,
    pub partitions: Vec<Partition>,
}

/// Whether `image` holds an ext2/3/4 file system on the whole disk, with no partition
/// table: its superblock at byte 1024 (magic 0xEF53, a sane block size, inodes). A disk
/// like that may still end its first sector with the 0x55AA boot signature (a boot
/// loader such as extlinux writes its boot sector there), which sfdisk takes for an
/// empty dos label, so this is asked before the partition table is.
pub fn is_whole_disk_ext(image: &Path) -> Result<bool, DiskError> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(image).map_err(|e| DiskError::io("cannot open", image, e))?;
    let mut sb = [0u8; 64];
    f.seek(SeekFrom::Start(1024)).map_err(|e| DiskError::io("cannot read", image, e))?;
    if f.read_exact(&mut sb).is_err() {
        return Ok(false);
    }
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let magic = u16::from_le_bytes([sb[56], sb[57]]);
    Ok(magic == 0xEF53 && u32_at(0) > 0 && u32_at(24) <= 6)
}

/// Reads the partition table of `image` with `sfdisk -J`.
pub fn read(image: &Path) -> Result<Table, DiskError> {
    let mut cmd = Command::new("sfdisk");
    cmd.arg("-J").arg(image);
    let out = process::run("sfdisk -J", cmd, Options { capture_stdout: true, ..Default::default() }, &process::Quiet)?;
    parse_sfdisk_json(&String::from_utf8_lossy(&out.stdout))
}

/// Parses the JSON of `sfdisk -J`.
pub fn parse_sfdisk_json(text: &str) -> Result<Table, DiskError> {
    let bad = |why: &str| DiskError::Unexpected(format!("cannot read the partition table: {why}"));
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
    let t = &v["partitiontable"];
    let label = t["label"].as_str().ok_or_else(|| bad("no label"))?.to_string();
    let parts = t["partitions"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut partitions = Vec::new();
    for p in parts {
        partitions.push(Partition {
            start: p["start"].as_u64().ok_or_else(|| bad("a partition has no start"))?,
            size: p["size"].as_u64().ok_or_else(|| bad("a partition has no size"))?,
            kind: p["type"].as_str().unwrap_or_default().to_string(),
            bootable: p["bootable"].as_bool().unwrap_or(false),
        });
    }
    Ok(Table { label, partitions })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_disk_ext_file_system_is_told_from_a_partitioned_disk() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.img");
        std::fs::File::create(&whole).unwrap().set_len(8 << 20).unwrap();
        let st = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&whole).status().expect("mkfs.ext4 (e2fsprogs)");
        assert!(st.success());
        // A boot sector's signature, as extlinux leaves one: still the whole disk.
        let mut f = OpenOptions::new().write(true).open(&whole).unwrap();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(510)).unwrap();
        std::io::Write::write_all(&mut f, &[0x55, 0xaa]).unwrap();
        assert!(is_whole_disk_ext(&whole).unwrap());

        let parted = dir.path().join("parted.img");
        Layout::single(32 << 20).unwrap().create(&parted, &process::Quiet).unwrap();
        assert!(!is_whole_disk_ext(&parted).unwrap());
        let tiny = dir.path().join("tiny.img");
        std::fs::write(&tiny, [0u8; 100]).unwrap();
        assert!(!is_whole_disk_ext(&tiny).unwrap());
    }

    #[test]
    fn single_partition_layout() {
        let l = Layout::single((2 << 30) + 12345).unwrap();
        assert_eq!(l.disk_size, 2 << 30);
        assert_eq!(l.partition_start, 1 << 20);
        assert_eq!(l.partition_size, (2 << 30) - (1 << 20));
        assert_eq!(l.sfdisk_script(), "label: dos\nunit: sectors\n\nstart=2048, size=4192256, type=83, bootable\n");
        assert!(matches!(Layout::single(4 << 20), Err(DiskError::TooSmall { .. })));
    }

    #[test]
    fn parses_sfdisk_json() {
        let json = r#"{"partitiontable": {"label": "dos", "id": "0x1234", "device": "x.img", "unit": "sectors",
            "sectorsize": 512, "partitions": [{"node": "x.img1", "start": 2048, "size": 4192256, "type": "83", "bootable": true}]}}"#;
        let t = parse_sfdisk_json(json).unwrap();
        assert_eq!(t.label, "dos");
        assert_eq!(t.partitions, vec![Partition { start: 2048, size: 4192256, kind: "83".into(), bootable: true }]);
        assert!(parse_sfdisk_json("{}").is_err());
    }

    #[test]
    fn creates_a_sparse_partitioned_file() {
        if crate::tools::find("sfdisk").is_none() {
            panic!("sfdisk is not installed (Debian package fdisk; run scripts/setup.sh)");
        }
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        let l = Layout::single(64 << 20).unwrap();
        l.create(&img, &process::Quiet).unwrap();
        let t = read(&img).unwrap();
        assert_eq!(t.label, "dos");
        assert_eq!(t.partitions.len(), 1);
        assert_eq!(t.partitions[0].start, 2048);
        assert_eq!(t.partitions[0].size * SECTOR, l.partition_size);
        assert!(crate::size::allocated(&img).unwrap() < 1 << 20, "the new image should be sparse");
    }

    #[test]
    fn a_given_disk_identifier_is_written_and_the_table_is_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let l = Layout::single(32 << 20).unwrap();
        assert!(l.sfdisk_script_with_id(Some(0x1234abcd)).contains("label-id: 0x1234abcd\n"));
        let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
        l.create_with_id(&a, Some(0x1234abcd), &process::Quiet).unwrap();
        l.create_with_id(&b, Some(0x1234abcd), &process::Quiet).unwrap();
        let (a, b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert_eq!(&a[0x1b8..0x1bc], &0x1234abcdu32.to_le_bytes());
        assert!(a == b, "two tables with the same identifier differ");
    }
}
