//! The small files beside the log that Raft needs to survive a crash: the
//! vote, the committed id, the purged id, the term runs, the state
//! machine's tables, the node id. Each is one JSON document preceded by its
//! CRC32 on a line of its own:
//!
//! ```text
//! crc32:<8 hex digits>\n<JSON>
//! ```
//!
//! written to `<name>.tmp`, synced, renamed over `<name>`, and the directory
//! synced: a crash leaves the old document or the new, never a mix, and a
//! disk that garbles one is caught by the checksum. Every step goes through
//! `log::fsops`, so that the crash tests see each one
//! (`tests/raft_files_power_cut.rs`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::log::fsops;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The largest document read back: these files hold ids and small tables.
pub const MAX_DOCUMENT: u64 = 64 * 1024 * 1024;

fn corrupt(path: &Path, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {why}", path.display()))
}

/// A directory of small durable documents.
#[derive(Clone, Debug)]
pub struct Durable {
    dir: PathBuf,
    /// One write at a time: two writers of one document would share its
    /// temporary file, and the second rename would find it gone.
    writing: Arc<Mutex<()>>,
}

impl Durable {
    pub fn open(dir: PathBuf) -> io::Result<Durable> {
        fsops::create_dir_all(&dir)?;
        // The directory's name is made durable in its parent before anything
        // is written in it (at every open: a crash may have come between the
        // two before): a power cut must not keep the log's segments and lose
        // `raft/`, or the node would refuse to start, its log taken for a
        // standalone one.
        if let Some(parent) = dir.parent() {
            fsops::sync_dir(parent)?;
        }
        Ok(Durable {
            dir,
            writing: Arc::new(Mutex::new(())),
        })
    }

    /// The documents of `dir` as it is, for reading: unlike `open`, it
    /// neither creates the directory nor syncs its name.
    pub fn existing(dir: PathBuf) -> Durable {
        Durable {
            dir,
            writing: Arc::new(Mutex::new(())),
        }
    }

    /// Makes the names of the documents written so far durable (a sync of
    /// the directory).
    pub fn sync_names(&self) -> io::Result<()> {
        fsops::sync_dir(&self.dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Replaces `name` with `value`, durably (see the module doc). With
    /// `sync` false nothing is synced: the new document survives the
    /// process (a crash, `kill -9`) through the page cache, but a power cut
    /// may keep the old one, which callers of this mode accept.
    pub fn write<T: Serialize>(&self, name: &str, value: &T, sync: bool) -> io::Result<()> {
        let json = serde_json::to_vec(value).map_err(io::Error::other)?;
        let mut document = format!("crc32:{:08x}\n", crc32fast::hash(&json)).into_bytes();
        document.extend_from_slice(&json);
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = fsops::create(&tmp)?;
        fsops::write(&file, &tmp, 0, &document)?;
        if sync {
            fsops::sync_data(&file, &tmp)?;
        }
        fsops::rename(&tmp, &path)?;
        if sync {
            fsops::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// The document `name`, or `None` if there is none.
    pub fn read<T: DeserializeOwned>(&self, name: &str) -> io::Result<Option<T>> {
        let path = self.dir.join(name);
        let bytes = match fs::metadata(&path) {
            Ok(meta) if meta.len() > MAX_DOCUMENT => return Err(corrupt(&path, format!("{} bytes", meta.len()))),
            Ok(_) => fs::read(&path)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let (head, json) = match bytes.iter().position(|b| *b == b'\n') {
            Some(nl) => bytes.split_at(nl),
            None => return Err(corrupt(&path, "no checksum line")),
        };
        let json = json.get(1..).unwrap_or_default();
        let want = std::str::from_utf8(head)
            .ok()
            .and_then(|h| h.strip_prefix("crc32:"))
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| corrupt(&path, "bad checksum line"))?;
        if crc32fast::hash(json) != want {
            return Err(corrupt(&path, "checksum mismatch"));
        }
        serde_json::from_slice(json).map(Some).map_err(|e| corrupt(&path, e))
    }

    /// Deletes `name`, durably; nothing when there is none.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let _one_at_a_time = self.writing.lock().unwrap_or_else(PoisonError::into_inner);
        match fs::remove_file(self.dir.join(name)) {
            Ok(()) => fsops::sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub fn exists(&self, name: &str) -> bool {
        self.dir.join(name).exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_reads_back_and_a_garbled_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = Durable::open(dir.path().join("raft")).expect("open");
        assert_eq!(d.read::<u64>("x").expect("read"), None);
        d.write("x", &42u64, true).expect("write");
        assert_eq!(d.read::<u64>("x").expect("read"), Some(42));
        let path = d.dir().join("x");
        let mut bytes = fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] = b'3';
        fs::write(&path, bytes).expect("write");
        assert!(d.read::<u64>("x").is_err());
    }
}
