//! Small real guests for tests: the Debian kernel setup unpacked and a busybox initramfs
//! built around a test's own `/init` script.
//!
//! What a guest needs to see its disks (Debian's 6.1 kernel builds all of these as
//! modules; ACPI power-off, the serial console and the q35 AHCI controller are built in):
//! - a virtio disk: `virtio_pci` and `virtio_blk` (their dependencies `virtio`,
//!   `virtio_ring`, `virtio_pci_modern_dev`, `virtio_pci_legacy_dev` come along
//!   through [`Initramfs::modules`]);
//! - an ext4 file system: `ext4` (brings `jbd2`, `mbcache`, `crc16`, and through its
//!   soft dependency `crc32c_generic` for metadata checksums); ext2 volumes are mounted
//!   by the ext4 driver too;
//! - an IDE/SATA disk or CD-ROM: `ahci` (with `libahci`, `libata`), `sd_mod` or `sr_mod`
//!   and `isofs` for ISO 9660;
//! - the network card of `Network::User`: `virtio_net`.
//!
//! Modules are loaded by the init script with busybox `insmod` in the order
//! [`Initramfs::modules`] returns (dependencies first); `modprobe` is not used because
//! the unpacked kernel has no `modules.dep` (that is written by depmod at install time).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The kernel scripts/setup.sh unpacked under `<services>/kernel`.
#[derive(Debug, Clone)]
pub struct KernelFiles {
    pub vmlinuz: PathBuf,
    /// Its `lib/modules/<version>` directory.
    pub modules: PathBuf,
    pub version: String,
}

/// The test kernel; fails loudly naming scripts/setup.sh when it is absent.
pub fn kernel() -> KernelFiles {
    let dir = crate::services_dir().join("kernel");
    assert!(dir.join(".complete").is_file(), "the test kernel is missing from {}: run scripts/setup.sh", dir.display());
    let version = std::fs::read_to_string(dir.join("version")).expect("kernel/version").trim().to_string();
    KernelFiles { vmlinuz: dir.join("vmlinuz"), modules: dir.join("modules"), version }
}

/// Makes sure libvirtd answers on its system socket, starting `virtlogd -d` and
/// `libvirtd -d` when it does not (hosts without a service manager, like CI here); fails
/// loudly when it cannot. A daemon it starts stays running for later tests.
///
/// Tests call this in parallel: one lock serializes the callers of a test binary, and a
/// daemon whose start fails is still accepted when its socket answers soon after (another
/// process started it first, and the loser of that race reports a pidfile error).
pub fn ensure_libvirtd() {
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let daemons = [
        ("virtlogd", ["/run/libvirt/virtlogd-sock", "/var/run/libvirt/virtlogd-sock"]),
        ("libvirtd", ["/run/libvirt/libvirt-sock", "/var/run/libvirt/libvirt-sock"]),
    ];
    for (daemon, sockets) in daemons {
        let answers = || sockets.iter().any(|s| std::os::unix::net::UnixStream::connect(s).is_ok());
        if answers() {
            continue;
        }
        let started = Command::new(daemon).arg("-d").status().is_ok_and(|s| s.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !answers() {
            assert!(
                std::time::Instant::now() < deadline,
                "{daemon} does not answer on {} ({}; Debian package libvirt-daemon-system; run scripts/setup.sh)",
                sockets[0],
                if started { "started, but silent for 30 s".to_string() } else { format!("`{daemon} -d` failed") },
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// One entry of the archive.
#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A newc cpio initramfs under construction.
#[derive(Debug, Clone, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// An empty archive with the usual directories.
    pub fn empty() -> Initramfs {
        let mut i = Initramfs::default();
        for d in ["bin", "sbin", "dev", "proc", "sys", "tmp", "mnt", "lib", "lib/modules", "etc", "root"] {
            i.entries.insert(d.into(), Entry::Dir);
        }
        i
    }

    /// busybox-static as /bin/busybox with a symlink for every applet it has.
    pub fn busybox() -> Initramfs {
        let bb = Path::new("/bin/busybox");
        let data = std::fs::read(bb).unwrap_or_else(|e| {
            panic!("{} cannot be read ({e}): install busybox-static (run scripts/setup.sh)", bb.display())
        });
        let list = Command::new(bb).arg("--list").output().expect("busybox --list");
        let mut i = Initramfs::empty();
        i = i.file("bin/busybox", data, 0o755);
        for applet in String::from_utf8_lossy(&list.stdout).lines().map(str::trim).filter(|a| !a.is_empty()) {
            if applet != "busybox" {
                i.entries.insert(format!("bin/{applet}"), Entry::Symlink("busybox".into()));
            }
        }
        i
    }

    /// Adds a file (parent directories are added too).
    pub fn file(mut self, path_in_archive: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Initramfs {
        let p = path_in_archive.trim_start_matches('/').to_string();
        self.add_parents(&p);
        self.entries.insert(p, Entry::File { data: bytes.into(), mode: mode & 0o7777 });
        self
    }

    /// `/init`: the script the kernel runs as PID 1 (use `#!/bin/sh`).
    pub fn init_script(self, text: &str) -> Initramfs {
        self.file("init", text.as_bytes().to_vec(), 0o755)
    }

    /// Adds the named kernel modules and everything they depend on (from each module's
    /// `depends=` field), decompressed when the kernel ships `.ko.xz`/`.ko.zst`, under
    /// `/lib/modules/<name>.ko`. Also writes `/lib/modules/load-order`, the module file
    /// names in dependency order, and returns that order; an init script loads them with
    /// `for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m; done`.
    /// Names the kernel has built in are skipped. Panics on a module that does not exist.
    pub fn modules(mut self, kernel: &KernelFiles, names: &[&str]) -> Initramfs {
        let index = module_index(&kernel.modules);
        let builtin = std::fs::read_to_string(kernel.modules.join("modules.builtin")).unwrap_or_default();
        let builtin: BTreeSet<String> = builtin
            .lines()
            .filter_map(|l| l.rsplit('/').next())
            .map(|f| normalize(f.trim_end_matches(".ko")))
            .collect();
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        for n in names {
            self.add_module(&index, &builtin, &normalize(n), &mut seen, &mut order);
        }
        let list: String = order.iter().map(|m| format!("{m}.ko\n")).collect();
        self.file("lib/modules/load-order", list.into_bytes(), 0o644)
    }

    fn add_module(
        &mut self,
        index: &BTreeMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        name: &str,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) {
        if !seen.insert(name.to_string()) {
            return;
        }
        let Some(path) = index.get(name) else {
            assert!(builtin.contains(name), "kernel module {name} is neither a module nor built in");
            return;
        };
        let data = read_module(path);
        for dep in depends(&data) {
            self.add_module(index, builtin, &dep, seen, order);
        }
        // Soft dependencies modprobe would load first (ext4 needs crc32c for its
        // checksums: `softdep=pre: crypto-crc32c`); a crypto alias names its generic driver.
        for soft in modinfo_field(&data, "softdep").iter().flat_map(|v| v.split_whitespace()) {
            if soft.ends_with(':') {
                continue;
            }
            let base = normalize(soft.strip_prefix("crypto-").unwrap_or(soft));
            let found = [base.clone(), format!("{base}_generic")].into_iter().find(|c| index.contains_key(c));
            if let Some(c) = found {
                self.add_module(index, builtin, &c, seen, order);
            }
        }
        let p = format!("lib/modules/{name}.ko");
        self.entries.insert(p, Entry::File { data, mode: 0o644 });
        order.push(name.to_string());
    }

    fn add_parents(&mut self, path: &str) {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            self.entries.entry(acc.clone()).or_insert(Entry::Dir);
        }
    }

    /// Writes the archive as an uncompressed newc cpio (the kernel takes it as it is).
    pub fn write(&self, path: &Path) {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("create the initramfs"));
        let mut ino = 1u32;
        let mut put = |name: &str, mode: u32, data: &[u8]| {
            let namez = name.len() + 1;
            let header = format!(
                "070701{ino:08X}{mode:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{:08X}{namez:08X}{:08X}",
                0,
                0,
                1,
                0,
                data.len(),
                0,
                0,
                0,
                0,
                0
            );
            ino += 1;
            out.write_all(header.as_bytes()).expect("write the initramfs");
            out.write_all(name.as_bytes()).expect("write the initramfs");
            out.write_all(&[0]).expect("write the initramfs");
            pad(&mut out, 110 + namez);
            out.write_all(data).expect("write the initramfs");
            pad(&mut out, data.len());
        };
        for (name, e) in &self.entries {
            match e {
                Entry::Dir => put(name, 0o040755, &[]),
                Entry::File { data, mode } => put(name, 0o100000 | mode, data),
                Entry::Symlink(target) => put(name, 0o120777, target.as_bytes()),
            }
        }
        put("TRAILER!!!", 0, &[]);
        out.flush().expect("write the initramfs");
    }
}

fn pad(out: &mut impl Write, len: usize) {
    let n = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..n]).expect("write the initramfs");
}

/// Module names use `_` and `-` interchangeably; the kernel's canonical form is `_`.
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Module name -> file, over the kernel's module tree.
fn module_index(modules: &Path) -> BTreeMap<String, PathBuf> {
    let mut index = BTreeMap::new();
    let mut stack = vec![modules.join("kernel")];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let file = e.file_name().to_string_lossy().into_owned();
            for ext in [".ko", ".ko.xz", ".ko.zst", ".ko.gz"] {
                if let Some(stem) = file.strip_suffix(ext) {
                    index.insert(normalize(stem), p.clone());
                    break;
                }
            }
        }
    }
    index
}

/// A module file's bytes, decompressed when needed (busybox insmod takes plain `.ko`).
fn read_module(path: &Path) -> Vec<u8> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display())),
        Some(t) => {
            let out = Command::new(t)
                .args(["-dc"])
                .arg(path)
                .output()
                .unwrap_or_else(|e| panic!("{t} is needed to decompress {} ({e})", path.display()));
            assert!(out.status.success(), "{t} -dc {} failed", path.display());
            out.stdout
        }
    }
}

/// The `depends=` field of a module's `.modinfo`.
fn depends(ko: &[u8]) -> Vec<String> {
    modinfo_field(ko, "depends")
        .first()
        .map(|v| v.split(',').filter(|s| !s.is_empty()).map(normalize).collect())
        .unwrap_or_default()
}

/// Every value of `key=` in a module's `.modinfo` (NUL-separated `key=value` strings).
fn modinfo_field(ko: &[u8], key: &str) -> Vec<String> {
    let pat = format!("{key}=");
    let pat = pat.as_bytes();
    let mut values = Vec::new();
    for (i, w) in ko.windows(pat.len()).enumerate() {
        if w == pat && (i == 0 || ko[i - 1] == 0) {
            let rest = &ko[i + pat.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            values.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_depends() {
        assert_eq!(depends(b"xx\0license=GPL\0depends=virtio,virtio_ring\0name=x\0"), ["virtio", "virtio_ring"]);
        assert!(depends(b"\0depends=\0").is_empty());
    }

    #[test]
    fn writes_a_cpio_that_cpio_reads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.cpio");
        Initramfs::empty().file("etc/x/hello", b"hi\n".to_vec(), 0o600).init_script("#!/bin/sh\n").write(&p);
        let out = Command::new("cpio").args(["-t", "-v", "-F"]).arg(&p).output().expect("cpio (run scripts/setup.sh)");
        let list = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(list.lines().any(|l| l.starts_with("-rw-------") && l.ends_with("etc/x/hello")), "{list}");
        assert!(list.lines().any(|l| l.starts_with("-rwxr-xr-x") && l.ends_with("init")), "{list}");
        assert!(list.lines().any(|l| l.starts_with("drwxr-xr-x") && l.ends_with("etc/x")), "{list}");
    }

    #[test]
    fn modules_come_with_their_dependencies() {
        let k = kernel();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("i.cpio");
        Initramfs::empty().modules(&k, &["virtio_blk", "virtio-pci", "ext4"]).write(&p);
        let out = Command::new("cpio").args(["-i", "--to-stdout", "-F"]).arg(&p).arg("lib/modules/load-order").output();
        let order = String::from_utf8_lossy(&out.expect("cpio").stdout).into_owned();
        let pos = |m: &str| order.lines().position(|l| l == m).unwrap_or_else(|| panic!("{m} not in {order}"));
        assert!(pos("virtio.ko") < pos("virtio_blk.ko"), "{order}");
        assert!(pos("virtio_ring.ko") < pos("virtio_blk.ko"), "{order}");
        assert!(pos("virtio_pci_modern_dev.ko") < pos("virtio_pci.ko"), "{order}");
        assert!(pos("jbd2.ko") < pos("ext4.ko") && pos("crc32c_generic.ko") < pos("ext4.ko"), "{order}");
    }
}
