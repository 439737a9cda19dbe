//! A segment's store file: frames back to back, nothing else (see `record`).
//!
//! The single writer appends whole buffers at the end with positioned writes;
//! readers use positioned reads (`pread`), so a read never waits for an append.
//! `size` is published after the bytes are written, and readers never ask for
//! bytes past it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct Store {
    file: File,
    path: PathBuf,
    size: AtomicU64,
}

impl Store {
    pub fn open(path: &Path) -> io::Result<Store> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = file.metadata()?.len();
        Ok(Store {
            file,
            path: path.to_path_buf(),
            size: AtomicU64::new(size),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    /// Writes `bytes` at the end and returns where they start. Only the log's
    /// writer calls this. On failure the file is cut back so that no partial
    /// frame stays behind.
    pub fn append(&self, bytes: &[u8]) -> io::Result<u64> {
        let pos = self.size();
        if let Err(e) = self.file.write_all_at(bytes, pos) {
            // Best effort: if even this fails, recovery cuts the torn tail on open.
            let _ = self.file.set_len(pos);
            return Err(e);
        }
        self.size.store(pos + bytes.len() as u64, Ordering::Release);
        Ok(pos)
    }

    /// Overwrites bytes already written, in place. Only the writer calls this.
    pub fn write_at(&self, pos: u64, bytes: &[u8]) -> io::Result<()> {
        debug_assert!(
            pos + bytes.len() as u64 <= self.size(),
            "write_at only rewrites written bytes"
        );
        self.file.write_all_at(bytes, pos)
    }

    /// Reads exactly `len` bytes at `pos`; asking past `size` is an error.
    pub fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let end = pos.checked_add(len as u64);
        if end.is_none_or(|end| end > self.size()) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("read of {len} bytes at {pos} passes the end of {}", self.path.display()),
            ));
        }
        let mut buf = vec![0; len];
        self.file.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// Cuts the file to `size` bytes. Only the writer calls this.
    pub fn truncate(&self, size: u64) -> io::Result<()> {
        debug_assert!(size <= self.size(), "truncate only shortens a store");
        self.file.set_len(size)?;
        self.size.store(size, Ordering::Release);
        Ok(())
    }

    /// Forces written bytes to disk (fdatasync).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_and_reads_back_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("0.store")).unwrap();
        assert_eq!(store.append(b"hello").unwrap(), 0);
        assert_eq!(store.append(b"world!").unwrap(), 5);
        assert_eq!(store.size(), 11);
        assert_eq!(store.read_at(5, 6).unwrap(), b"world!");
        assert!(store.read_at(8, 4).is_err(), "reads past the end must fail");
    }

    #[test]
    fn truncate_and_reopen_keep_the_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.store");
        let store = Store::open(&path).unwrap();
        store.append(b"0123456789").unwrap();
        store.truncate(4).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.size(), 4);
        assert_eq!(store.read_at(0, 4).unwrap(), b"0123");
    }
}
