//! GRUB for BIOS boot from an MBR disk, installed without `grub-install`.
//!
//! `grub-install` wants the disk as a block device and `udevadm` to probe it; an image
//! file has neither. What it does for an MBR disk is small and documented by GRUB's
//! sources (`util/setup.c`): build core.img with the modules to read the root file
//! system, write it into the gap after the MBR (sector 1 on), and write boot.img into
//! the MBR's code area, keeping the partition table. That is what [`install_bios`] does.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::DiskError;
use crate::layout::{Layout, SECTOR};
use crate::process::{self, Options, Watch};

/// Where Debian's grub-pc-bin keeps the i386-pc modules and images.
pub const I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";

/// Modules built into core.img: enough to read an ext4 partition of an MBR disk, load a
/// Linux kernel and initrd, and talk on the serial port, without loading anything from
/// the disk (the module directory is copied into the image too, for `insmod`).
pub const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "ext2",
    "normal",
    "linux",
    "boot",
    "configfile",
    "search",
    "search_fs_uuid",
    "echo",
    "serial",
    "terminal",
    "gzio",
    "test",
];

/// boot.img offsets (GRUB's include/grub/i386/pc/boot.h).
const KERNEL_SECTOR: usize = 0x5c;
const DRIVE_CHECK: usize = 0x66;
const BPB_START: usize = 0x3;
const BPB_END: usize = 0x5a;
const WINDOWS_NT_MAGIC: usize = 0x1b8;

/// GRUB's prefix for a root on partition 1 of the boot disk.
pub const PREFIX: &str = "(hd0,msdos1)/boot/grub";

/// What goes into /boot/grub/grub.cfg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    pub title: String,
    /// Paths inside the root file system (Debian keeps `/vmlinuz` and `/initrd.img`
    /// pointing at the newest kernel, so the entry survives kernel upgrades).
    pub kernel: String,
    pub initrd: String,
    pub cmdline: String,
    /// Also offer the menu on the first serial port (headless guests have no screen).
    pub serial: bool,
    pub timeout_secs: u32,
}

impl BootEntry {
    /// The text of grub.cfg.
    pub fn config(&self) -> String {
        let mut cfg = String::new();
        if self.serial {
            cfg.push_str(
                "serial --unit=0 --speed=115200\nterminal_input serial console\nterminal_output serial console\n",
            );
        }
        cfg.push_str(&format!("set default=0\nset timeout={}\n\n", self.timeout_secs));
        cfg.push_str(&format!(
            "menuentry '{}' {{\n\tlinux {} {}\n\tinitrd {}\n}}\n",
            self.title.replace('\'', ""),
            self.kernel,
            self.cmdline,
            self.initrd
        ));
        cfg
    }

    /// Writes grub.cfg and the module directory into `root`/boot/grub.
    pub fn stage(&self, root: &Path) -> Result<(), DiskError> {
        let dir = root.join("boot/grub");
        let modules = dir.join("i386-pc");
        std::fs::create_dir_all(&modules).map_err(|e| DiskError::io("cannot create", &modules, e))?;
        let cfg = dir.join("grub.cfg");
        std::fs::write(&cfg, self.config()).map_err(|e| DiskError::io("cannot write", &cfg, e))?;
        let src = Path::new(I386_PC_DIR);
        for entry in std::fs::read_dir(src).map_err(|e| DiskError::io("cannot read", src, e))? {
            let path = entry.map_err(|e| DiskError::io("cannot read", src, e))?.path();
            let keep = path.extension().is_some_and(|x| x == "mod" || x == "lst");
            if let (true, Some(name)) = (keep, path.file_name()) {
                std::fs::copy(&path, modules.join(name)).map_err(|e| DiskError::io("cannot copy", &path, e))?;
            }
        }
        Ok(())
    }
}

/// Makes boot.img fit for this disk, as `grub-setup` does: it loads core.img from sector
/// 1, trusts the BIOS's boot drive on a hard disk (the drive check is replaced by two
/// NOPs), and keeps the disk's own BPB area and partition table from `mbr`.
pub fn patch_boot_img(boot: &[u8], mbr: &[u8]) -> Result<[u8; 512], DiskError> {
    if boot.len() != 512 || mbr.len() != 512 {
        return Err(DiskError::Unexpected("boot.img and the MBR must be 512 bytes".into()));
    }
    if boot[DRIVE_CHECK] != 0xeb {
        return Err(DiskError::Unexpected(format!(
            "{I386_PC_DIR}/boot.img is not the GRUB 2 boot.img this code knows (no jump at 0x66)"
        )));
    }
    let mut out = [0u8; 512];
    out.copy_from_slice(boot);
    out[KERNEL_SECTOR..KERNEL_SECTOR + 8].copy_from_slice(&1u64.to_le_bytes());
    out[DRIVE_CHECK] = 0x90;
    out[DRIVE_CHECK + 1] = 0x90;
    out[BPB_START..BPB_END].copy_from_slice(&mbr[BPB_START..BPB_END]);
    out[WINDOWS_NT_MAGIC..].copy_from_slice(&mbr[WINDOWS_NT_MAGIC..]);
    Ok(out)
}

/// Builds core.img in `work` and writes it and boot.img into `image`.
pub fn install_bios(image: &Path, layout: &Layout, work: &Path, watch: &dyn Watch) -> Result<(), DiskError> {
    let dir = PathBuf::from(I386_PC_DIR);
    let core_path = work.join("core.img");
    let mut cmd = Command::new("grub-mkimage");
    cmd.args(["-O", "i386-pc", "-d"]).arg(&dir).arg("-o").arg(&core_path).args(["-p", PREFIX]).args(BIOS_MODULES);
    process::run("grub-mkimage", cmd, Options::default(), watch)?;
    let core = std::fs::read(&core_path).map_err(|e| DiskError::io("cannot read", &core_path, e))?;
    // Cleaned up here rather than left for the caller's work directory: it is small, but
    // nothing of a build should outlive the step that made it.
    let _ = std::fs::remove_file(&core_path);
    let room = layout.partition_start - SECTOR;
    if core.len() as u64 > room {
        return Err(DiskError::Unexpected(format!(
            "GRUB's core.img ({} bytes) does not fit before the first partition ({room} bytes)",
            core.len()
        )));
    }
    let boot_path = dir.join("boot.img");
    let boot = std::fs::read(&boot_path).map_err(|e| DiskError::io("cannot read", &boot_path, e))?;
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|e| DiskError::io("cannot open the disk image", image, e))?;
    let mut mbr = [0u8; 512];
    disk.read_exact(&mut mbr).map_err(|e| DiskError::io("cannot read the MBR of", image, e))?;
    let sector0 = patch_boot_img(&boot, &mbr)?;
    disk.seek(SeekFrom::Start(0))
        .and_then(|_| disk.write_all(&sector0))
        .and_then(|_| disk.write_all(&core))
        .and_then(|_| disk.sync_all())
        .map_err(|e| DiskError::io("cannot write GRUB into", image, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_boot() -> Vec<u8> {
        let mut b = vec![0xaa; 512];
        b[DRIVE_CHECK] = 0xeb;
        b
    }

    #[test]
    fn boot_img_is_patched_like_grub_setup() {
        let mut mbr = [0u8; 512];
        mbr[0x1be] = 0x80; // partition 1, bootable
        mbr[0x1b8..0x1bc].copy_from_slice(&[1, 2, 3, 4]); // disk signature
        mbr[0x1fe] = 0x55;
        mbr[0x1ff] = 0xaa;
        mbr[0x10] = 0x42; // BPB area
        let out = patch_boot_img(&fake_boot(), &mbr).unwrap();
        assert_eq!(&out[0x5c..0x64], &1u64.to_le_bytes());
        assert_eq!(&out[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(out[0x10], 0x42);
        assert_eq!(&out[0x1b8..], &mbr[0x1b8..]);
        assert_eq!(out[0x100], 0xaa, "boot code is kept");
    }

    #[test]
    fn unknown_boot_img_is_refused() {
        let err = patch_boot_img(&[0u8; 512], &[0u8; 512]).unwrap_err();
        assert!(err.to_string().contains("boot.img"), "{err}");
    }

    #[test]
    fn the_installed_boot_img_is_the_known_one() {
        let boot = std::fs::read(Path::new(I386_PC_DIR).join("boot.img"))
            .expect("GRUB's boot.img is missing (Debian package grub-pc-bin; run scripts/setup.sh)");
        assert!(patch_boot_img(&boot, &[0u8; 512]).is_ok());
    }

    #[test]
    fn grub_cfg_text() {
        let e = BootEntry {
            title: "Debian GNU/Linux 12".into(),
            kernel: "/vmlinuz".into(),
            initrd: "/initrd.img".into(),
            cmdline: "root=UUID=x ro console=ttyS0,115200n8".into(),
            serial: true,
            timeout_secs: 1,
        };
        let cfg = e.config();
        assert!(cfg.starts_with("serial --unit=0 --speed=115200\n"));
        assert!(cfg.contains("set timeout=1\n"));
        assert!(
            cfg.contains("\tlinux /vmlinuz root=UUID=x ro console=ttyS0,115200n8\n\tinitrd /initrd.img\n"),
            "{cfg}"
        );
    }
}
