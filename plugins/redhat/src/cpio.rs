//! Putting the kickstart into the installer's initrd, without unpacking it.
//!
//! The kernel unpacks every cpio archive it finds in the initrd, one after the other,
//! each compressed or not, and later files replace earlier ones. So appending a small
//! uncompressed `newc` archive holding `/ks.cfg` is enough, and works for gzip, xz, zstd
//! or plain initrds alike (this is what Oz does too). The writer is a few lines of
//! the format in the kernel's `Documentation/driver-api/early-userspace/buffer-format.rst`.

use std::io::Write;
use std::path::Path;

use crate::error::RedHatError;

/// One file of a newc archive (mode 0644 regular files; directories with 0755).
pub struct Entry<'a> {
    /// The path inside the archive, without a leading `/`.
    pub name: &'a str,
    pub data: &'a [u8],
    pub dir: bool,
}

fn header(out: &mut Vec<u8>, ino: u32, mode: u32, name: &str, size: usize) {
    let fields = [ino, mode, 0, 0, 1, 0, size as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
}

fn pad4(out: &mut Vec<u8>) {
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

/// A complete newc archive of `entries`, ending with the `TRAILER!!!` record.
pub fn newc(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let (mode, data): (u32, &[u8]) = if e.dir { (0o040755, &[]) } else { (0o100644, e.data) };
        header(&mut out, i as u32 + 1, mode, e.name.trim_start_matches('/'), data.len());
        out.extend_from_slice(data);
        pad4(&mut out);
    }
    header(&mut out, 0, 0, "TRAILER!!!", 0);
    out
}

/// Appends an archive holding `/<name>` = `data` to the initrd at `initrd`. The initrd
/// is first padded with zeros to a 4-byte boundary, where the kernel looks for the next
/// archive.
pub fn append_file(initrd: &Path, name: &str, data: &[u8]) -> Result<(), RedHatError> {
    let len = std::fs::metadata(initrd).map_err(|e| RedHatError::io("cannot read", initrd, e))?.len();
    let mut f =
        std::fs::OpenOptions::new().append(true).open(initrd).map_err(|e| RedHatError::io("cannot open", initrd, e))?;
    let pad = vec![0u8; ((4 - len % 4) % 4) as usize];
    let archive = newc(&[Entry { name, data, dir: false }]);
    f.write_all(&pad).and_then(|_| f.write_all(&archive)).map_err(|e| RedHatError::io("cannot write", initrd, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn header_layout() {
        let a = newc(&[Entry { name: "ks.cfg", data: b"text\n", dir: false }]);
        // 110-byte header + "ks.cfg\0" (7) = 117, padded to 120; 5 data bytes padded to 8.
        assert_eq!(&a[..6], b"070701");
        assert_eq!(&a[6..14], b"00000001");
        assert_eq!(&a[14..22], b"000081A4");
        assert_eq!(&a[54..62], b"00000005", "file size");
        assert_eq!(&a[94..102], b"00000007", "name size includes the NUL");
        assert_eq!(&a[110..117], b"ks.cfg\0");
        assert_eq!(&a[120..125], b"text\n");
        assert!(a.ends_with(b"TRAILER!!!\0\0\0\0") || a.windows(10).any(|w| w == b"TRAILER!!!"));
        assert_eq!(a.len() % 4, 0);
    }

    /// GNU cpio reads what we write, including after a gzip archive whose length is not a
    /// multiple of 4 (the shape of a real initrd).
    #[test]
    fn cpio_reads_the_appended_archive() {
        let dir = tempfile::tempdir().unwrap();
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&initrd, b"\x1f\x8b\x08 not a real gzip stream").unwrap();
        append_file(&initrd, "ks.cfg", b"rootpw --iscrypted $6$x\n").unwrap();
        let bytes = std::fs::read(&initrd).unwrap();
        let start = bytes.windows(6).position(|w| w == b"070701").unwrap();
        assert_eq!(start % 4, 0);
        let extract = dir.path().join("out");
        std::fs::create_dir(&extract).unwrap();
        let mut child = Command::new("cpio")
            .args(["-i", "--quiet", "-d"])
            .current_dir(&extract)
            .stdin(Stdio::piped())
            .spawn()
            .expect("cpio (Debian package cpio; run scripts/setup.sh)");
        child.stdin.take().unwrap().write_all(&bytes[start..]).unwrap();
        assert!(child.wait().unwrap().success());
        assert_eq!(std::fs::read_to_string(extract.join("ks.cfg")).unwrap(), "rootpw --iscrypted $6$x\n");
    }

    #[test]
    fn directories() {
        let a = newc(&[Entry { name: "/etc", data: b"", dir: true }, Entry { name: "etc/x", data: b"1", dir: false }]);
        assert_eq!(&a[14..22], b"000041ED");
        assert!(a.windows(6).any(|w| w == b"etc/x\0"));
    }
}
