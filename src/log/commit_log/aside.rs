//! Moving a closed log's segments out of its directory, never deleting them
//! (a cluster member's corrupt sealed segment and the ones after it, which
//! the cluster can supply again: `cluster::quarantine` decides when), and
//! copying an open log's tail out before a cut deletes it.
//!
//! The log must not be open: the directory's lock is held while files move.
//! Each segment moves store first, then index, each by one rename into the
//! destination (on the same filesystem), newest segment first, so that a
//! crash part-way leaves the directory a prefix of the log (and, at worst,
//! one index whose store went: the caller finishes the moves before any
//! open, which would remove it). A file already at its destination is not
//! replaced: what is then still in the directory was written after the
//! move, and the moved file is the one to keep.

use std::path::{Path, PathBuf};

use super::super::error::{LogError, Result};
use super::super::fsops;
use super::super::segment::{INDEX_SUFFIX, STORE_SUFFIX, parse_segment_name, segment_path};
use super::Log;
use super::opening::lock_directory;

impl Log {
    /// The base of the segment whose file an open's corrupt-data `error`
    /// names, if it names a segment file of `dir`.
    pub fn corrupt_segment_base(dir: &Path, error: &LogError) -> Option<u64> {
        let LogError::Corrupt { file, .. } = error else {
            return None;
        };
        if file.parent() != Some(dir) {
            return None;
        }
        parse_segment_name(file.file_name()?.to_str()?).map(|(base, _)| base)
    }

    /// The bases of the segments in `dir` (a closed log's) from `from` on,
    /// in order.
    pub fn segment_bases_from(dir: &Path, from: u64) -> Result<Vec<u64>> {
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| fsops::naming(dir, e))? {
            let name = entry.map_err(|e| fsops::naming(dir, e))?.file_name();
            if let Some((base, _)) = name.to_str().and_then(parse_segment_name) {
                bases.push(base);
            }
        }
        bases.retain(|b| *b >= from);
        bases.sort_unstable();
        bases.dedup();
        Ok(bases)
    }

    /// Keeps, in `to` (created if missing), the segments that hold offset
    /// `from` and later, before a cut at `from` takes them out of the log (a
    /// frame found corrupt inside a segment: `cluster::repair`): the store of
    /// the segment holding `from` is copied (the cut truncates it in place),
    /// the later segments' files are hard-linked (the cut unlinks them, so
    /// they cost no room). Each file is synced, then `to`. On an error
    /// (a full disk) `to` is removed again, so that a start that failed here
    /// does not leave a partial copy filling the disk; a copy a crash leaves
    /// before the cut is only a copy, and the next start makes another.
    pub fn copy_tail_aside(&self, from: u64, to: &Path) -> Result<Vec<PathBuf>> {
        let kept = self.keep_tail(from, to);
        if kept.is_err() {
            let _ = std::fs::remove_dir_all(to);
        }
        kept
    }

    fn keep_tail(&self, from: u64, to: &Path) -> Result<Vec<PathBuf>> {
        let bases = self.segment_bases();
        let first = bases.iter().rev().find(|b| **b <= from).copied().unwrap_or(from);
        fsops::create_dir_all(to)?;
        // Every directory made is in its parent (`to` may be two levels
        // below the log's, `quarantine/<ms>`) before the cut it keeps.
        if let Some(parent) = to.parent() {
            fsops::sync_dir(parent)?;
        }
        fsops::sync_dir(self.dir())?;
        let mut kept = Vec::new();
        for base in bases.into_iter().filter(|b| *b >= first) {
            for suffix in [STORE_SUFFIX, INDEX_SUFFIX] {
                let (source, into) = (segment_path(self.dir(), base, suffix), segment_path(to, base, suffix));
                if !source.exists() || into.exists() {
                    continue;
                }
                match (base == first, suffix == STORE_SUFFIX) {
                    // An index is rebuilt from its store.
                    (true, false) => continue,
                    (true, true) => {
                        std::fs::copy(&source, &into).map_err(|e| fsops::naming(&into, e))?;
                    }
                    (false, _) => std::fs::hard_link(&source, &into).map_err(|e| fsops::naming(&into, e))?,
                }
                let file = std::fs::File::open(&into).map_err(|e| fsops::naming(&into, e))?;
                fsops::sync_all(&file, &into)?;
                kept.push(into);
            }
        }
        fsops::sync_dir(to)?;
        Ok(kept)
    }

    /// Moves the files of the segments `bases` of the closed log in `dir`
    /// into `to` (created if missing), newest first (see the module doc);
    /// returns the files it moved. Both directories are synced before it
    /// returns.
    pub fn move_segments_aside(dir: &Path, bases: &[u64], to: &Path) -> Result<Vec<PathBuf>> {
        let _lock = lock_directory(dir)?;
        fsops::create_dir_all(to)?;
        // Every directory made is in its parent before a file moves into it
        // (`to` may be two levels below `dir`, `quarantine/<ms>`).
        if let Some(parent) = to.parent() {
            fsops::sync_dir(parent)?;
        }
        fsops::sync_dir(dir)?;
        let mut moved = Vec::new();
        let mut newest_first = bases.to_vec();
        newest_first.sort_unstable_by(|a, b| b.cmp(a));
        for base in newest_first {
            for suffix in [STORE_SUFFIX, INDEX_SUFFIX] {
                let (from, into) = (segment_path(dir, base, suffix), segment_path(to, base, suffix));
                if !from.exists() || into.exists() {
                    continue;
                }
                fsops::rename(&from, &into)?;
                moved.push(into);
            }
        }
        fsops::sync_dir(to)?;
        fsops::sync_dir(dir)?;
        Ok(moved)
    }
}
