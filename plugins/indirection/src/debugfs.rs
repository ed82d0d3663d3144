//! Reading and writing ext2/3/4 file systems inside disk image files with `debugfs`,
//! through the partition's byte offset: no loop device, no mount, nothing to clean up in
//! the kernel if the build dies, and the utility image is only ever opened read-only.
//!
//! debugfs exits 0 even when a request fails, so every answer is checked on stdout
//! (`stat` prints an `Inode:` line for a file that exists, `ls -p` one line per entry).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;

/// No single debugfs request here should take longer (a dump of a large ISO included).
const LIMIT: Duration = Duration::from_secs(3600);

/// One file system: an image file and the byte offset of its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fs {
    pub image: PathBuf,
    pub offset: u64,
}

/// A directory entry as `ls -p` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
}

/// What `stat` says of a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Regular(u64),
    Other,
}

impl Fs {
    pub fn new(image: impl Into<PathBuf>, offset: u64) -> Fs {
        Fs { image: image.into(), offset }
    }

    fn spec(&self) -> String {
        format!("{}?offset={}", self.image.display(), self.offset)
    }

    /// Runs one read-only request; returns stdout.
    pub fn request(&self, request: &str, watch: &dyn Watch) -> Result<String, DiskError> {
        let mut cmd = Command::new("debugfs");
        cmd.arg("-R").arg(request).arg(self.spec());
        let out = process::run(
            "debugfs",
            cmd,
            Options { capture_stdout: true, timeout: Some(LIMIT), ..Default::default() },
            watch,
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The entries of a directory (empty when it is missing or this is no ext file system).
    pub fn list(&self, dir: &str, watch: &dyn Watch) -> Result<Vec<Entry>, DiskError> {
        Ok(parse_ls_p(&self.request(&format!("ls -p {dir}"), watch)?))
    }

    pub fn stat(&self, path: &str, watch: &dyn Watch) -> Result<Kind, DiskError> {
        Ok(parse_stat(&self.request(&format!("stat {path}"), watch)?))
    }

    /// The text of a small file (empty when it is missing).
    pub fn cat(&self, path: &str, watch: &dyn Watch) -> Result<String, DiskError> {
        self.request(&format!("cat {path}"), watch)
    }

    /// Copies the regular file `path` out to `out` and checks the copy has its size.
    pub fn dump(&self, path: &str, out: &Path, watch: &dyn Watch) -> Result<u64, DiskError> {
        let size = match self.stat(path, watch)? {
            Kind::Regular(size) => size,
            _ => return Err(DiskError::Unexpected(format!("{path} is not a regular file"))),
        };
        let _ = std::fs::remove_file(out);
        self.request(&format!("dump {path} {}", host_arg(out)?), watch)?;
        let got = std::fs::metadata(out).map_err(|e| DiskError::io("debugfs wrote no", out, e))?.len();
        if got != size {
            return Err(DiskError::Unexpected(format!("debugfs copied {got} of the {size} bytes of {path}")));
        }
        Ok(size)
    }

    /// Writes the host file `src` into the file system as `dest` (its directory must
    /// exist). debugfs copies the holes of a sparse file as holes.
    pub fn write(&self, src: &Path, dest: &str, watch: &dyn Watch) -> Result<(), DiskError> {
        let (dir, name) = dest.rsplit_once('/').unwrap_or(("", dest));
        let dir = if dir.is_empty() { "/" } else { dir };
        // `write` creates its file in the current directory: change to `dir` first, with
        // the requests on stdin.
        let script = format!("cd {dir}\nwrite {} {name}\n", host_arg(src)?);
        let mut cmd = Command::new("debugfs");
        cmd.arg("-w").arg("-f").arg("-").arg(self.spec());
        process::run(
            "debugfs write",
            cmd,
            Options { stdin: Some(script.into_bytes()), timeout: Some(LIMIT), ..Default::default() },
            watch,
        )?;
        match self.stat(dest, watch)? {
            Kind::Regular(_) => Ok(()),
            _ => Err(DiskError::Unexpected(format!("debugfs did not write {dest}"))),
        }
    }
}

/// A host path as one debugfs argument: double-quoted (debugfs splits its requests on
/// spaces); paths holding a quote or a line break are refused.
fn host_arg(p: &Path) -> Result<String, DiskError> {
    let s = p.to_str().ok_or_else(|| DiskError::Unexpected(format!("{} is not a UTF-8 path", p.display())))?;
    if s.contains('"') || s.contains('\n') {
        return Err(DiskError::Unexpected(format!("debugfs cannot be given the path {s}")));
    }
    Ok(format!("\"{s}\""))
}

/// Parses `ls -p`: `/inode/mode/uid/gid/name/size/` per entry; `.` and `..` are skipped.
pub fn parse_ls_p(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.trim().split('/').collect();
            if f.len() < 7 || !f[0].is_empty() {
                return None;
            }
            let mode = u32::from_str_radix(f[2], 8).ok()?;
            let name = f[5].to_string();
            if name == "." || name == ".." || name.is_empty() {
                return None;
            }
            Some(Entry { name, is_dir: mode & 0o170000 == 0o040000, size: f[6].parse().unwrap_or(0) })
        })
        .collect()
}

/// Parses `stat`.
pub fn parse_stat(text: &str) -> Kind {
    let Some(inode_line) = text.lines().find(|l| l.trim_start().starts_with("Inode:")) else { return Kind::Missing };
    if !inode_line.contains("Type: regular") {
        return Kind::Other;
    }
    let size = text
        .lines()
        .find_map(|l| l.split("Size: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok());
    match size {
        Some(s) => Kind::Regular(s),
        None => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listings_and_stats() {
        let ls = "/13/040755/0/0/.//\n/2/040755/0/0/..//\n/304/100644/0/0/vmlinuz-6.1.0-50-amd64/8222656/\n/16/040755/0/0/grub//\n";
        let e = parse_ls_p(ls);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0], Entry { name: "vmlinuz-6.1.0-50-amd64".into(), is_dir: false, size: 8222656 });
        assert!(e[1].is_dir);
        let st = "Inode: 16   Type: regular    Mode:  0644   Flags: 0x80000\nGeneration: 0\nUser:     0   Group:     0   Project:     0   Size: 376832\n";
        assert_eq!(parse_stat(st), Kind::Regular(376832));
        assert_eq!(parse_stat(""), Kind::Missing);
        assert_eq!(parse_stat("Inode: 15   Type: directory    Mode:  0755\n"), Kind::Other);
    }

    #[test]
    fn writes_reads_and_dumps_a_sparse_file() {
        diskimage::tools::require(diskimage::tools::DISK_TOOLS).unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("in/sub")).unwrap();
        let img = d.path().join("disk.raw");
        let layout = diskimage::layout::Layout::single(64 << 20).unwrap();
        layout.create(&img, &process::Quiet).unwrap();
        let fs = diskimage::ext4::Ext4 { uuid: diskimage::ext4::random_uuid().unwrap(), label: "t".into() };
        fs.write(&img, &layout, &root, &process::Quiet).unwrap();
        let src = d.path().join("src.raw");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(16 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"hello", 8 << 20).unwrap();
        drop(f);
        let x = Fs::new(&img, layout.partition_start);
        x.write(&src, "/in/sub/input.raw", &process::Quiet).unwrap();
        assert_eq!(x.stat("/in/sub/input.raw", &process::Quiet).unwrap(), Kind::Regular(16 << 20));
        assert_eq!(x.stat("/in/nothing", &process::Quiet).unwrap(), Kind::Missing);
        assert_eq!(x.stat("/in", &process::Quiet).unwrap(), Kind::Other);
        assert!(x.list("/in/sub", &process::Quiet).unwrap().iter().any(|e| e.name == "input.raw"));
        // Sparse in, sparse on the disk: far less than 16 MiB allocated.
        assert!(diskimage::size::allocated(&img).unwrap() < 12 << 20);
        let out = d.path().join("out.raw");
        assert_eq!(x.dump("/in/sub/input.raw", &out, &process::Quiet).unwrap(), 16 << 20);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&src).unwrap());
        assert!(x.dump("/in", &out, &process::Quiet).is_err());
    }
}
