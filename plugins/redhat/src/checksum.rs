//! ISO checksums: the template's `<md5sum>`, `<sha1sum>` or `<sha256sum>` names a
//! checksum *file* (as in Oz); the ISO's digest is computed while streaming it and
//! compared with that file's entry for the ISO.
//!
//! Checksum files come in two shapes and both are read: GNU coreutils
//! (`<hex>  <name>`, `<hex> *<name>`, or a bare `<hex>`) and the BSD tag form Fedora and
//! CentOS publish (`SHA256 (<name>) = <hex>`, possibly inside a PGP-signed message).

use std::io::Read;
use std::path::Path;

use imagefactory_plugin_api::tdl::ChecksumKind;
use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::RedHatError;
use crate::fetch::Progress;

/// The lowercase hex digest of the file at `path`, streamed, with a cancel check per
/// chunk.
pub fn digest_file(kind: ChecksumKind, path: &Path, progress: &dyn Progress) -> Result<String, RedHatError> {
    let mut f = std::fs::File::open(path).map_err(|e| RedHatError::io("cannot read", path, e))?;
    match kind {
        ChecksumKind::Md5 => stream::<Md5>(&mut f, path, progress),
        ChecksumKind::Sha1 => stream::<Sha1>(&mut f, path, progress),
        ChecksumKind::Sha256 => stream::<Sha256>(&mut f, path, progress),
    }
}

fn stream<D: Digest>(f: &mut std::fs::File, path: &Path, progress: &dyn Progress) -> Result<String, RedHatError> {
    let mut d = D::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        if progress.cancelled() {
            return Err(RedHatError::Cancelled);
        }
        let n = f.read(&mut buf).map_err(|e| RedHatError::io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        d.update(&buf[..n]);
        done += n as u64;
        progress.bytes(done, None);
    }
    Ok(d.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The digest the checksum file `text` gives for the file named `iso_name`.
/// A file with a single bare digest applies to whatever ISO it accompanies.
pub fn expected_for(text: &str, kind: ChecksumKind, iso_name: &str) -> Option<String> {
    let len = match kind {
        ChecksumKind::Md5 => 32,
        ChecksumKind::Sha1 => 40,
        ChecksumKind::Sha256 => 64,
    };
    let is_digest = |s: &str| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let mut bare = Vec::new();
    for line in text.lines().map(str::trim) {
        // BSD tag form: "SHA256 (name) = hex".
        if let Some((head, hex)) = line.rsplit_once(" = ") {
            if let (Some(open), true) = (head.find(" ("), head.ends_with(')')) {
                let name = &head[open + 2..head.len() - 1];
                if name == iso_name && is_digest(hex.trim()) {
                    return Some(hex.trim().to_ascii_lowercase());
                }
            }
            continue;
        }
        let mut parts = line.splitn(2, char::is_whitespace);
        let (Some(hex), name) = (parts.next(), parts.next()) else { continue };
        if !is_digest(hex) {
            continue;
        }
        match name.map(|n| n.trim().trim_start_matches('*')) {
            Some(n) if !n.is_empty() => {
                if n == iso_name || n.rsplit('/').next() == Some(iso_name) {
                    return Some(hex.to_ascii_lowercase());
                }
            }
            _ => bare.push(hex.to_ascii_lowercase()),
        }
    }
    if bare.len() == 1 {
        bare.pop()
    } else {
        None
    }
}

/// The name of a kind as the error shows it.
pub fn kind_name(kind: ChecksumKind) -> &'static str {
    match kind {
        ChecksumKind::Md5 => "MD5",
        ChecksumKind::Sha1 => "SHA-1",
        ChecksumKind::Sha256 => "SHA-256",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::Silent;

    #[test]
    fn digests_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.iso");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(digest_file(ChecksumKind::Md5, &p, &Silent).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(digest_file(ChecksumKind::Sha1, &p, &Silent).unwrap(), "a9993e364706816aba3e25717850c26c9cd0d89d");
        assert_eq!(
            digest_file(ChecksumKind::Sha256, &p, &Silent).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn checksum_file_shapes() {
        let h = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let other = "0000000000000000000000000000000000000000000000000000000000000000";
        let bsd = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# Fedora-Server-dvd-x86_64-40.iso: 1 bytes\n\
SHA256 (Fedora-Server-netinst-x86_64-40.iso) = {other}\nSHA256 (Fedora-Server-dvd-x86_64-40.iso) = {h}\n"
        );
        assert_eq!(expected_for(&bsd, ChecksumKind::Sha256, "Fedora-Server-dvd-x86_64-40.iso").as_deref(), Some(h));
        assert_eq!(expected_for(&bsd, ChecksumKind::Sha256, "missing.iso"), None);
        let gnu = format!("{other}  a.iso\n{}  *b.iso\n", h.to_uppercase());
        assert_eq!(expected_for(&gnu, ChecksumKind::Sha256, "b.iso").as_deref(), Some(h));
        assert_eq!(expected_for(&format!("{h}\n"), ChecksumKind::Sha256, "any.iso").as_deref(), Some(h));
        assert_eq!(expected_for(&format!("{h}\n"), ChecksumKind::Md5, "any.iso"), None, "wrong length for MD5");
        assert_eq!(expected_for(&format!("{h}  dir/c.iso\n"), ChecksumKind::Sha256, "c.iso").as_deref(), Some(h));
    }
}
