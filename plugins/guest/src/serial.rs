//! Reading a guest's serial console log while qemu writes it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::GuestError;

/// Follows a growing log file and finds a string in it, across read boundaries.
#[derive(Debug)]
pub struct SerialLog {
    path: PathBuf,
    offset: u64,
    /// The end of what was read last, so a needle split across two reads is found.
    carry: Vec<u8>,
}

impl SerialLog {
    pub fn new(path: impl Into<PathBuf>) -> SerialLog {
        SerialLog { path: path.into(), offset: 0, carry: Vec::new() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads what was appended since the last call; true when `needle` appeared.
    /// A log that does not exist yet is empty (qemu creates it as it starts).
    pub fn poll(&mut self, needle: &str) -> Result<bool, GuestError> {
        let needle = needle.as_bytes();
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(GuestError::Io { what: format!("cannot read {}", self.path.display()), source }),
        };
        let mut fresh = Vec::new();
        file.seek(SeekFrom::Start(self.offset))
            .and_then(|_| file.read_to_end(&mut fresh))
            .map_err(|source| GuestError::Io { what: format!("cannot read {}", self.path.display()), source })?;
        self.offset += fresh.len() as u64;
        let mut window = std::mem::take(&mut self.carry);
        window.extend_from_slice(&fresh);
        let found = !needle.is_empty() && window.windows(needle.len()).any(|w| w == needle);
        let keep = needle.len().saturating_sub(1).min(window.len());
        self.carry = window[window.len() - keep..].to_vec();
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn finds_a_needle_split_across_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        let mut log = SerialLog::new(&path);
        assert!(!log.poll("MARKER-42").unwrap(), "a missing log is empty");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"booting... MARK").unwrap();
        assert!(!log.poll("MARKER-42").unwrap());
        f.write_all(b"ER-4").unwrap();
        assert!(!log.poll("MARKER-42").unwrap());
        f.write_all(b"2\r\nlogin:").unwrap();
        assert!(log.poll("MARKER-42").unwrap());
    }
}
