//! The disk reserve: files in `raft/` whose only content is disk space,
//! allocated (fallocate) while there is room and given back when the disk
//! is full, so that the steps that free space can still run (see `room`).
//! Two of them, given back separately:
//!
//! - `reserve.appends`: room for the appends that carry the Raft core
//!   out of the append that met a full disk, so that it can snapshot and
//!   purge (it waits in that append, and openraft runs nothing else
//!   meanwhile). The size of a segment roll: two of the log's allocation
//!   chunks and a new segment's index file.
//! - `reserve.marks`: room for the small documents a snapshot and a purge
//!   write (the snapshot, the tables, the purged id, the vote).
//!
//! Their bytes mean nothing and are never read: a file missing, short,
//! unallocated or left over from any crash opens fine and is made whole
//! again (at start, after a purge, at each retention check) once the disk
//! has room for it and as much again.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::log::fsops;

/// One reserve file and whether it holds its bytes now.
#[derive(Debug)]
pub(super) struct Reserve {
    path: PathBuf,
    bytes: u64,
    held: AtomicBool,
    /// The last try to make it found no room for it.
    no_room: AtomicBool,
}

impl Reserve {
    /// A reserve of `bytes` at `path`, not yet made.
    pub(super) fn new(path: PathBuf, bytes: u64) -> Reserve {
        Reserve {
            path,
            bytes,
            held: AtomicBool::new(false),
            no_room: AtomicBool::new(false),
        }
    }

    /// Whether the last try to make it found no room for it (not a
    /// filesystem that cannot allocate, nor another error).
    pub(super) fn lacks_room(&self) -> bool {
        !self.held.load(Ordering::Acquire) && self.no_room.load(Ordering::Acquire)
    }

    /// Whether it is made and held now.
    pub(super) fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    pub(super) fn held_bytes(&self) -> u64 {
        match self.held.load(Ordering::Acquire) {
            true => self.bytes,
            false => 0,
        }
    }

    /// Makes the file whole if the disk has room for what it lacks and
    /// `bytes` more (what is left for the log); a part of one that cannot
    /// be made whole goes. Returns whether it was made (or cut to size)
    /// now: one found whole (a restart) is held and writes nothing. A
    /// filesystem that cannot allocate keeps no reserve.
    pub(super) fn make(&self) -> io::Result<bool> {
        if self.held.load(Ordering::Acquire) {
            return Ok(false);
        }
        let dir = self.path.parent().unwrap_or(&self.path);
        let (allocated, len) = match std::fs::metadata(&self.path) {
            Ok(meta) if meta.len() > self.bytes => {
                // Longer than asked for (a larger reserve before): cut first.
                fsops::set_len(&fsops::open(&self.path)?, &self.path, self.bytes)?;
                return self.make().map(|_| self.is_held());
            }
            Ok(meta) => (meta.blocks().saturating_mul(512), meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => (0, 0),
            Err(e) => return Err(fsops::naming(&self.path, e)),
        };
        let lacking = self.bytes.saturating_sub(allocated);
        let whole = lacking == 0 && len == self.bytes;
        if lacking > 0 && fsops::space(dir)?.available < lacking.saturating_add(self.bytes) {
            self.no_room.store(true, Ordering::Release);
            if allocated > 0 {
                self.remove()?;
            }
            return Ok(false);
        }
        let file = fsops::open(&self.path)?;
        let outcome = fsops::allocate(&file, &self.path, 0, self.bytes);
        drop(file);
        let full = |e: &io::Error| matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded);
        self.no_room.store(outcome.as_ref().is_err_and(full), Ordering::Release);
        match outcome {
            Ok(true) => {
                self.held.store(true, Ordering::Release);
                // One found whole (a restart) took nothing now: not said.
                Ok(!whole)
            }
            Ok(false) => self.remove().map(|()| false),
            // What a failed allocation took goes back with the file.
            Err(e) => self.remove().and(Err(e)),
        }
    }

    /// Gives the bytes back to the filesystem; whether it held any.
    pub(super) fn release(&self) -> io::Result<bool> {
        if !self.held.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        self.remove()?;
        Ok(true)
    }

    fn remove(&self) -> io::Result<()> {
        match fsops::remove(&self.path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allocated(path: &std::path::Path) -> u64 {
        std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
    }

    #[test]
    fn a_reserve_is_made_released_and_made_again_over_whatever_a_crash_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("reserve.test");
        // A crash left a short, sparse file.
        std::fs::write(&path, b"x").expect("leftover");
        let reserve = Reserve::new(path.clone(), 1 << 20);
        assert!(reserve.make().expect("made"));
        assert!(allocated(&path) >= 1 << 20, "allocated: {}", allocated(&path));
        assert_eq!(reserve.held_bytes(), 1 << 20);
        assert!(!reserve.make().expect("held already"));
        // A restart finds it whole: held, nothing made.
        let again = Reserve::new(path.clone(), 1 << 20);
        assert!(!again.make().expect("found whole"));
        assert_eq!(again.held_bytes(), 1 << 20);

        assert!(reserve.release().expect("released"));
        assert!(!path.exists());
        assert_eq!(reserve.held_bytes(), 0);
        assert!(!reserve.release().expect("nothing to release"));

        // A file too long (a larger reserve before) is cut to size.
        std::fs::write(&path, vec![1u8; 2 << 20]).expect("leftover");
        assert!(reserve.make().expect("made again"));
        assert_eq!(std::fs::metadata(&path).expect("there").len(), 1 << 20);
    }
}
