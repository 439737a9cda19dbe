//! Opening a data directory: its lock, and its segments in base order.

use std::fs::{self, File};
use std::path::Path;
use std::sync::Arc;

use super::super::config::LogConfig;
use super::super::error::{LogError, Result};
use super::super::segment::{INDEX_SUFFIX, STORE_SUFFIX, Segment, parse_segment_name, segment_path};

pub(super) fn lock_directory(dir: &Path) -> Result<File> {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(LogError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Opens the segments found in `dir`: sealed ones are trusted but for their
/// last entry, the last one is recovered. An empty directory gets segment 0.
pub(super) fn open_segments(dir: &Path, config: &LogConfig) -> Result<Vec<Arc<Segment>>> {
    let mut bases = Vec::new();
    let mut index_only = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
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
    for base in index_only.into_iter().filter(|b| bases.binary_search(b).is_err()) {
        let path = segment_path(dir, base, INDEX_SUFFIX);
        tracing::warn!(path = %path.display(), "removing an index whose store is missing");
        fs::remove_file(path)?;
    }
    if bases.is_empty() {
        return Ok(vec![Arc::new(Segment::create(dir, 0, config)?)]);
    }
    let mut segments = Vec::with_capacity(bases.len());
    for pair in bases.windows(2) {
        segments.push(Arc::new(Segment::open_sealed(dir, pair[0], pair[1] - pair[0], config)?));
    }
    let last = bases[bases.len() - 1];
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
