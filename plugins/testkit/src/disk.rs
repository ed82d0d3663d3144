//! Sparse raw disks for conversion and push tests and benchmarks: a large apparent size
//! with data blocks at a fixed stride, so that a converter or uploader must skip holes,
//! and incompressible (or, alternately, text) data, so that compression cannot hide work.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

const MIB: u64 = 1 << 20;

/// Incompressible bytes without a random-number dependency (xorshift64): the same `seed`
/// gives the same bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A sparse raw disk: `size_mib` apparent, one MiB of data every `stride_mib` MiB from
/// the start.
#[derive(Debug, Clone)]
pub struct SparseDisk {
    size_mib: u64,
    stride_mib: u64,
    blocks: Option<u64>,
    text_label: Option<String>,
}

impl SparseDisk {
    /// Data blocks all the way to the end, all pseudo-random.
    pub fn new(size_mib: u64, stride_mib: u64) -> SparseDisk {
        assert!(stride_mib > 0 && size_mib > 0, "a disk needs a size and a stride");
        SparseDisk { size_mib, stride_mib, blocks: None, text_label: None }
    }

    /// Only the first `n` blocks.
    pub fn blocks(mut self, n: u64) -> SparseDisk {
        self.blocks = Some(n);
        self
    }

    /// Every other block is compressible text naming `label` and the block's number.
    pub fn alternate_text(mut self, label: &str) -> SparseDisk {
        self.text_label = Some(label.to_string());
        self
    }

    /// Writes the disk (synced) and returns how many MiB of data it holds.
    pub fn write(&self, path: &Path) -> u64 {
        let mut f = std::fs::File::create(path).expect("create the disk");
        f.set_len(self.size_mib * MIB).expect("size the disk");
        let max_blocks = self.size_mib.div_ceil(self.stride_mib);
        let blocks = self.blocks.unwrap_or(max_blocks).min(max_blocks);
        for i in 0..blocks {
            let block = match &self.text_label {
                Some(label) if i % 2 == 1 => {
                    let text = format!("imagefactory {label} block {i} ");
                    text.as_bytes().iter().copied().cycle().take(MIB as usize).collect()
                }
                _ => pseudo_random(MIB as usize, i + 1),
            };
            f.seek(SeekFrom::Start(i * self.stride_mib * MIB)).expect("seek");
            f.write_all(&block).expect("write a data block");
        }
        f.sync_all().expect("sync the disk");
        blocks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_land_at_the_stride_and_the_rest_is_a_hole() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("d.raw");
        let n = SparseDisk::new(16, 6).alternate_text("t").write(&path);
        assert_eq!(n, 3);
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(bytes.len() as u64, 16 * MIB);
        let at = |mib: u64| &bytes[(mib * MIB) as usize..(mib * MIB) as usize + 16];
        assert_eq!(at(0), &pseudo_random(16, 1)[..]);
        assert!(at(6).starts_with(b"imagefactory t"));
        assert_eq!(at(12), &pseudo_random(16, 3)[..]);
        assert!(at(3).iter().all(|b| *b == 0) && at(15).iter().all(|b| *b == 0));
        assert_eq!(SparseDisk::new(16, 6).blocks(1).write(&path), 1);
    }
}
