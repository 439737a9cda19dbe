//! A loom model of how the storage engine's readers, its writer and a cut of
//! the tail synchronise (issue 9, point 3), proving the new protocol race-free
//! and showing that today's one is not.
//!
//! The model is the engine in miniature, one frame per store cell:
//!
//! - Index: slots of three `AtomicU32` words (relative offset, position low,
//!   position high) written `Release` and read `Acquire` (a reader that
//!   sees a slot a cut zeroed must also see the cut counted, to read
//!   again; with `Relaxed` words loom finds the reader that does not); `len` published with
//!   `Release` after the slot, loaded with `Acquire`. Readers read slots
//!   below the `len` they loaded, plus slot `i + 1` for the end of record `i`.
//! - Store: frames in `loom::cell::UnsafeCell`s, so that loom reports any
//!   unsynchronised access to a frame as a causality violation; `size`
//!   published with `Release` after the frame is written. Appends write past
//!   `size` without a lock; a cut (lowering `size`, zeroing what it drops)
//!   and the in-place rewrite of the last kept frame take the write side of
//!   the `view` lock, readers its read side while they check and copy.
//! - Log: `visible`, lowered with `fetch_min` before a cut and raised with
//!   `fetch_max` after an append; readers check it first.
//!
//! A frame's checksum covers its offset, flags and value, so a reader that
//! copies a zeroed, stale or half-rewritten frame sees a mismatch.
//!
//! The scenario: record 0 is stored; the writer appends the batch [1, 2, 3],
//! cuts it after record 1 (`cut_after(1)`: record 1 loses its
//! batch-continues flag in place, slot 3 is zeroed), and appends a new
//! record 2. A read that goes wrong while the cut is counted is read again,
//! as `Bounds::across_cuts` does. One reader
//! reads record 1, which survives the cut: it must get record 1 once it is
//! visible, nothing else. The other reads record 2, which is cut and written
//! again: it may get either version or "out of range", never a mismatch.
//!
//! What the model takes as given of the engine: a reader that finds its
//! offset at or past the `len` it loaded, or its frame's bytes at or past
//! the `size` it loaded under the lock, reports "out of range" (the record
//! was cut under it). Today `Segment::frame_span` reports the first as
//! `Corrupt` ("record missing from the index") and `Store::read_at` the
//! second as an I/O error.

use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::time::Instant;

use loom::cell::UnsafeCell;
use loom::model::Builder;
use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use loom::sync::{Arc, Mutex, RwLock};
use loom::thread;

use crate::fixtures::FLAG_BATCH_CONTINUES;

/// Index slots and store cells in the model: records 0..=3 and no more.
const CAPACITY: usize = 4;
/// Every frame takes one store cell: a frame's end is its position plus this.
const FRAME_CELLS: u64 = 1;

/// Value of the record first written at an offset, and of its rewrite after the cut.
const FIRST_VALUE: u8 = 10;
const REWRITTEN_VALUE: u8 = 20;

/// How the writer synchronises with readers: the protocol under test, or
/// one of today's two faults.
#[derive(Clone, Copy, Debug)]
struct Protocol {
    /// The base's `Index::truncate` zeroed every slot it dropped, from the
    /// cut point's own on, while readers that loaded the old `len` may still
    /// read them. The new cut zeroes only the slots past the cut point's
    /// (slot `keep` ends the last kept record's frame).
    zero_dropped_slots: bool,
    /// Today `end_batch_at_tail` rewrites the last kept frame without the
    /// `view` lock, while readers copy or check it.
    rewrite_under_view_lock: bool,
    /// The base's readers reported whatever a read met; the new ones read
    /// again once a cut that went on meanwhile is over.
    readers_retry: bool,
}

const NEW_PROTOCOL: Protocol = Protocol {
    zero_dropped_slots: false,
    rewrite_under_view_lock: true,
    readers_retry: true,
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Frame {
    crc: u32,
    flags: u8,
    offset: u64,
    value: u8,
}

/// Stands in for CRC32: any change to offset, flags or value changes it, and
/// an all-zero cell (a cut frame) does not check out.
fn checksum(offset: u64, flags: u8, value: u8) -> u32 {
    (offset as u32).wrapping_mul(0x9E37_79B1) ^ (u32::from(flags) << 8) ^ (u32::from(value) << 16) ^ 0xA5A5_A5A5
}

impl Frame {
    fn new(offset: u64, flags: u8, value: u8) -> Frame {
        Frame {
            crc: checksum(offset, flags, value),
            flags,
            offset,
            value,
        }
    }

    fn checks_out(&self) -> bool {
        self.crc == checksum(self.offset, self.flags, self.value)
    }
}

/// What a read of one offset gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Read {
    Record(u8),
    /// The offset was not below `visible`: never written yet, or cut.
    NotVisible,
    /// Visible when the read began, cut while it went on.
    CutUnderTheReader,
    Corrupt(&'static str),
}

struct Slot {
    rel: AtomicU32,
    pos_low: AtomicU32,
    pos_high: AtomicU32,
}

struct Index {
    slots: [Slot; CAPACITY],
    len: AtomicU32,
}

impl Index {
    fn new() -> Index {
        let slot = || Slot {
            rel: AtomicU32::new(0),
            pos_low: AtomicU32::new(0),
            pos_high: AtomicU32::new(0),
        };
        Index {
            slots: std::array::from_fn(|_| slot()),
            len: AtomicU32::new(0),
        }
    }

    fn write_slot(&self, i: u32, rel: u32, pos: u64) {
        let slot = &self.slots[i as usize];
        slot.rel.store(rel, Ordering::Release);
        slot.pos_low.store(pos as u32, Ordering::Release);
        slot.pos_high.store((pos >> 32) as u32, Ordering::Release);
    }

    /// Reads all three words, as `Index::slot` does, and returns the position.
    fn position(&self, i: u32) -> u64 {
        let slot = &self.slots[i as usize];
        let _rel = slot.rel.load(Ordering::Acquire);
        let low = slot.pos_low.load(Ordering::Acquire);
        let high = slot.pos_high.load(Ordering::Acquire);
        u64::from(high) << 32 | u64::from(low)
    }

    /// Only the writer calls this, so its own `len` needs no ordering.
    fn push(&self, pos: u64) {
        let i = self.len.load(Ordering::Relaxed);
        self.write_slot(i, i, pos);
        self.len.store(i + 1, Ordering::Release);
    }

    fn cut(&self, keep: u32, protocol: Protocol) {
        let written = self.len.load(Ordering::Relaxed);
        self.len.store(keep, Ordering::Release);
        let zero_from = if protocol.zero_dropped_slots { keep } else { keep + 1 };
        for i in zero_from..written {
            self.write_slot(i, 0, 0);
        }
    }
}

struct Store {
    cells: [UnsafeCell<Frame>; CAPACITY],
    size: AtomicU64,
    view: RwLock<()>,
}

impl Store {
    fn new() -> Store {
        let cell = || UnsafeCell::new(Frame::default());
        Store {
            cells: std::array::from_fn(|_| cell()),
            size: AtomicU64::new(0),
            view: RwLock::new(()),
        }
    }

    /// Writes past `size` without the lock: no reader reads there.
    fn append(&self, frame: Frame) -> u64 {
        let pos = self.size.load(Ordering::Relaxed);
        self.cells[pos as usize].with_mut(|cell| unsafe { *cell = frame });
        self.size.store(pos + FRAME_CELLS, Ordering::Release);
        pos
    }

    /// Shrinks to `size`, zeroing what is dropped, as `Store::truncate` does
    /// for the append map; the caller holds the write side of `view`.
    fn shrink_locked(&self, size: u64) {
        let old = self.size.load(Ordering::Relaxed);
        self.size.store(size, Ordering::Release);
        for pos in size..old {
            self.cells[pos as usize].with_mut(|cell| unsafe { *cell = Frame::default() });
        }
    }

    /// `end_batch_at_tail`: the last frame kept says its batch ends.
    fn end_batch_at(&self, pos: u64) {
        let cell = &self.cells[pos as usize];
        let frame = cell.with(|cell| unsafe { *cell });
        if frame.flags & FLAG_BATCH_CONTINUES != 0 {
            let ended = Frame::new(frame.offset, frame.flags & !FLAG_BATCH_CONTINUES, frame.value);
            cell.with_mut(|cell| unsafe { *cell = ended });
        }
    }

    /// Copies the frame at `pos..end` under the read side of `view`, and
    /// checks it holds `offset`.
    fn read_frame(&self, pos: u64, end: u64, offset: u64) -> Read {
        let _view = self.view.read().unwrap();
        if end > self.size.load(Ordering::Acquire) {
            return Read::CutUnderTheReader;
        }
        let frame = self.cells[pos as usize].with(|cell| unsafe { *cell });
        if !frame.checks_out() {
            return Read::Corrupt("checksum mismatch");
        }
        if frame.offset != offset {
            return Read::Corrupt("frame holds another offset");
        }
        Read::Record(frame.value)
    }
}

struct Log {
    index: Index,
    store: Store,
    visible: AtomicU64,
    /// Odd while a cut is under way: bumped before it changes anything and
    /// after it is done (`Bounds::begin_cut`).
    cuts: AtomicU64,
    /// The writer lock, as held by a cut: a reader that read while a cut
    /// went on takes it to wait for the cut's end.
    writer: Mutex<()>,
    protocol: Protocol,
}

impl Log {
    fn new(protocol: Protocol) -> Log {
        Log {
            index: Index::new(),
            store: Store::new(),
            visible: AtomicU64::new(0),
            cuts: AtomicU64::new(0),
            writer: Mutex::new(()),
            protocol,
        }
    }

    /// Writes the records of a batch (frames, then index), then shows them.
    /// (The engine's appends hold the writer lock too; the model's one
    /// writer thread needs no lock against itself, and readers take it only
    /// to wait out a cut, so it is left out here to keep the model small.)
    fn append_batch(&self, first: u64, values: &[u8]) {
        for (i, value) in values.iter().enumerate() {
            let continues = if i + 1 < values.len() { FLAG_BATCH_CONTINUES } else { 0 };
            let pos = self.store.append(Frame::new(first + i as u64, continues, *value));
            self.index.push(pos);
        }
        self.visible.fetch_max(first + values.len() as u64, Ordering::AcqRel);
    }

    /// `Log::cut_after(offset)` in one segment, in the engine's order:
    /// count the cut, hide, end the batch at the record that will be the
    /// tail (in place), cut the index (zeroing slots past the cut point's),
    /// then the store.
    fn truncate_after(&self, offset: u64) {
        let keep = offset + 1;
        let _writer = self.writer.lock().unwrap();
        self.cuts.fetch_add(1, Ordering::AcqRel);
        self.visible.fetch_min(keep, Ordering::AcqRel);
        let cut_at = self.index.position(keep as u32);
        let last_kept = self.index.position(offset as u32);
        if self.protocol.rewrite_under_view_lock {
            let _view = self.store.view.write().unwrap();
            self.store.end_batch_at(last_kept);
        } else {
            self.store.end_batch_at(last_kept);
        }
        self.index.cut(keep as u32, self.protocol);
        {
            let _view = self.store.view.write().unwrap();
            self.store.shrink_locked(cut_at);
        }
        self.cuts.fetch_add(1, Ordering::AcqRel);
    }

    /// `Log::read`: a read that went wrong while a cut was under way (or
    /// one began) waits for the cut to end and reads again
    /// (`Bounds::across_cuts`); one cut in the scenario, so two tries.
    fn read(&self, offset: u64) -> Read {
        let mut read = Read::NotVisible;
        let tries = if self.protocol.readers_retry { 2 } else { 1 };
        for _ in 0..tries {
            let before = self.cuts.load(Ordering::Acquire);
            read = self.read_once(offset);
            let untouched = before.is_multiple_of(2) && self.cuts.load(Ordering::Acquire) == before;
            if !matches!(read, Read::Corrupt(_)) || untouched {
                return read;
            }
            drop(self.writer.lock().unwrap());
        }
        read
    }

    /// `Segment::frame_span` and the read it leads to.
    fn read_once(&self, offset: u64) -> Read {
        if offset >= self.visible.load(Ordering::Acquire) {
            return Read::NotVisible;
        }
        let published = u64::from(self.index.len.load(Ordering::Acquire));
        if offset >= published {
            return Read::CutUnderTheReader;
        }
        let pos = self.index.position(offset as u32);
        let end = if offset + 1 < published {
            self.index.position(offset as u32 + 1)
        } else {
            pos + FRAME_CELLS
        };
        if end <= pos || end - pos != FRAME_CELLS {
            return Read::Corrupt("impossible frame end");
        }
        self.store.read_frame(pos, end, offset)
    }
}

/// A reader of one offset and what it must see there.
#[derive(Clone, Copy, Debug)]
enum Reader {
    /// Record 1 survives the cut: once visible it must read as itself.
    Survivor,
    /// Record 2 is cut and written again: either version, or gone, but sound.
    CutRecord,
}

impl Reader {
    fn offset(self) -> u64 {
        match self {
            Reader::Survivor => 1,
            Reader::CutRecord => 2,
        }
    }

    fn assert_sound(self, read: Read) {
        match self {
            Reader::Survivor => assert!(
                matches!(read, Read::Record(FIRST_VALUE) | Read::NotVisible),
                "record 1 survives every cut, yet read as {read:?}"
            ),
            Reader::CutRecord => assert!(
                !matches!(read, Read::Corrupt(_)),
                "record 2 (cut, then written again) read as {read:?}"
            ),
        }
    }
}

/// One execution: the writer appends, cuts inside the batch and appends
/// again while `reader` reads its offset. One reader per model: readers
/// share nothing but the read side of `view`, so a second one would only
/// multiply the executions.
fn cut_inside_a_batch_while_reading(protocol: Protocol, reader: Reader) {
    let log = Arc::new(Log::new(protocol));
    log.append_batch(0, &[FIRST_VALUE]);
    let reading = {
        let log = log.clone();
        thread::spawn(move || reader.assert_sound(log.read(reader.offset())))
    };
    log.append_batch(1, &[FIRST_VALUE, FIRST_VALUE, FIRST_VALUE]);
    log.truncate_after(1);
    log.append_batch(2, &[REWRITTEN_VALUE]);
    reading.join().unwrap();
}

/// Explores the model and says how many executions it took. Every
/// interleaving (no preemption bound) takes several minutes in a debug
/// build (375,608 executions for the survivor), too long for every test
/// run: by default the run is bounded to `DEFAULT_PREEMPTIONS` preemptions,
/// and `scripts/loom.sh` (`LOOM_EXHAUSTIVE=1`) explores all of them.
/// `LOOM_MAX_PREEMPTIONS` still sets a bound of one's own.
fn check(protocol: Protocol, reader: Reader) {
    const DEFAULT_PREEMPTIONS: usize = 3;
    let mut builder = Builder::new();
    if builder.preemption_bound.is_none() && std::env::var_os("LOOM_EXHAUSTIVE").is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    let executions = std::sync::Arc::new(StdAtomicUsize::new(0));
    let counted = executions.clone();
    let started = Instant::now();
    builder.check(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        cut_inside_a_batch_while_reading(protocol, reader);
    });
    eprintln!(
        "{protocol:?}, {reader:?}: {} executions in {:?}",
        executions.load(std::sync::atomic::Ordering::Relaxed),
        started.elapsed()
    );
}

#[test]
fn new_protocol_never_shows_a_surviving_record_as_corrupt() {
    check(NEW_PROTOCOL, Reader::Survivor);
}

#[test]
fn new_protocol_never_shows_a_record_being_cut_as_corrupt() {
    check(NEW_PROTOCOL, Reader::CutRecord);
}

/// Today's index cut: a reader that loaded the old `len` takes the zeroed
/// slot after its record for that record's end.
#[test]
#[should_panic(expected = "record 1 survives every cut, yet read as Corrupt(\"impossible frame end\")")]
fn zeroing_dropped_slots_shows_the_last_kept_record_as_corrupt() {
    let today = Protocol {
        zero_dropped_slots: true,
        readers_retry: false,
        ..NEW_PROTOCOL
    };
    check(today, Reader::Survivor);
}

/// Today's rewrite of the last kept frame: it races with readers copying
/// that frame under the read lock.
#[test]
#[should_panic(expected = "Causality violation")]
fn rewriting_the_tail_outside_the_lock_races_with_readers() {
    let today = Protocol {
        rewrite_under_view_lock: false,
        readers_retry: false,
        ..NEW_PROTOCOL
    };
    check(today, Reader::Survivor);
}
