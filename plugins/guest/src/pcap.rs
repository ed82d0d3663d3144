//! Network traffic of a direct-qemu guest, counted from a packet capture.
//!
//! qemu 7.2 keeps no byte counters for a user-mode (slirp) network that QMP can read.
//! Its `filter-dump` object writes every packet of a netdev to a pcap file; with a small
//! `maxlen` only each packet's first bytes are kept, so the file stays small while each
//! record still carries the packet's full length. This module follows the file as it
//! grows and sums those lengths.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::GuestError;

/// Bytes of each packet kept in the capture (the lengths are what is counted).
pub const SNAPLEN: u32 = 64;

const GLOBAL_HEADER: u64 = 24;
const RECORD_HEADER: usize = 16;

/// Follows a pcap file and counts the bytes of the packets in it.
#[derive(Debug)]
pub struct PcapCounter {
    path: PathBuf,
    /// The file offset of the next record not read yet.
    offset: u64,
    bytes: u64,
    packets: u64,
}

impl PcapCounter {
    pub fn new(path: impl Into<PathBuf>) -> PcapCounter {
        PcapCounter { path: path.into(), offset: GLOBAL_HEADER, bytes: 0, packets: 0 }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the records appended since the last call; returns the total bytes so far.
    /// A capture that does not exist yet is empty.
    pub fn poll(&mut self) -> Result<u64, GuestError> {
        let mut f = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(self.bytes),
            Err(source) => return Err(GuestError::Io { what: format!("cannot read {}", self.path.display()), source }),
        };
        let mut fresh = Vec::new();
        f.seek(SeekFrom::Start(self.offset))
            .and_then(|_| f.read_to_end(&mut fresh))
            .map_err(|source| GuestError::Io { what: format!("cannot read {}", self.path.display()), source })?;
        let mut pos = 0;
        // Only whole records count; a record qemu is still writing is read next time.
        while fresh.len() - pos >= RECORD_HEADER {
            let h = &fresh[pos..pos + RECORD_HEADER];
            let incl = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let orig = u32::from_ne_bytes([h[12], h[13], h[14], h[15]]) as u64;
            if fresh.len() - pos < RECORD_HEADER + incl {
                break;
            }
            pos += RECORD_HEADER + incl;
            self.bytes += orig;
            self.packets += 1;
        }
        self.offset += pos as u64;
        Ok(self.bytes)
    }

    /// Packets counted so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn record(incl: u32, orig: u32) -> Vec<u8> {
        let mut r = vec![0u8; 8];
        r.extend_from_slice(&incl.to_ne_bytes());
        r.extend_from_slice(&orig.to_ne_bytes());
        r.resize(r.len() + incl as usize, 0xab);
        r
    }

    #[test]
    fn counts_whole_records_as_they_arrive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.pcap");
        let mut c = PcapCounter::new(&p);
        assert_eq!(c.poll().unwrap(), 0);
        let mut f = File::create(&p).unwrap();
        f.write_all(&[0u8; 24]).unwrap();
        f.write_all(&record(64, 1514)).unwrap();
        let second = record(42, 42);
        f.write_all(&second[..20]).unwrap();
        assert_eq!(c.poll().unwrap(), 1514);
        f.write_all(&second[20..]).unwrap();
        assert_eq!(c.poll().unwrap(), 1556);
        assert_eq!(c.packets(), 2);
    }
}
