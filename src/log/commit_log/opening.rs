//! Opening a data directory: its lock, a check that a segment fits in the
//! free space, and its segments in base order. An open that fails removes
//! what it created (`Created`), and never anything that was there before.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::config::LogConfig;
use super::super::error::{LogError, Result};
use super::super::fsops;
use super::super::record::{FRAME_PREFIX, frame_body_len};
use super::super::segment::{INDEX_SUFFIX, STORE_SUFFIX, Segment, parse_segment_name, segment_path};

const LOCK_FILE: &str = "LOCK";

pub(super) fn lock_directory(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = fsops::open_lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(LogError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(fsops::naming(&path, e).into()),
    }
}

/// What an open is about to create, so that a failed one can remove it:
/// the data directory and its missing parents, the lock file, and the
/// first segment of a directory that held none.
pub(super) struct Created {
    /// Directories that did not exist, the data directory first.
    dirs: Vec<PathBuf>,
    lock_file: Option<PathBuf>,
    /// Set once the directory is locked, if it held no segment then: every
    /// segment file found after a failure is this open's.
    fresh_log: bool,
}

impl Created {
    /// Notes which of `dir` and its parents are missing, before the open
    /// creates them.
    pub(super) fn before_creating(dir: &Path) -> Created {
        let dirs = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        let lock_file = dir.join(LOCK_FILE);
        Created {
            dirs,
            lock_file: (!lock_file.exists()).then_some(lock_file),
            fresh_log: false,
        }
    }

    /// Notes, once the directory is locked, whether it holds a log.
    pub(super) fn locked(&mut self, dir: &Path) -> Result<()> {
        self.fresh_log = segment_names(dir)?.is_empty();
        Ok(())
    }

    /// Removes what the failed open created, newest first. Best effort: the
    /// open's own error is what the caller reports. Called after the lock is
    /// let go, and never when the directory was locked by another process
    /// (what is there may be that process's).
    pub(super) fn remove(self, dir: &Path) {
        if self.fresh_log {
            for name in segment_names(dir).unwrap_or_default() {
                let _ = fsops::remove(&dir.join(name));
            }
        }
        if let Some(lock_file) = &self.lock_file {
            let _ = fsops::remove(lock_file);
        }
        // `remove_dir` only removes empty directories: anything else put
        // there meanwhile stays.
        for created in &self.dirs {
            let _ = fsops::remove_dir(created);
        }
        let _ = fsops::sync_dir(self.dirs.last().and_then(|d| d.parent()).unwrap_or(dir));
    }
}

/// The segment files (stores and indexes) in `dir`.
fn segment_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| fsops::naming(dir, e))? {
        let name = entry.map_err(|e| fsops::naming(dir, e))?.file_name();
        if let Some(name) = name.to_str().filter(|n| parse_segment_name(n).is_some()) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

/// Refuses a segment size the disk cannot hold: the active segment's store
/// at `max_segment_bytes` and its index at full size must fit in the free
/// space of the directory's filesystem, counting what the newest segment
/// already holds (it is the one that grows). Files are allocated as they
/// fill, so this is what keeps a huge setting from failing only once the
/// disk is full.
pub(super) fn check_room(dir: &Path, config: &LogConfig) -> Result<()> {
    let index_bytes = config.index_file_bytes();
    let needed = config.max_segment_bytes.saturating_add(index_bytes);
    let held = newest_segment_bytes(dir)?;
    let room = fsops::free_space(dir)?.saturating_add(held);
    if needed <= room {
        return Ok(());
    }
    Err(LogError::Config {
        key: "max_segment_bytes",
        allowed: format!(
            "at most {} (a segment and its {index_bytes}-byte index must fit in the {room} bytes free on {})",
            room.saturating_sub(index_bytes),
            dir.display()
        ),
        value: config.max_segment_bytes.to_string(),
    })
}

/// Disk space the newest segment's files hold.
fn newest_segment_bytes(dir: &Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let Some(newest) = segment_bases(dir, false)?.pop() else {
        return Ok(0);
    };
    let mut held = 0u64;
    for suffix in [STORE_SUFFIX, INDEX_SUFFIX] {
        let path = segment_path(dir, newest, suffix);
        if let Ok(meta) = fs::metadata(&path) {
            held = held.saturating_add(meta.blocks().saturating_mul(512));
        }
    }
    Ok(held)
}

/// Opens the segments found in `dir`: sealed ones are trusted but for their
/// last entry, the last one is recovered. An empty directory gets segment 0.
///
/// Segments must follow each other without a gap or an overlap: each sealed
/// one holds exactly the offsets up to the next one's base. Two states that
/// break this lose nothing when repaired, and are: an empty segment that is
/// not the last (a reset or a roll interrupted before it removed the old
/// segments or wrote anything), and an empty last segment whose base the one
/// before does not reach (likewise). Their files are removed. Any other gap
/// or overlap is an error naming both files.
pub(super) fn open_segments(dir: &Path, config: &LogConfig) -> Result<Vec<Arc<Segment>>> {
    let mut bases = segment_bases(dir, true)?;
    for base in bases.clone().iter().rev().skip(1) {
        if store_is_empty(dir, *base)? {
            drop_empty_segment(dir, *base, "an empty segment before others")?;
            bases.retain(|b| b != base);
        }
    }
    loop {
        let Some((&last, sealed)) = bases.split_last() else {
            return Ok(vec![Arc::new(Segment::create(dir, 0, config)?)]);
        };
        match open_in_order(dir, sealed, last, config) {
            Err(LogError::Corrupt { .. }) if !sealed.is_empty() && store_is_empty(dir, last)? => {
                drop_empty_segment(dir, last, "an empty last segment that does not continue the log")?;
                bases.pop();
            }
            opened => return opened,
        }
    }
}

/// The bases of the segments in `dir`, in order; with `tidy`, an index
/// whose store is missing is removed (a removal interrupted between its
/// two files).
fn segment_bases(dir: &Path, tidy: bool) -> Result<Vec<u64>> {
    let mut bases = Vec::new();
    let mut index_only = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| fsops::naming(dir, e))? {
        let name = entry.map_err(|e| fsops::naming(dir, e))?.file_name();
        let Some((base, suffix)) = name.to_str().and_then(parse_segment_name) else {
            continue;
        };
        if suffix == STORE_SUFFIX {
            bases.push(base);
        } else {
            index_only.push(base);
        }
    }
    bases.sort_unstable();
    bases.dedup();
    for base in index_only
        .into_iter()
        .filter(|b| tidy && bases.binary_search(b).is_err())
    {
        let path = segment_path(dir, base, INDEX_SUFFIX);
        tracing::warn!(path = %path.display(), "removing an index whose store is missing");
        fsops::remove(&path)?;
    }
    Ok(bases)
}

/// Whether the store of segment `base` holds no frame at all: shorter than
/// a frame's length field, or a zero length field (allocated, never written).
fn store_is_empty(dir: &Path, base: u64) -> Result<bool> {
    let path = segment_path(dir, base, STORE_SUFFIX);
    let file = File::open(&path).map_err(|e| fsops::naming(&path, e))?;
    let mut prefix = [0u8; FRAME_PREFIX];
    match file.read_exact_at(&mut prefix, 0) {
        Ok(()) => Ok(frame_body_len(&prefix) == 0),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(fsops::naming(&path, e).into()),
    }
}

fn drop_empty_segment(dir: &Path, base: u64, why: &str) -> Result<()> {
    tracing::warn!(segment = base, reason = why, "removing a segment that holds no record");
    for suffix in [INDEX_SUFFIX, STORE_SUFFIX] {
        let path = segment_path(dir, base, suffix);
        if path.exists() {
            fsops::remove(&path)?;
        }
    }
    Ok(fsops::sync_dir(dir)?)
}

/// Opens `sealed` segments, each holding the offsets up to the next base,
/// then recovers the `last` one.
fn open_in_order(dir: &Path, sealed: &[u64], last: u64, config: &LogConfig) -> Result<Vec<Arc<Segment>>> {
    let mut segments = Vec::with_capacity(sealed.len() + 1);
    for (i, &base) in sealed.iter().enumerate() {
        let next = sealed.get(i + 1).copied().unwrap_or(last);
        let count = next.saturating_sub(base);
        let opened = Segment::open_sealed(dir, base, count, config).map_err(|e| disagreeing(e, dir, base, next))?;
        segments.push(Arc::new(opened));
    }
    let (active, report) = Segment::open_active(dir, last, config)?;
    if report.truncated_bytes > 0 || report.dropped_entries > 0 || report.rebuilt_index {
        tracing::warn!(
            segment = last,
            records = report.records,
            truncated_bytes = report.truncated_bytes,
            dropped_index_entries = report.dropped_entries,
            rebuilt_index = report.rebuilt_index,
            reason = report.reason.as_deref().unwrap_or("-"),
            "recovered the log's tail after an unclean stop"
        );
    }
    segments.push(Arc::new(active));
    Ok(segments)
}

/// A sealed segment that does not hold exactly the offsets up to the next
/// one's base: the error names both files.
fn disagreeing(error: LogError, dir: &Path, base: u64, next: u64) -> LogError {
    match error {
        LogError::Corrupt {
            file,
            position,
            offset,
            reason,
        } => LogError::Corrupt {
            file,
            position,
            offset,
            reason: format!(
                "{reason}; it must hold offsets [{base}, {next}) because {} starts at {next} (a gap or an overlap between segments)",
                segment_path(dir, next, STORE_SUFFIX).display()
            ),
        },
        other => other,
    }
}
