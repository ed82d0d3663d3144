//! Reading a raw disk image as EBS snapshot blocks, skipping what holds no data.
//!
//! An EBS snapshot is a map of 512 KiB blocks; a block never written reads as zeros. So
//! only blocks with a non-zero byte are sent. Holes of a sparse file are skipped without
//! reading them (`lseek(SEEK_DATA)`), and blocks of written zeros are read and dropped.
//! One block buffer is reused: memory does not grow with the image.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// The block size of the EBS direct APIs (fixed by AWS).
pub const EBS_BLOCK_SIZE: usize = 512 * 1024;

/// The blocks of a file with data in them, in order.
pub struct DataBlocks {
    file: File,
    size: u64,
    block: usize,
    /// The offset of the next block to look at (always block-aligned).
    next: u64,
}

impl DataBlocks {
    /// Opens `path` to read in blocks of `block` bytes.
    pub fn open(path: &Path, block: usize) -> io::Result<DataBlocks> {
        let file = File::open(path)?;
        let size = file.metadata()?.len();
        Ok(DataBlocks { file, size, block: block.max(512), next: 0 })
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How far through the file the reader is, in bytes (for progress).
    pub fn position(&self) -> u64 {
        self.next.min(self.size)
    }

    /// The number of blocks the whole file spans (the last one padded with zeros).
    pub fn block_count(&self) -> u64 {
        self.size.div_ceil(self.block as u64)
    }

    /// The next block holding a non-zero byte: its index, with its bytes in `buf`
    /// (exactly one block long; past the end of the file padded with zeros). `None` at
    /// the end.
    pub fn next_block(&mut self, buf: &mut Vec<u8>) -> io::Result<Option<u64>> {
        let block = self.block as u64;
        buf.resize(self.block, 0);
        while self.next < self.size {
            let Some(data) = seek_data(&self.file, self.next)? else {
                self.next = self.size;
                return Ok(None);
            };
            let index = data / block;
            let start = index * block;
            self.next = start + block;
            let mut filled = 0usize;
            while filled < self.block && start + (filled as u64) < self.size {
                let n = self.file.read_at(&mut buf[filled..], start + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            buf[filled..].fill(0);
            if buf.iter().any(|b| *b != 0) {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }
}

/// The first offset at or after `from` that holds data, `None` when only a hole
/// follows. Filesystems without SEEK_DATA report everything as data, which is still right
/// (the zero check then drops the empty blocks).
fn seek_data(file: &File, from: u64) -> io::Result<Option<u64>> {
    let Ok(off) = libc::off_t::try_from(from) else { return Ok(Some(from)) };
    // SAFETY: lseek on a file descriptor this File owns; it touches no memory.
    let r = unsafe { libc::lseek(file.as_raw_fd(), off, libc::SEEK_DATA) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(from)),
        _ => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn skips_holes_and_zero_blocks_and_pads_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.raw");
        let mut f = File::create(&p).unwrap();
        let b = EBS_BLOCK_SIZE as u64;
        f.set_len(10 * b + 100).unwrap();
        f.write_all(b"header").unwrap();
        f.seek(SeekFrom::Start(3 * b)).unwrap();
        f.write_all(&vec![0u8; EBS_BLOCK_SIZE]).unwrap(); // written zeros: not data
        f.seek(SeekFrom::Start(5 * b + 7)).unwrap();
        f.write_all(&vec![0xAB; EBS_BLOCK_SIZE]).unwrap(); // spans blocks 5 and 6
        f.seek(SeekFrom::Start(10 * b + 99)).unwrap();
        f.write_all(b"Z").unwrap(); // the last, short block
        drop(f);

        let mut r = DataBlocks::open(&p, EBS_BLOCK_SIZE).unwrap();
        assert_eq!(r.block_count(), 11);
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        while let Some(i) = r.next_block(&mut buf).unwrap() {
            assert_eq!(buf.len(), EBS_BLOCK_SIZE);
            seen.push((i, buf.iter().filter(|x| **x != 0).count()));
        }
        assert_eq!(seen, vec![(0, 6), (5, EBS_BLOCK_SIZE - 7), (6, 7), (10, 1)]);
        assert_eq!(r.position(), r.size());
    }

    #[test]
    fn an_empty_file_has_no_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("empty.raw");
        File::create(&p).unwrap().set_len(4 * EBS_BLOCK_SIZE as u64).unwrap();
        let mut r = DataBlocks::open(&p, EBS_BLOCK_SIZE).unwrap();
        assert_eq!(r.next_block(&mut Vec::new()).unwrap(), None);
    }
}
