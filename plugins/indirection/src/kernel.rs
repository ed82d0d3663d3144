//! How the utility VM boots: its own kernel and initrd, read out of the utility image,
//! handed to qemu directly with a command line of the plugin's.
//!
//! The utility image is a stock base image with no agent inside, and its qcow2 overlay
//! cannot be written from the host without nbd. The kernel command line is the one way
//! in that changes nothing in the image: `systemd.run=` (systemd 240 and later, the
//! systemd-run-generator) runs the job at boot and powers the VM off after it. So the
//! image's partitions are searched (sfdisk's table, then debugfs in each ext partition)
//! for the root file system (the one with /etc) and the newest kernel with an initrd
//! (in the root's /boot, or a separate /boot partition), and the root must have the
//! generator.

use std::path::{Path, PathBuf};
use std::process::Command;

use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;

use crate::debugfs::{Entry, Fs};
use crate::job::KERNEL_RUN;

/// Where systemd's run generator lives (`/lib` is a link to `/usr/lib` on merged-usr
/// systems; debugfs follows links in the middle of a path).
const RUN_GENERATORS: &[&str] = &[
    "/usr/lib/systemd/system-generators/systemd-run-generator",
    "/lib/systemd/system-generators/systemd-run-generator",
];

/// A partition of the utility image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its number: the N of /dev/vdaN.
    pub number: u32,
    pub offset: u64,
}

/// What was found in the utility image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootPlan {
    pub root: Part,
    pub kernel_in: Part,
    /// Paths inside `kernel_in`'s file system.
    pub kernel: String,
    pub initrd: String,
    pub version: String,
}

/// The partitions of `image` as `sfdisk -J` lists them (numbers from the device names;
/// extended partitions skipped). A disk without a table is one file system at offset 0.
pub fn partitions(image: &Path, watch: &dyn Watch) -> Result<Vec<Part>, DiskError> {
    let mut cmd = Command::new("sfdisk");
    cmd.arg("-J").arg(image);
    match process::run("sfdisk -J", cmd, Options { capture_stdout: true, ..Default::default() }, watch) {
        Ok(out) => parse_partitions(&String::from_utf8_lossy(&out.stdout)),
        // No partition table at all.
        Err(DiskError::Failed { .. }) => Ok(vec![Part { number: 0, offset: 0 }]),
        Err(e) => Err(e),
    }
}

/// Parses `sfdisk -J`.
pub fn parse_partitions(text: &str) -> Result<Vec<Part>, DiskError> {
    let v: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| DiskError::Unexpected(format!("cannot read the utility image's partition table: {e}")))?;
    let sector = v["partitiontable"]["sectorsize"].as_u64().unwrap_or(512);
    let mut out = Vec::new();
    for p in v["partitiontable"]["partitions"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let kind = p["type"].as_str().unwrap_or_default().to_ascii_lowercase();
        if ["5", "f", "85"].contains(&kind.as_str()) {
            continue;
        }
        let node = p["node"].as_str().unwrap_or_default();
        let digits: String = node.chars().rev().take_while(char::is_ascii_digit).collect();
        let number = digits.chars().rev().collect::<String>().parse().unwrap_or(0);
        if let (Some(start), true) = (p["start"].as_u64(), number > 0) {
            out.push(Part { number, offset: start * sector });
        }
    }
    Ok(out)
}

/// Compares version strings the way people read them: runs of digits as numbers.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, String)> {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((kind, text)) if *kind == d => text.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, p), (true, q)) => {
                let (p, q) = (p.trim_start_matches('0'), q.trim_start_matches('0'));
                p.len().cmp(&q.len()).then_with(|| p.cmp(q))
            }
            ((_, p), (_, q)) => p.cmp(q),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// The newest kernel in a directory listing that has its initrd beside it (Debian's
/// `initrd.img-V`, Fedora's `initramfs-V.img`); rescue kernels are skipped.
pub fn pick_kernel(entries: &[Entry]) -> Option<(String, String, String)> {
    let names: Vec<&str> = entries.iter().filter(|e| !e.is_dir).map(|e| e.name.as_str()).collect();
    let mut best: Option<(String, String, String)> = None;
    for n in &names {
        let Some(version) = n.strip_prefix("vmlinuz-") else { continue };
        if version.contains("rescue") {
            continue;
        }
        let initrd = [format!("initrd.img-{version}"), format!("initramfs-{version}.img")]
            .into_iter()
            .find(|i| names.contains(&i.as_str()));
        if let Some(initrd) = initrd {
            if best.as_ref().is_none_or(|b| version_cmp(version, &b.2).is_gt()) {
                best = Some((n.to_string(), initrd, version.to_string()));
            }
        }
    }
    best
}

/// Finds the root, the kernel and the initrd; fails with the reason in one line.
pub fn plan(image: &Path, watch: &dyn Watch) -> Result<BootPlan, String> {
    let parts = partitions(image, watch).map_err(|e| e.to_string())?;
    let mut root: Option<Part> = None;
    let mut kernel: Option<(Part, String, String, String)> = None;
    for p in parts {
        let fs = Fs::new(image, p.offset);
        let top = fs.list("/", watch).map_err(|e| e.to_string())?;
        let has_dir = |n: &str| top.iter().any(|e| e.is_dir && e.name == n);
        if has_dir("etc") && root.is_none() {
            root = Some(p.clone());
            if has_dir("boot") {
                let boot = fs.list("/boot", watch).map_err(|e| e.to_string())?;
                if let Some((k, i, v)) = pick_kernel(&boot) {
                    kernel = Some((p.clone(), format!("/boot/{k}"), format!("/boot/{i}"), v));
                }
            }
        } else if kernel.is_none() {
            if let Some((k, i, v)) = pick_kernel(&top) {
                kernel = Some((p.clone(), format!("/{k}"), format!("/{i}"), v));
            }
        }
    }
    let root = root.ok_or("no ext2/3/4 root file system found (LVM, XFS and btrfs roots are not supported)")?;
    let (kernel_in, kernel, initrd, version) =
        kernel.ok_or("no kernel with an initrd found in /boot (vmlinuz-VERSION with initrd.img-VERSION)")?;
    let fs = Fs::new(image, root.offset);
    let mut has_generator = false;
    for g in RUN_GENERATORS {
        if !matches!(fs.stat(g, watch).map_err(|e| e.to_string())?, crate::debugfs::Kind::Missing) {
            has_generator = true;
            break;
        }
    }
    if !has_generator {
        return Err(
            "it has no systemd-run-generator (systemd 240 or later is needed to run the customizations at boot)".into(),
        );
    }
    Ok(BootPlan { root, kernel_in, kernel, initrd, version })
}

impl BootPlan {
    /// Copies the kernel and initrd out of the image into `dir`.
    pub fn extract(&self, image: &Path, dir: &Path, watch: &dyn Watch) -> Result<(PathBuf, PathBuf), DiskError> {
        let fs = Fs::new(image, self.kernel_in.offset);
        let (k, i) = (dir.join("vmlinuz"), dir.join("initrd"));
        fs.dump(&self.kernel, &k, watch)?;
        fs.dump(&self.initrd, &i, watch)?;
        Ok((k, i))
    }

    /// The utility VM's kernel command line: the root on the first disk, the console on
    /// the serial port, and the job run by systemd, which powers off after it either way.
    pub fn cmdline(&self) -> String {
        let root = if self.root.number == 0 { "/dev/vda".to_string() } else { format!("/dev/vda{}", self.root.number) };
        format!(
            "root={root} ro console=tty0 console=ttyS0,115200n8 systemd.run=\"{KERNEL_RUN}\" \
systemd.run_success_action=poweroff systemd.run_failure_action=poweroff"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str) -> Entry {
        Entry { name: name.into(), is_dir: false, size: 1 }
    }

    #[test]
    fn versions_sort_as_numbers() {
        assert!(version_cmp("6.1.0-50-amd64", "6.1.0-9-amd64").is_gt());
        assert!(version_cmp("5.10.0", "6.1.0").is_lt());
        assert!(version_cmp("6.1.0-50", "6.1.0-50").is_eq());
    }

    #[test]
    fn picks_the_newest_kernel_with_an_initrd() {
        let debian = [
            e("vmlinuz-6.1.0-9-amd64"),
            e("initrd.img-6.1.0-9-amd64"),
            e("vmlinuz-6.1.0-50-amd64"),
            e("initrd.img-6.1.0-50-amd64"),
            e("vmlinuz-6.1.0-99-amd64"),
            e("config-6.1.0-50-amd64"),
        ];
        let (k, i, v) = pick_kernel(&debian).unwrap();
        assert_eq!(
            (k.as_str(), i.as_str(), v.as_str()),
            ("vmlinuz-6.1.0-50-amd64", "initrd.img-6.1.0-50-amd64", "6.1.0-50-amd64")
        );
        let fedora = [
            e("vmlinuz-0-rescue-abc"),
            e("initramfs-0-rescue-abc.img"),
            e("vmlinuz-6.5.6-300.fc39.x86_64"),
            e("initramfs-6.5.6-300.fc39.x86_64.img"),
        ];
        assert_eq!(pick_kernel(&fedora).unwrap().1, "initramfs-6.5.6-300.fc39.x86_64.img");
        assert_eq!(pick_kernel(&[e("vmlinuz-1")]), None);
    }

    #[test]
    fn partition_numbers_come_from_the_nodes() {
        let json = r#"{"partitiontable": {"label": "gpt", "sectorsize": 512, "partitions": [
            {"node": "d.raw1", "start": 2048, "size": 2048, "type": "21686148-6449-6E6F-744E-656564454649"},
            {"node": "d.raw3", "start": 4096, "size": 409600, "type": "0FC63DAF-8483-4772-8E79-3D69D8477DE4"}]}}"#;
        let p = parse_partitions(json).unwrap();
        assert_eq!(p, vec![Part { number: 1, offset: 1 << 20 }, Part { number: 3, offset: 4096 * 512 }]);
        let dos = r#"{"partitiontable": {"label": "dos", "partitions": [{"node": "x1", "start": 63, "size": 9, "type": "5"}]}}"#;
        assert!(parse_partitions(dos).unwrap().is_empty());
    }

    #[test]
    fn command_line() {
        let p = Part { number: 1, offset: 1 << 20 };
        let plan = BootPlan {
            root: p.clone(),
            kernel_in: p,
            kernel: "/boot/vmlinuz-1".into(),
            initrd: "/boot/initrd.img-1".into(),
            version: "1".into(),
        };
        let c = plan.cmdline();
        assert!(
            c.starts_with(
                "root=/dev/vda1 ro console=tty0 console=ttyS0,115200n8 systemd.run=\"/bin/sh -c 'cd /run && mkdir"
            ),
            "{c}"
        );
        assert!(
            c.ends_with("run.sh'\" systemd.run_success_action=poweroff systemd.run_failure_action=poweroff"),
            "{c}"
        );
        assert!(c.len() < 1024);
    }
}
