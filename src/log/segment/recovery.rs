//! Crash recovery: deciding, on open, how much of a segment is sound.
//!
//! The active (last) segment is checked from its last good index entry on:
//! zero-filled or wild index entries are dropped, frames the index missed are
//! re-indexed from the store, and the first short, oversized, garbled or
//! out-of-sequence frame ends the log, cut from store and index alike. A batch
//! whose last record is missing is cut whole (see `FLAG_BATCH_CONTINUES`).
//! Sealed segments are only checked at their last entry; the full checksum of
//! every record is verified when it is read.

use super::error::{LogError, Result};
use super::index::Index;
use super::record::{FLAG_BATCH_CONTINUES, FRAME_PREFIX, FrameError, FrameView, Frames, decode_frame, frame_body_len};
use super::store::Store;

/// What recovery found and changed in the active segment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Sound records the segment holds now.
    pub records: u32,
    /// Store bytes cut from the tail.
    pub truncated_bytes: u64,
    /// Index entries dropped because they did not point at their record.
    pub dropped_entries: u32,
    /// The index was missing and was rebuilt from the store.
    pub rebuilt_index: bool,
    /// Why the tail was cut, if it was.
    pub reason: Option<String>,
}

/// Reads frames from `start` on, expecting dense offsets from
/// `first_offset`, until the store ends or a frame is unsound. Returns where
/// the sound frames end and, if it stopped early, why.
fn scan_frames(
    store: &Store,
    start: u64,
    first_offset: u64,
    max_frame_len: usize,
    mut on_frame: impl FnMut(u64, &FrameView) -> Result<()>,
) -> Result<(u64, Option<FrameError>)> {
    const BLOCK: u64 = 1 << 20;
    let size = store.size();
    let (mut pos, mut expected) = (start, first_offset);
    let mut want = BLOCK;
    while pos < size {
        let buf = store.read_at(pos, (size - pos).min(want) as usize)?;
        let at_end = pos + buf.len() as u64 == size;
        let mut frames = Frames::new(&buf, Some(expected), max_frame_len);
        want = BLOCK;
        for frame in frames.by_ref() {
            match frame {
                Ok((at, view)) => {
                    on_frame(pos + at as u64, &view)?;
                    expected += 1;
                }
                // The frame runs past this block: read again from its start, all of it.
                Err((_, FrameError::Short { needed })) if !at_end => want = BLOCK.max(needed as u64),
                Err((at, e)) => return Ok((pos + at as u64, Some(e))),
            }
        }
        pos += frames.position() as u64;
    }
    Ok((pos, None))
}

/// The frame stored at `pos`: its length field is read first and bounded
/// by the store's size before the rest is read.
fn frame_at(store: &Store, pos: u64) -> Option<Vec<u8>> {
    let size = store.size();
    if pos.checked_add(FRAME_PREFIX as u64)? > size {
        return None;
    }
    let prefix = store.read_at(pos, FRAME_PREFIX).ok()?;
    let len = FRAME_PREFIX as u64 + u64::from(frame_body_len(&prefix));
    if pos + len > size {
        return None;
    }
    store.read_at(pos, len as usize).ok()
}

/// Where entry `i`'s frame ends, if the entry points at a sound frame
/// holding offset `base + i`.
fn sound_entry_end(store: &Store, index: &Index, base: u64, i: u32, max_frame_len: usize) -> Option<u64> {
    let (rel, pos) = index.slot(i);
    if rel != i || pos >= store.size() {
        return None;
    }
    let buf = frame_at(store, pos)?;
    let view = decode_frame(&buf, max_frame_len).ok()?;
    (view.offset == base + u64::from(i)).then_some(pos + view.frame_len as u64)
}

fn entry_flags(store: &Store, index: &Index, i: u32, max_frame_len: usize) -> Result<u8> {
    let (_, pos) = index.slot(i);
    let corrupt = |reason: String| LogError::Corrupt {
        file: store.path().to_path_buf(),
        position: pos,
        offset: None,
        reason,
    };
    let buf = frame_at(store, pos).ok_or_else(|| corrupt("frame runs past the store".into()))?;
    decode_frame(&buf, max_frame_len)
        .map(|view| view.flags)
        .map_err(|e| corrupt(e.to_string()))
}

/// How many leading entries of the first `upto` are consistent: each holds
/// its own relative offset and a position past the previous one and inside
/// the store. After a power cut the index's pages may reach the disk out of
/// order, leaving zeroed entries before written ones.
fn consistent_prefix(index: &Index, upto: u32, store_len: u64) -> u32 {
    let mut previous = None;
    for i in 0..upto {
        let (rel, pos) = index.slot(i);
        let ordered = previous.is_none_or(|prev| pos > prev);
        if rel != i || !ordered || pos >= store_len {
            return i;
        }
        previous = Some(pos);
    }
    upto
}

/// The first slot that was never written, assuming slots are written in
/// order (slot 0 is all zeros when written, every later one is not).
fn first_unwritten_slot(index: &Index) -> u32 {
    let (mut lo, mut hi) = (1u32, index.capacity());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if index.slot(mid) == (0, 0) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo.min(index.capacity())
}

/// A sealed segment's index is trusted when its last entry points at the
/// last frame and that frame ends the store's data. A store cut short of
/// its allocated length by an unclean stop while it was being sealed ends
/// in zeros; those are cut here.
pub(super) fn sealed_index_checks_out(
    store: &Store,
    index: &Index,
    base: u64,
    count: u32,
    max_frame_len: usize,
) -> Result<bool> {
    let end = match count {
        0 => Some(0),
        _ => sound_entry_end(store, index, base, count - 1, max_frame_len),
    };
    match end {
        Some(end) if end == store.size() => Ok(true),
        Some(end) if zeros_follow(store, end) => {
            store.cut_to(end)?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Whether the store holds nothing but zeros from `end` on (checked on the
/// first frame prefix: a zero length is no frame).
fn zeros_follow(store: &Store, end: u64) -> bool {
    let probe = (store.size() - end).min(FRAME_PREFIX as u64 * 64) as usize;
    probe > 0
        && store
            .read_at(end, probe)
            .is_ok_and(|bytes| bytes.iter().all(|b| *b == 0))
}

/// Rebuilds a sealed segment's index from its store, which must hold exactly
/// `count` sound records and nothing else.
pub(super) fn rebuild_sealed(store: &Store, index: &Index, base: u64, count: u32, max_frame_len: usize) -> Result<()> {
    tracing::warn!(index = %index.path().display(), "index of a sealed segment does not match its store; rebuilding it");
    index.set_len(0);
    let (end, stopped) = scan_frames(store, 0, base, max_frame_len, |pos, _| Ok(index.push(pos)?))?;
    let found = index.len();
    if found == count && end < store.size() && zeros_follow(store, end) {
        store.cut_to(end)?;
        return Ok(());
    }
    if stopped.is_some() || found != count || end != store.size() {
        let reason = match stopped {
            Some(e) => e.to_string(),
            None => format!("holds {found} records where {count} were expected"),
        };
        return Err(LogError::Corrupt {
            file: store.path().to_path_buf(),
            position: end,
            offset: Some(base + u64::from(found)),
            reason,
        });
    }
    Ok(())
}

/// Checks and repairs the active segment's tail (see the module doc).
pub(super) fn recover_tail(
    store: &Store,
    index: &Index,
    base: u64,
    max_frame_len: usize,
    index_existed: bool,
) -> Result<Recovered> {
    let store_len = store.size();
    let mut report = Recovered {
        rebuilt_index: !index_existed && store_len > 0,
        ..Recovered::default()
    };
    let guess = if index_existed && store_len > 0 {
        first_unwritten_slot(index)
    } else {
        0
    };

    let mut good = consistent_prefix(index, guess, store_len);
    let mut resume = None;
    while good > 0 {
        if let Some(end) = sound_entry_end(store, index, base, good - 1, max_frame_len) {
            resume = Some(end);
            break;
        }
        good -= 1;
    }
    report.dropped_entries = guess - good;
    index.set_len(good);

    let start = resume.unwrap_or(0);
    let (end, stopped) = scan_frames(store, start, base + u64::from(good), max_frame_len, |pos, _| {
        Ok(index.push(pos)?)
    })?;
    report.reason = stopped.map(|e| e.to_string());

    let mut end = end;
    let mut records = index.len();
    if records > 0 && entry_flags(store, index, records - 1, max_frame_len)? & FLAG_BATCH_CONTINUES != 0 {
        let mut first = records - 1;
        while first > 0 && entry_flags(store, index, first - 1, max_frame_len)? & FLAG_BATCH_CONTINUES != 0 {
            first -= 1;
        }
        end = index.slot(first).1;
        report.reason = Some(format!(
            "batch starting at offset {} never finished",
            base + u64::from(first)
        ));
        records = first;
    }

    let written = guess.max(index.len());
    index.cut_to(records);
    index.clear_slots(records, written);
    // Zeros after the data are the store's allocated room, not a torn write.
    report.truncated_bytes = if end < store_len && zeros_follow(store, end) {
        0
    } else {
        store_len - end
    };
    if end < store_len {
        store.cut_to(end)?;
        store.sync()?;
    }
    debug_assert!(
        records == 0 || sound_entry_end(store, index, base, records - 1, max_frame_len) == Some(store.size())
    );
    report.records = records;
    Ok(report)
}
