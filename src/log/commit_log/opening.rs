//! Opening a data directory: its lock, a check that a segment fits on the
//! disk, and its segments in base order.
//!
//! An open that fails removes what it created, and never anything that was
//! there before or that another open wrote. Inside the directory (a new
//! log's segment files, the `LOCK` file) it removes them while it still
//! holds the lock (`DirLock::remove_created`): once it let go, another open
//! may have taken the directory, and what is there is that open's. It
//! unlinks `LOCK` while holding it, so an open that opened the file just
//! before and locks it just after holds a lock on a file nobody will find:
//! `lock_directory` checks that the path still names the file it locked,
//! and tries again if not. The directories it created are removed last,
//! and only if empty (`CreatedDirs`).
//!
//! The free-space check refuses a new log whose first segment would not fit
//! in the free space, and a segment larger than the filesystem; an existing
//! log on a filling disk only gets a warning, so that it can still be read
//! and its retention can free space (`room_for_segment`).

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::config::LogConfig;
use super::super::error::{LogError, Result};
use super::super::fsops::{self, Space};
use super::super::record::{FRAME_PREFIX, frame_body_len};
use super::super::segment::{INDEX_SUFFIX, STORE_SUFFIX, Segment, parse_segment_name, segment_path};

const LOCK_FILE: &str = "LOCK";
/// Times `lock_directory` looks again after the lock file it locked was
/// unlinked meanwhile (each time by a failed open that created it).
const LOCK_ATTEMPTS: usize = 16;

/// The data directory's lock, held while this open runs.
pub(super) struct DirLock {
    pub(super) file: File,
    path: PathBuf,
    /// This open created the lock file.
    created_file: bool,
    /// The directory held no segment when it was locked: every segment
    /// file found there while the lock is still held is this open's.
    pub(super) fresh_log: bool,
}

/// Takes the lock of the data directory `dir`, creating its `LOCK` file if
/// missing. Fails with `Locked` if another open holds it.
pub(super) fn lock_directory(dir: &Path) -> Result<DirLock> {
    let path = dir.join(LOCK_FILE);
    for _ in 0..LOCK_ATTEMPTS {
        let (file, created_file) = fsops::open_lock_file(&path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(LogError::Locked(dir.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => return Err(fsops::naming(&path, e).into()),
        }
        // A failed open unlinked the file between our open and our lock
        // (see the module doc): that lock guards nothing.
        if fsops::still_names(&path, &file)? {
            let fresh_log = segment_names(dir)?.is_empty();
            return Ok(DirLock {
                file,
                path,
                created_file,
                fresh_log,
            });
        }
    }
    let replaced = std::io::Error::other(format!("replaced while being locked, {LOCK_ATTEMPTS} times"));
    Err(fsops::naming(&path, replaced).into())
}

impl DirLock {
    /// Removes what a failed open created inside the directory: a new log's
    /// segment files and the lock file. Called while the lock is still held
    /// (see the module doc). Best effort: the open's own error is what the
    /// caller reports.
    pub(super) fn remove_created(&self, dir: &Path) {
        if self.fresh_log {
            for name in segment_names(dir).unwrap_or_default() {
                let _ = fsops::remove(&dir.join(name));
            }
        }
        if self.created_file {
            let _ = fsops::remove(&self.path);
        }
        let _ = fsops::sync_dir(dir);
    }
}

/// The directories an open is about to create, so that a failed one can
/// remove them again.
pub(super) struct CreatedDirs {
    /// Directories that did not exist, the data directory first.
    dirs: Vec<PathBuf>,
}

impl CreatedDirs {
    /// Notes which of `dir` and its parents are missing, before the open
    /// creates them.
    pub(super) fn before_creating(dir: &Path) -> CreatedDirs {
        let dirs = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        CreatedDirs { dirs }
    }

    /// Removes the directories the failed open created, if they are empty:
    /// anything another open put there meanwhile stays. Best effort.
    pub(super) fn remove(self, dir: &Path) {
        if self.dirs.is_empty() {
            return;
        }
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

/// What the disk makes of a segment size (see `room_for_segment`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Room {
    Fits,
    /// An existing log whose active segment may not reach its full size:
    /// opened, with this warning.
    Tight(String),
    /// Refused: what `max_segment_bytes` must be instead.
    Refused(String),
}

/// The startup rule for `max_segment_bytes`, given the filesystem's
/// `space`, the bytes the newest segment already `held` on it, and whether
/// the directory holds a log. A full segment and its index (`needed`) must
/// fit in:
/// - for a new log, the free space; nothing can be read or freed yet, so a
///   size the disk cannot hold is refused before any file is created;
/// - for an existing log, the filesystem, or no segment could ever reach
///   its size. On a filling disk it is opened with a warning, so that it is
///   still read and its retention can free space; appends that find the
///   disk full fail with `disk_full` until there is room.
pub(super) fn room_for_segment(space: Space, held: u64, existing_log: bool, config: &LogConfig) -> Room {
    let index_bytes = config.index_file_bytes();
    let needed = config.max_segment_bytes.saturating_add(index_bytes);
    let free_for_newest = space.available.saturating_add(held);
    if needed <= free_for_newest {
        return Room::Fits;
    }
    if !existing_log {
        return Room::Refused(format!(
            "at most {} (a new log's first segment and its index must fit in the {} bytes free; \
             this size takes {needed} bytes, {index_bytes} of them for the index)",
            largest_segment_within(space.available, config),
            space.available,
        ));
    }
    if needed > space.total {
        return Room::Refused(format!(
            "at most {} (a segment and its index must fit in the filesystem, {} bytes in all, {} free; \
             this size takes {needed} bytes, {index_bytes} of them for the index)",
            largest_segment_within(space.total, config),
            space.total,
            space.available,
        ));
    }
    Room::Tight(format!(
        "a full segment and its index take {needed} bytes, and only {} bytes are free (the newest \
         segment holds {held} more): appends fail with a full disk before it rolls unless space is \
         freed; segments of at most {} bytes would fit",
        space.available,
        largest_segment_within(free_for_newest, config),
    ))
}

/// The largest segment size whose segment and index take at most `room`
/// bytes (the index shrinks with the segment); 0 if none does.
fn largest_segment_within(room: u64, config: &LogConfig) -> u64 {
    let takes = |segment: u64| {
        let sized = LogConfig {
            max_segment_bytes: segment,
            ..config.clone()
        };
        segment.saturating_add(sized.index_file_bytes())
    };
    // What a segment and its index take grows with the segment size.
    let (mut lo, mut hi) = (0u64, room);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if takes(mid) <= room {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// Applies `room_for_segment` to `dir`: refuses with a `Config` error
/// naming `max_segment_bytes`, or warns. Files are allocated as they fill,
/// so this is what keeps a huge setting from failing only once the disk is
/// full.
pub(super) fn check_room(dir: &Path, config: &LogConfig, existing_log: bool) -> Result<()> {
    let space = fsops::space(dir)?;
    let held = newest_segment_bytes(dir)?;
    match room_for_segment(space, held, existing_log, config) {
        Room::Fits => Ok(()),
        Room::Tight(warning) => {
            tracing::warn!(dir = %dir.display(), max_segment_bytes = config.max_segment_bytes, "{warning}");
            Ok(())
        }
        Room::Refused(allowed) => Err(LogError::Config {
            key: "max_segment_bytes",
            allowed: format!("{allowed}; data directory {}", dir.display()),
            value: config.max_segment_bytes.to_string(),
        }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::config::MIB;

    const GIB: u64 = 1024 * MIB;

    fn segment(bytes: u64) -> LogConfig {
        LogConfig {
            max_segment_bytes: bytes,
            ..LogConfig::default()
        }
    }

    fn space(available: u64, total: u64) -> Space {
        Space { available, total }
    }

    #[test]
    fn a_new_log_must_fit_its_first_segment_in_the_free_space() {
        let config = segment(256 * MIB);
        let needed = 256 * MIB + config.index_file_bytes();
        assert_eq!(
            room_for_segment(space(needed, 100 * GIB), 0, false, &config),
            Room::Fits
        );
        let Room::Refused(why) = room_for_segment(space(needed - 1, 100 * GIB), 0, false, &config) else {
            panic!("a new log that cannot fill its first segment is refused");
        };
        assert!(why.contains(&format!("{} bytes free", needed - 1)), "{why}");
    }

    #[test]
    fn an_existing_log_on_a_filling_disk_opens_with_a_warning() {
        let config = segment(256 * MIB);
        // The newest segment already holds 200 MiB: it needs less than a segment more.
        assert_eq!(
            room_for_segment(space(100 * MIB, 100 * GIB), 200 * MIB, true, &config),
            Room::Fits
        );
        let Room::Tight(warning) = room_for_segment(space(MIB, 100 * GIB), 0, true, &config) else {
            panic!("an existing log on a full disk still opens: it can be read, and retention can free space");
        };
        assert!(warning.contains(&format!("only {MIB} bytes are free")), "{warning}");
    }

    #[test]
    fn a_segment_larger_than_the_filesystem_is_refused_even_for_an_existing_log() {
        let config = segment(1 << 40);
        let Room::Refused(why) = room_for_segment(space(10 * GIB, 100 * GIB), 0, true, &config) else {
            panic!("no segment of this size could ever fill");
        };
        assert!(why.contains(&format!("{} bytes in all", 100 * GIB)), "{why}");
    }

    #[test]
    fn the_suggested_size_counts_the_index_that_shrinks_with_the_segment() {
        let config = segment(1 << 40);
        for room in [100, 4096, 27 * 12 * 1000, 20 * MIB, 100 * GIB] {
            let largest = largest_segment_within(room, &config);
            let takes = |bytes| bytes + segment(bytes).index_file_bytes();
            assert!(takes(largest) <= room, "{largest} in {room}");
            assert!(takes(largest + 1) > room, "{largest} is the largest in {room}");
        }
        // Not free space less the index of the refused size (12 MiB here).
        assert!(largest_segment_within(20 * MIB, &config) > 20 * MIB - config.index_file_bytes());
    }
}
