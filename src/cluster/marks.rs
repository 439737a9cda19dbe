//! A log id that changes often (the committed and the flushed marks, see
//! `repair`), kept in a tiny file written in place: two 32-byte slots used
//! in turn, each
//!
//! ```text
//! | seq u64 | present u8 | term u64 | index u64 | zero 3 | crc32 u32 |  (little-endian)
//! ```
//!
//! with the CRC over the first 28 bytes. The slot with the highest `seq`
//! whose checksum holds is the mark, so a write torn by a crash leaves the
//! previous value. A write is one `pwrite` and no sync (the page cache
//! carries it across a process crash, not a power cut): unlike a
//! rename-into-place document, nothing in the directory changes per write.
//! The file's creation is made durable (the directory synced) before it is
//! written, or a synced mark could vanish with it. Every step goes through
//! `log::fsops`, so that the crash tests see each one (`tests` below).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::log::fsops;

use super::types::{LogId, log_id, term_of};

const SLOT: usize = 32;
const CHECKED: usize = 28;

fn encode(seq: u64, mark: Option<LogId>) -> [u8; SLOT] {
    let mut slot = [0u8; SLOT];
    slot[0..8].copy_from_slice(&seq.to_le_bytes());
    if let Some(id) = mark {
        slot[8] = 1;
        slot[9..17].copy_from_slice(&term_of(&id).to_le_bytes());
        slot[17..25].copy_from_slice(&id.index.to_le_bytes());
    }
    let crc = crc32fast::hash(&slot[..CHECKED]);
    slot[CHECKED..].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// `(seq, mark)` of a slot whose checksum holds.
fn decode(slot: &[u8]) -> Option<(u64, Option<LogId>)> {
    let word = |at: usize| {
        slot.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let crc = slot
        .get(CHECKED..SLOT)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)?;
    if crc32fast::hash(slot.get(..CHECKED)?) != crc {
        return None;
    }
    let seq = word(0)?;
    let mark = match slot.get(8)? {
        0 => None,
        _ => Some(log_id(word(9)?, word(17)?)),
    };
    Some((seq, mark))
}

/// One mark file, open for writing.
#[derive(Debug)]
pub struct MarkFile {
    file: File,
    path: PathBuf,
    seq: u64,
}

impl MarkFile {
    /// Opens (creating) the mark file at `path` and reads its mark.
    pub fn open(path: &Path) -> io::Result<(MarkFile, Option<LogId>)> {
        let existed = path.exists();
        let file = fsops::open(path)?;
        // (A length it cannot read: nothing written, a mark may be there.)
        let len = file.metadata().map_or(2 * SLOT, |m| m.len() as usize);
        if len < 2 * SLOT {
            // Its block taken now, while there is room: a write in place
            // on a full disk must not need one. Zeros past what it holds
            // read as no mark (no checksum holds); unsynced, a lost one
            // costs only that.
            let _ = fsops::write(&file, path, len as u64, &[0u8; 2 * SLOT][len..]);
        }
        if !existed && let Some(dir) = path.parent() {
            fsops::sync_dir(dir)?;
        }
        let mut bytes = [0u8; 2 * SLOT];
        let read = file.read_at(&mut bytes, 0).map_err(|e| fsops::naming(path, e))?;
        let best = bytes
            .get(..read)
            .unwrap_or_default()
            .chunks_exact(SLOT)
            .filter_map(decode)
            .max_by_key(|(seq, _)| *seq);
        let (seq, mark) = best.unwrap_or((0, None));
        let path = path.to_path_buf();
        Ok((MarkFile { file, path, seq }, mark))
    }

    /// Records `mark` (see the module doc).
    pub fn write(&mut self, mark: Option<LogId>) -> io::Result<()> {
        let seq = self.seq + 1;
        let at = (seq % 2) * SLOT as u64;
        fsops::write(&self.file, &self.path, at, &encode(seq, mark))?;
        self.seq = seq;
        Ok(())
    }

    /// Records `mark` and waits until it is on disk.
    pub fn write_synced(&mut self, mark: Option<LogId>) -> io::Result<()> {
        self.write(mark)?;
        fsops::sync_data(&self.file, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_sound_slot_is_the_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        let (mut file, mark) = MarkFile::open(&path).expect("open");
        assert_eq!(mark, None);
        file.write(Some(log_id(1, 5))).expect("write");
        file.write(Some(log_id(2, 9))).expect("write");
        drop(file);
        let (mut file, mark) = MarkFile::open(&path).expect("open");
        assert_eq!(mark, Some(log_id(2, 9)));
        file.write(None).expect("write");
        assert_eq!(MarkFile::open(&path).expect("open").1, None);
    }

    #[test]
    fn a_torn_write_leaves_the_previous_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("m");
        let (mut file, _) = MarkFile::open(&path).expect("open");
        file.write(Some(log_id(1, 5))).expect("write");
        file.write(Some(log_id(1, 6))).expect("write");
        // Seq 2 went to slot 0: garble it.
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[20] ^= 0xff;
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(MarkFile::open(&path).expect("open").1, Some(log_id(1, 5)));
    }

    /// Power cuts at every step of a mark's writes, as
    /// `tests/raft_files_power_cut.rs` does for the documents: before each
    /// step the disk may hold the file's directory entry as of the last
    /// directory sync or as now, and its bytes as of its last sync, as now,
    /// or with the newest write torn half-way. Each image must read as the
    /// old mark or the new one, and once a synced write returned, as the
    /// new one in every image.
    mod power_cuts {
        use std::path::PathBuf;
        use std::sync::{Arc, Mutex, PoisonError};

        use super::super::{LogId, MarkFile};
        use crate::cluster::types::log_id;
        use crate::log::fsops::{self, Step};

        enum Pending {
            Data(Vec<u8>),
            Dir(bool),
        }

        /// The mark file as a crash may leave it.
        struct Disk {
            path: PathBuf,
            entry_synced: bool,
            synced: Vec<u8>,
            pending: Option<Pending>,
            allowed: Vec<Option<LogId>>,
            steps: Vec<String>,
            failures: Vec<String>,
        }

        impl Disk {
            fn now(&self) -> Option<Vec<u8>> {
                std::fs::read(&self.path).ok()
            }

            fn complete(&mut self) {
                match self.pending.take() {
                    Some(Pending::Data(bytes)) => self.synced = bytes,
                    Some(Pending::Dir(exists)) => self.entry_synced = exists,
                    None => {}
                }
            }

            fn note(&mut self, step: &Step<'_>) {
                let kind = format!("{step:?}");
                self.steps.push(kind.split('(').next().unwrap_or_default().to_owned());
                self.pending = match step {
                    Step::SyncData(_) | Step::SyncAll(_) => Some(Pending::Data(self.now().unwrap_or_default())),
                    Step::SyncDir(_) => Some(Pending::Dir(self.path.exists())),
                    _ => None,
                };
            }

            /// Every image a crash now may leave: `None` for no file.
            fn images(&self) -> Vec<Option<Vec<u8>>> {
                let now = self.now();
                let mut images = Vec::new();
                for entry in [self.entry_synced, now.is_some()] {
                    if !entry {
                        images.push(None);
                        continue;
                    }
                    let now = now.clone().unwrap_or_default();
                    images.push(Some(self.synced.clone()));
                    images.push(Some(torn(&self.synced, &now)));
                    images.push(Some(now));
                }
                images
            }

            fn check(&mut self, at: &str) {
                for image in self.images() {
                    let dir = tempfile::tempdir().expect("tempdir");
                    let path = dir.path().join("m");
                    if let Some(bytes) = &image {
                        std::fs::write(&path, bytes).expect("write the image");
                    }
                    let read = MarkFile::open(&path).map(|(_, mark)| mark);
                    if !read.as_ref().is_ok_and(|mark| self.allowed.contains(mark)) {
                        self.failures.push(format!(
                            "crash before {at}, image {image:?}: {read:?}, not one of {:?}",
                            self.allowed
                        ));
                    }
                }
            }
        }

        /// The first half of what changed written over the old bytes.
        fn torn(old: &[u8], new: &[u8]) -> Vec<u8> {
            let at = |i: usize| old.get(i).copied().unwrap_or(0);
            let differ: Vec<usize> = (0..new.len()).filter(|i| new[*i] != at(*i)).collect();
            let (Some(first), Some(last)) = (differ.first(), differ.last()) else {
                return new.to_vec();
            };
            let cut = first + (last + 1 - first) / 2;
            (0..new.len()).map(|i| if i < cut { new[i] } else { at(i) }).collect()
        }

        /// Runs `change` with a crash checked before each of its steps
        /// (marks read as one of `during`) and after it (one of `after`).
        fn with_power_cuts(
            path: &std::path::Path,
            during: Vec<Option<LogId>>,
            after: Vec<Option<LogId>>,
            change: impl FnOnce(),
        ) -> Vec<String> {
            let dir = path.parent().expect("a directory");
            let disk = Arc::new(Mutex::new(Disk {
                path: path.to_path_buf(),
                entry_synced: path.exists(),
                synced: std::fs::read(path).unwrap_or_default(),
                pending: None,
                allowed: during,
                steps: Vec::new(),
                failures: Vec::new(),
            }));
            let watched = disk.clone();
            let watch = fsops::watch(
                dir,
                Arc::new(move |step: &Step<'_>| {
                    let mut disk = watched.lock().unwrap_or_else(PoisonError::into_inner);
                    disk.complete();
                    disk.check(&format!("{step:?}"));
                    disk.note(step);
                    Ok(())
                }),
            );
            change();
            drop(watch);
            let mut disk = disk.lock().unwrap_or_else(PoisonError::into_inner);
            disk.complete();
            disk.allowed = after;
            disk.check("the return");
            assert!(
                disk.failures.is_empty(),
                "{:#?}",
                disk.failures.iter().take(4).collect::<Vec<_>>()
            );
            disk.steps.clone()
        }

        #[test]
        fn a_new_mark_file_holds_its_first_synced_mark_after_a_crash_at_every_step() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("committed.mark");
            let mark = Some(log_id(1, 5));
            let steps = with_power_cuts(&path, vec![None, mark], vec![mark], || {
                let (mut file, read) = MarkFile::open(&path).expect("open");
                assert_eq!(read, None);
                file.write_synced(mark).expect("write");
            });
            // The first write takes the file's block (zeros: no mark).
            assert_eq!(steps, ["Open", "Write", "SyncDir", "Write", "SyncData"]);
        }

        #[test]
        fn a_synced_mark_replaces_the_old_one_after_a_crash_at_every_step() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("flushed.mark");
            let (mut file, _) = MarkFile::open(&path).expect("open");
            let (old, new) = (Some(log_id(2, 9)), Some(log_id(3, 12)));
            file.write(Some(log_id(1, 1))).expect("write");
            file.write_synced(old).expect("write");
            let steps = with_power_cuts(&path, vec![old, new], vec![new], || {
                file.write_synced(new).expect("write");
            });
            assert_eq!(steps, ["Write", "SyncData"]);
        }

        #[test]
        fn an_unsynced_mark_is_old_or_new_after_a_crash_at_every_step() {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("committed.mark");
            let (mut file, _) = MarkFile::open(&path).expect("open");
            let (old, new) = (Some(log_id(2, 9)), None);
            file.write_synced(old).expect("write");
            // Not synced: a power cut may keep the old mark, never a mix.
            let steps = with_power_cuts(&path, vec![old, new], vec![old, new], || {
                file.write(new).expect("write");
            });
            assert_eq!(steps, ["Write"]);
            assert_eq!(MarkFile::open(&path).expect("open").1, new, "the page cache holds it");
        }
    }
}
