//! SHA-256 digests and their hex form.
//!
//! The digest comes from coreutils' `sha256sum` (always on a Debian build host) rather
//! than a hashing crate: the plugin already drives host tools for everything else, and
//! the inputs here are small (a template, a suite's Release file, a build key).

use std::process::Command;

use diskimage::process::{self, Options, Quiet};
use diskimage::DiskError;

/// The SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Result<[u8; 32], DiskError> {
    let out = process::run(
        "sha256sum",
        Command::new("sha256sum"),
        Options { stdin: Some(bytes.to_vec()), capture_stdout: true, ..Default::default() },
        &Quiet,
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let word = text.split_whitespace().next().unwrap_or("");
    from_hex(word)
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| DiskError::Unexpected(format!("sha256sum printed '{}', not a SHA-256 digest", text.trim())))
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string (either case); `None` unless it is whole hex pairs.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    pairs.map(|p| Some((nibble(p[0])? << 4) | nibble(p[1])?)).collect()
}

fn nibble(c: u8) -> Option<u8> {
    (c as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        assert_eq!(hex(&sha256(b"").unwrap()), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(hex(&sha256(b"abc").unwrap()), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn hex_round_trip_and_refusals() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(from_hex("00AB7f"), Some(vec![0x00, 0xab, 0x7f]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(""), Some(vec![]));
    }
}
