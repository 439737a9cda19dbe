//! A standalone node's consumer positions on disk, in `<data dir>/consumers/`:
//! `positions`, the table as it was at some point (a `cluster::Durable`
//! document: CRC line, JSON, replaced by rename), and `journal`, the
//! effects of the changes made since, one a line, each written and synced
//! before its change is answered:
//!
//! ```text
//! <CRC32 of the JSON, 8 hex digits> {"name":"billing","position":{"offset":42,"updated_ms":1795537813536}}
//! <CRC32 of the JSON, 8 hex digits> {"name":"billing","position":null}        (deleted)
//! ```
//!
//! A change costs one short line and one sync, whatever the table's size.
//! An effect sets or removes one name whatever was there, so applying a
//! journal again over a table that already holds it changes nothing: the
//! journal is folded into `positions` (written first) and then emptied,
//! and a crash between the two is harmless. That happens once it has more
//! lines than `FOLD_AFTER` or the table has names, so it stays within a
//! few times the table's size.
//!
//! On open the journal is applied line by line. A last line that is torn
//! or fails its checksum is a change whose sync never returned (never
//! answered): it is cut off, with a warning. A bad line before good ones is
//! corruption, and the node refuses to start rather than lose answered
//! changes.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cluster::Durable;
use crate::log::consumers::{Position, Positions};
use crate::log::fsops;

const TABLE: &str = "positions";
const JOURNAL: &str = "journal";

/// Lines the journal holds at least before it is folded.
const FOLD_AFTER: usize = 1024;

/// The largest journal read back: folding keeps it to a few MiB.
const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;

/// One line's JSON: a name's position after a change (`None`: deleted).
#[derive(Serialize, Deserialize)]
struct Effect {
    name: String,
    position: Option<Position>,
}

/// See the module doc.
#[derive(Debug)]
pub struct Journal {
    table: Durable,
    file: File,
    path: PathBuf,
    /// Where the next line goes: the end of the good lines.
    len: u64,
    lines: usize,
}

fn corrupt(path: &Path, line: usize, why: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} line {line}: {why}", path.display()),
    )
}

impl Journal {
    /// Opens `dir` (creating it), and the positions its files hold.
    pub fn open(dir: &Path) -> io::Result<(Journal, Positions)> {
        let table = Durable::open(dir.to_path_buf())?;
        let mut positions = table.read::<Positions>(TABLE)?.unwrap_or_default();
        let path = dir.join(JOURNAL);
        let file = fsops::open(&path)?;
        let size = file.metadata().map_err(|e| fsops::naming(&path, e))?.len();
        if size > MAX_JOURNAL_BYTES {
            return Err(corrupt(&path, 0, format!("{size} bytes, more than a journal grows to")));
        }
        let bytes = std::fs::read(&path).map_err(|e| fsops::naming(&path, e))?;
        let (len, lines) = replay(&path, &bytes, &mut positions)?;
        if len < size {
            tracing::warn!(path = %path.display(), cut = size - len, "a torn last consumer position change (never answered) is cut off");
            fsops::set_len(&file, &path, len)?;
            fsops::sync_data(&file, &path)?;
        }
        let journal = Journal {
            table,
            file,
            path,
            len,
            lines,
        };
        Ok((journal, positions))
    }

    /// Records that `name` is now at `position` (`None`: deleted) in
    /// `positions`, durably; then folds the journal if it is due. A fold
    /// that fails is only logged: the change is recorded already.
    pub fn record(&mut self, positions: &Positions, name: &str, position: Option<Position>) -> io::Result<()> {
        let effect = Effect {
            name: name.to_string(),
            position,
        };
        let json = serde_json::to_vec(&effect).map_err(io::Error::other)?;
        let mut line = format!("{:08x} ", crc32fast::hash(&json)).into_bytes();
        line.extend_from_slice(&json);
        line.push(b'\n');
        // At the end of the good lines: a write that failed half-way is
        // written over by the next one.
        fsops::write(&self.file, &self.path, self.len, &line)?;
        fsops::sync_data(&self.file, &self.path)?;
        self.len += line.len() as u64;
        self.lines += 1;
        if self.lines > FOLD_AFTER.max(positions.len())
            && let Err(e) = self.fold(positions)
        {
            tracing::warn!(error = %e, "could not fold the consumer positions' journal; it is kept");
        }
        Ok(())
    }

    /// Writes the table, then empties the journal (see the module doc).
    fn fold(&mut self, positions: &Positions) -> io::Result<()> {
        self.table.write(TABLE, positions, true)?;
        fsops::set_len(&self.file, &self.path, 0)?;
        fsops::sync_data(&self.file, &self.path)?;
        self.len = 0;
        self.lines = 0;
        Ok(())
    }
}

/// Applies the journal's good lines to `positions`: where they end, and
/// how many there are.
fn replay(path: &Path, bytes: &[u8], positions: &mut Positions) -> io::Result<(u64, usize)> {
    let mut at = 0;
    let mut lines = 0;
    while at < bytes.len() {
        let rest = bytes.get(at..).unwrap_or_default();
        let end = rest.iter().position(|b| *b == b'\n');
        let effect = end.and_then(|end| rest.get(..end)).and_then(parse_line);
        match (effect, end) {
            (Some(effect), Some(end)) => {
                positions.restore(effect.name, effect.position);
                at += end + 1;
                lines += 1;
            }
            // A torn or bad last line: the journal ends before it.
            (_, None) => break,
            (None, Some(end)) if at + end + 1 == bytes.len() => break,
            (None, Some(_)) => return Err(corrupt(path, lines + 1, "a bad line before good ones")),
        }
    }
    Ok((at as u64, lines))
}

fn parse_line(line: &[u8]) -> Option<Effect> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    (line.get(8) == Some(&b' ') && crc32fast::hash(json) == crc)
        .then(|| serde_json::from_slice(json).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Option<Position> {
        Some(Position { offset, updated_ms: 1 })
    }

    /// Records `name` at `position` in both the table and the journal.
    fn change(journal: &mut Journal, table: &mut Positions, name: &str, position: Option<Position>) {
        table.restore(name.to_string(), position);
        journal.record(table, name, position).unwrap();
    }

    #[test]
    fn changes_are_read_back_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, mut table) = Journal::open(dir.path()).unwrap();
        change(&mut journal, &mut table, "a", at(1));
        change(&mut journal, &mut table, "b", at(2));
        change(&mut journal, &mut table, "a", None);
        drop(journal);
        let (_, read) = Journal::open(dir.path()).unwrap();
        assert_eq!(read, table);
        assert_eq!(read.get("b"), at(2));
        assert_eq!(read.get("a"), None);
    }

    #[test]
    fn a_long_journal_is_folded_into_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, mut table) = Journal::open(dir.path()).unwrap();
        for i in 0..=FOLD_AFTER as u64 + 5 {
            change(&mut journal, &mut table, &format!("c{}", i % 7), at(i));
        }
        assert!(journal.lines < 10, "folded: {} lines left", journal.lines);
        assert!(dir.path().join(TABLE).exists());
        drop(journal);
        assert_eq!(Journal::open(dir.path()).unwrap().1, table);
    }

    #[test]
    fn a_journal_applied_again_over_its_own_fold_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, mut table) = Journal::open(dir.path()).unwrap();
        change(&mut journal, &mut table, "a", at(1));
        change(&mut journal, &mut table, "a", None);
        change(&mut journal, &mut table, "b", at(3));
        // A crash between writing the table and emptying the journal.
        journal.table.write(TABLE, &table, true).unwrap();
        drop(journal);
        assert_eq!(Journal::open(dir.path()).unwrap().1, table);
    }

    #[test]
    fn a_torn_last_line_is_cut_and_a_bad_line_before_good_ones_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, mut table) = Journal::open(dir.path()).unwrap();
        change(&mut journal, &mut table, "a", at(1));
        change(&mut journal, &mut table, "b", at(2));
        drop(journal);
        let path = dir.path().join(JOURNAL);
        let good = std::fs::read(&path).unwrap();
        let first_line = good.iter().position(|b| *b == b'\n').unwrap() + 1;

        let mut torn = good.clone();
        torn.extend_from_slice(b"0000");
        std::fs::write(&path, &torn).unwrap();
        assert_eq!(Journal::open(dir.path()).unwrap().1, table, "a torn tail");
        assert_eq!(std::fs::read(&path).unwrap(), good, "cut off");

        let mut garbled_last = good.clone();
        let last = garbled_last.len() - 3;
        garbled_last[last] ^= 1;
        std::fs::write(&path, &garbled_last).unwrap();
        let (_, read) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            (read.get("a"), read.get("b")),
            (at(1), None),
            "the unanswered last change"
        );

        let mut garbled_first = good.clone();
        garbled_first[first_line - 3] ^= 1;
        std::fs::write(&path, &garbled_first).unwrap();
        let refused = Journal::open(dir.path()).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::InvalidData, "{refused}");
    }
}
