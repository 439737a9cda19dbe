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

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

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
    seq: u64,
}

impl MarkFile {
    /// Opens (creating) the mark file at `path` and reads its mark.
    pub fn open(path: &Path) -> io::Result<(MarkFile, Option<LogId>)> {
        let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(named)?;
        let mut bytes = [0u8; 2 * SLOT];
        let read = file.read_at(&mut bytes, 0).map_err(named)?;
        let best = bytes
            .get(..read)
            .unwrap_or_default()
            .chunks_exact(SLOT)
            .filter_map(decode)
            .max_by_key(|(seq, _)| *seq);
        let (seq, mark) = best.unwrap_or((0, None));
        Ok((MarkFile { file, seq }, mark))
    }

    /// Records `mark` (see the module doc).
    pub fn write(&mut self, mark: Option<LogId>) -> io::Result<()> {
        let seq = self.seq + 1;
        let at = (seq % 2) * SLOT as u64;
        self.file.write_all_at(&encode(seq, mark), at)?;
        self.seq = seq;
        Ok(())
    }

    /// Records `mark` and waits until it is on disk.
    pub fn write_synced(&mut self, mark: Option<LogId>) -> io::Result<()> {
        self.write(mark)?;
        self.file.sync_data()
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
}
