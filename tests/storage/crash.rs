//! Crash recovery through the public API.
//!
//! A "crash image" is a copy of the segment files of a log that is still open
//! (after `sync`), so the active index in it is at its full mapped size with
//! a zero tail (sealed ones are cut to their entries), exactly what `kill -9`
//! leaves behind. Each test damages such an
//! image the way a torn write, a lost page or a garbled sector would, reopens
//! it, and checks that the log keeps every record before the damage, ends at
//! the first damaged offset, takes new appends there, and still agrees after
//! a clean reopen and after a second crash.

use std::collections::BTreeMap;
use std::fs;

use distlog::log::{Durability, Log, LogConfig, LogError, Payload};
use tempfile::TempDir;

use crate::fixtures::{FLAG_BATCH_CONTINUES, FRAME_HEADER as HEADER, INDEX_ENTRY, index_name, store_name};

/// Index entries are sliced out of byte images here.
const ENTRY: usize = INDEX_ENTRY as usize;
const INDEX_SLOTS: usize = 64;

fn config() -> LogConfig {
    LogConfig {
        max_segment_bytes: 4096,
        max_index_bytes: (ENTRY * INDEX_SLOTS) as u64,
        max_record_bytes: 1024,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

/// A distinct value per offset, 3 to ~95 bytes, so that segments roll on
/// bytes as well as on index entries.
fn value(i: u64) -> Vec<u8> {
    let mut v = format!("r{i}:").into_bytes();
    v.extend((0..(i * 13 % 90)).map(|k| (i as u8).wrapping_mul(31).wrapping_add(k as u8)));
    v
}

// ----- the log being crashed ------------------------------------------------

/// An open log and the values it was given, `values[o]` being offset `o`.
struct Source {
    _dir: TempDir,
    log: Log,
    values: Vec<Vec<u8>>,
}

impl Source {
    fn new() -> Source {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        Source {
            _dir: dir,
            log,
            values: Vec::new(),
        }
    }

    /// A log of `n` single records.
    fn with_records(n: u64) -> Source {
        let mut source = Source::new();
        for _ in 0..n {
            source.append(value(source.next()));
        }
        source
    }

    fn next(&self) -> u64 {
        self.values.len() as u64
    }

    fn append(&mut self, v: Vec<u8>) {
        assert_eq!(self.log.append(&v).unwrap(), self.next());
        self.values.push(v);
    }

    /// Appends a batch of `n` records and returns its first offset.
    fn append_batch(&mut self, n: u64) -> u64 {
        let first = self.next();
        let values: Vec<Vec<u8>> = (first..first + n).map(value).collect();
        let payloads: Vec<Payload> = values.iter().map(|v| Payload::new(v)).collect();
        assert_eq!(self.log.append_batch(&payloads).unwrap(), first);
        self.values.extend(values);
        first
    }

    fn image(&self) -> Image {
        let image = Image::capture(&self.log);
        assert!(
            image.bases().len() >= 3,
            "the log must have sealed segments: {:?}",
            image.bases()
        );
        image
    }
}

// ----- crash images ------------------------------------------------------------

/// The segment files of an open log, by file name.
#[derive(Clone)]
struct Image {
    files: BTreeMap<String, Vec<u8>>,
}

/// One frame found in a store file.
#[derive(Clone, Copy, Debug)]
struct Frame {
    offset: u64,
    start: usize,
    end: usize,
    flags: u8,
}

impl Image {
    fn capture(log: &Log) -> Image {
        log.sync().unwrap();
        let mut files = BTreeMap::new();
        for entry in fs::read_dir(log.dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name.ends_with(".store") || name.ends_with(".index") {
                files.insert(name, fs::read(&path).unwrap());
            }
        }
        let image = Image { files };
        let bases = image.bases();
        for (i, base) in bases.iter().enumerate() {
            let index = &image.files[&index_name(*base)];
            match bases.get(i + 1) {
                Some(next) => assert_eq!(
                    index.len(),
                    ENTRY * (next - base) as usize,
                    "a sealed index is cut to its entries"
                ),
                None => assert_eq!(
                    index.len(),
                    ENTRY * INDEX_SLOTS,
                    "an open log's active index is at its mapped size"
                ),
            }
        }
        image
    }

    /// Segment bases, oldest first.
    fn bases(&self) -> Vec<u64> {
        let mut bases: Vec<u64> = self
            .files
            .keys()
            .filter_map(|name| name.strip_suffix(".store"))
            .map(|stem| stem.parse().unwrap())
            .collect();
        bases.sort_unstable();
        bases
    }

    fn active_base(&self) -> u64 {
        *self.bases().last().unwrap()
    }

    fn store(&mut self, base: u64) -> &mut Vec<u8> {
        self.files.get_mut(&store_name(base)).unwrap()
    }

    fn index(&mut self, base: u64) -> &mut Vec<u8> {
        self.files.get_mut(&index_name(base)).unwrap()
    }

    fn active_store(&mut self) -> &mut Vec<u8> {
        self.store(self.active_base())
    }

    fn active_index(&mut self) -> &mut Vec<u8> {
        self.index(self.active_base())
    }

    /// The frames of segment `base`'s store, walked by their length fields.
    fn frames(&self, base: u64) -> Vec<Frame> {
        let store = &self.files[&store_name(base)];
        let mut frames = Vec::new();
        let mut at = 0;
        while at < store.len() {
            let len = u32::from_le_bytes(store[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                // The active store's allocated room past its data.
                assert!(store[at..].iter().all(|b| *b == 0), "only zeros follow the data");
                break;
            }
            let offset = u64::from_le_bytes(store[at + 11..at + 19].try_into().unwrap());
            assert_eq!(offset, base + frames.len() as u64, "frames hold dense offsets");
            let end = at + 8 + len;
            frames.push(Frame {
                offset,
                start: at,
                end,
                flags: store[at + 9],
            });
            at = end;
        }
        assert!(
            at == store.len() || store[at..].iter().all(|b| *b == 0),
            "the store holds whole frames"
        );
        frames
    }

    fn active_frames(&self) -> Vec<Frame> {
        self.frames(self.active_base())
    }

    /// Number of non-zero entries at the start of an index: the real ones
    /// (entry 0 is all zeros when written, and counted).
    fn written_entries(index: &[u8]) -> usize {
        let slots = index.len() / ENTRY;
        (1..slots)
            .find(|&i| index[i * ENTRY..(i + 1) * ENTRY].iter().all(|&b| b == 0))
            .unwrap_or(slots)
    }

    /// Writes the image into a fresh directory.
    fn write(&self) -> TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in &self.files {
            fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }
}

// ----- checks ------------------------------------------------------------------

/// The log holds exactly `values` from offset 0 on.
fn assert_holds(log: &Log, values: &[Vec<u8>], what: &str) {
    let next = values.len() as u64;
    assert_eq!(log.lowest_offset(), 0, "{what}: lowest offset");
    assert_eq!(log.next_offset(), next, "{what}: next offset");
    for (offset, value) in values.iter().enumerate() {
        let record = log
            .read(offset as u64)
            .unwrap_or_else(|e| panic!("{what}: read {offset}: {e}"));
        assert_eq!(record.offset, offset as u64, "{what}");
        assert_eq!(&record.value[..], &value[..], "{what}: value at {offset}");
    }
    match log.read(next) {
        Err(LogError::OutOfRange {
            offset,
            lowest: 0,
            next: n,
        }) if offset == next && n == next => {}
        other => panic!("{what}: reading {next} must be out of range, got {other:?}"),
    }
    let all = log
        .read_range(0, u32::MAX, u64::MAX)
        .unwrap_or_else(|e| panic!("{what}: read_range: {e}"));
    assert_eq!(all.len(), values.len(), "{what}: read_range length");
    for (record, value) in all.iter().zip(values) {
        assert_eq!(&record.value[..], &value[..], "{what}: read_range at {}", record.offset);
    }
}

/// Opens the damaged `image` and checks that it ends at `next`, before which
/// every record is `values[o]`; then that an append gets `next` and that a
/// clean reopen and a second crash both agree.
fn assert_recovers(image: &Image, values: &[Vec<u8>], next: u64, what: &str) {
    let dir = image.write();
    let log = Log::open(dir.path(), config()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    let mut expected = values[..next as usize].to_vec();
    assert_holds(&log, &expected, &format!("{what}, after recovery"));

    let fresh = format!("after the crash at {next}").into_bytes();
    assert_eq!(
        log.append(&fresh).unwrap(),
        next,
        "{what}: the next append gets the first damaged offset"
    );
    expected.push(fresh);
    assert_holds(&log, &expected, &format!("{what}, after an append"));

    let second_crash = Image::capture(&log);
    drop(log);
    let log = Log::open(dir.path(), config()).unwrap_or_else(|e| panic!("{what}: clean reopen failed: {e}"));
    assert_holds(&log, &expected, &format!("{what}, after a clean reopen"));
    drop(log);

    let dir = second_crash.write();
    let log = Log::open(dir.path(), config()).unwrap_or_else(|e| panic!("{what}: second crash: open failed: {e}"));
    assert_holds(&log, &expected, &format!("{what}, after a second crash"));
}

/// The offset of the frame holding byte `at` (or `next` past the last).
fn frame_at(frames: &[Frame], at: usize, next: u64) -> u64 {
    frames
        .iter()
        .find(|f| f.start <= at && at < f.end)
        .map_or(next, |f| f.offset)
}

// ----- (a) and (e): a store cut short ---------------------------------------------

fn cut_everywhere_in_the_last(source: &Source, records: usize) {
    let image = source.image();
    let frames = image.active_frames();
    assert!(
        frames.len() > records,
        "the active segment holds {} records",
        frames.len()
    );
    let from = frames[frames.len() - records].start;
    let store_len = image.files[&store_name(image.active_base())].len();
    for cut in from..=store_len {
        let mut damaged = image.clone();
        damaged.active_store().truncate(cut);
        let next = frame_at(&frames, cut, source.next());
        assert_recovers(&damaged, &source.values, next, &format!("store cut at byte {cut}"));
    }
}

#[test]
fn a_store_cut_anywhere_in_the_last_records_loses_only_the_cut_records() {
    let source = Source::with_records(150);
    cut_everywhere_in_the_last(&source, 4);
}

#[test]
fn a_store_cut_with_a_full_active_index_loses_only_the_cut_records() {
    // Small values roll on index entries: fill the active index to the last slot.
    let mut source = Source::new();
    let mut i = 0u64;
    loop {
        source.append(format!("small {i}").into_bytes());
        i += 1;
        let image = Image::capture(&source.log);
        if image.bases().len() >= 3 && image.active_frames().len() == INDEX_SLOTS {
            break;
        }
    }
    let image = source.image();
    assert_eq!(
        Image::written_entries(&image.files[&index_name(image.active_base())]),
        INDEX_SLOTS
    );
    cut_everywhere_in_the_last(&source, 2);
}

#[test]
fn index_entries_past_the_end_of_a_shortened_store_are_dropped() {
    let source = Source::with_records(150);
    let image = source.image();
    let frames = image.active_frames();
    let written = Image::written_entries(&image.files[&index_name(image.active_base())]);
    assert_eq!(written, frames.len(), "the crash image indexes every record");
    // Cut at every record boundary, down to an empty store: the index keeps
    // its entries for the records that are gone.
    for frame in frames.iter().rev() {
        let mut damaged = image.clone();
        damaged.active_store().truncate(frame.start);
        assert_recovers(
            &damaged,
            &source.values,
            frame.offset,
            &format!("store cut before offset {}", frame.offset),
        );
    }
    // The newest entries point far past the end of the store.
    let mut damaged = image.clone();
    let last = frames.len() - 1;
    damaged.active_store().truncate(frames[last - 2].start);
    for slot in last - 5..=last {
        damaged.active_index()[slot * ENTRY + 4..(slot + 1) * ENTRY].copy_from_slice(&(1u64 << 40).to_le_bytes());
    }
    // The frames before the cut are re-indexed from the store.
    let next = frames[last - 2].offset;
    assert_recovers(&damaged, &source.values, next, "index entries pointing past the store");
}

#[test]
fn losing_the_active_segment_files_ends_the_log_at_its_base() {
    let source = Source::with_records(150);
    let image = source.image();
    let base = image.active_base();

    // Both files gone: the previous segment, full, is the last one again.
    let mut damaged = image.clone();
    damaged.files.remove(&store_name(base));
    damaged.files.remove(&index_name(base));
    assert_recovers(&damaged, &source.values, base, "active segment files missing");

    // Only the index left: it is removed, and the same holds.
    let mut damaged = image.clone();
    damaged.files.remove(&store_name(base));
    assert_recovers(&damaged, &source.values, base, "active store missing");

    // An empty store with its index intact.
    let mut damaged = image.clone();
    damaged.active_store().clear();
    assert_recovers(&damaged, &source.values, base, "active store empty");
}

// ----- (b): garbled bytes -----------------------------------------------------------

#[test]
fn a_garbled_byte_anywhere_in_the_last_records_ends_the_log_before_it() {
    let source = Source::with_records(150);
    let image = source.image();
    let frames = image.active_frames();
    let last = frames[frames.len() - 1];
    // Every byte of the last record, with a single-bit flip and a full flip.
    for at in last.start..last.end {
        for mask in [0x01u8, 0xff] {
            let mut damaged = image.clone();
            damaged.active_store()[at] ^= mask;
            let what = format!("byte {at} of the last record ^ {mask:#04x}");
            assert_recovers(&damaged, &source.values, last.offset, &what);
        }
    }
    // Every byte of the two records before it. With the index intact, open
    // checks the active segment from its last sound entry on, so the log
    // keeps its length and the damage shows when the record is read; with the
    // index lost, the scan from the store stops at the garbled record.
    for frame in &frames[frames.len() - 3..frames.len() - 1] {
        for at in frame.start..frame.end {
            let mut damaged = image.clone();
            damaged.active_store()[at] ^= 0x5a;
            let what = format!("byte {at} of offset {} ^ 0x5a", frame.offset);
            assert_read_reports_corruption(&damaged, &source.values, frame.offset, &what);

            damaged.files.remove(&index_name(damaged.active_base()));
            let what = format!("{what}, index missing");
            assert_recovers(&damaged, &source.values, frame.offset, &what);
        }
    }
}

/// Opens `image`, whose record `bad` is garbled but indexed: everything is
/// kept, `bad` reads as corrupt and its neighbours read back.
fn assert_read_reports_corruption(image: &Image, values: &[Vec<u8>], bad: u64, what: &str) {
    let dir = image.write();
    let log = Log::open(dir.path(), config()).unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
    assert_eq!(log.next_offset(), values.len() as u64, "{what}");
    match log.read(bad) {
        Err(LogError::Corrupt { offset: Some(o), .. }) if o == bad => {}
        other => panic!("{what}: reading {bad} must report corruption, got {other:?}"),
    }
    for offset in (bad - 2..values.len() as u64).filter(|&o| o != bad) {
        let record = log
            .read(offset)
            .unwrap_or_else(|e| panic!("{what}: read {offset}: {e}"));
        assert_eq!(&record.value[..], &values[offset as usize][..], "{what}");
    }
}

// ----- (c): the index's zero tail -----------------------------------------------------

#[test]
fn a_zeroed_index_tail_is_rebuilt_from_the_store() {
    let source = Source::with_records(150);
    let image = source.image();
    let frames = image.active_frames();
    let index = &image.files[&index_name(image.active_base())];
    assert_eq!(Image::written_entries(index), frames.len());
    assert!(
        index[frames.len() * ENTRY..].iter().all(|&b| b == 0),
        "the crash image's index is zero beyond its entries"
    );

    // The index lost its newest k entries (pages never written back): the
    // store still holds the records, so all of them stay.
    for k in 1..=frames.len() {
        let mut damaged = image.clone();
        let len = damaged.active_index().len();
        damaged.active_index()[(frames.len() - k) * ENTRY..len].fill(0);
        assert_recovers(
            &damaged,
            &source.values,
            source.next(),
            &format!("last {k} index entries zeroed"),
        );
    }

    // A zeroed index tail and a torn last record.
    let last = frames[frames.len() - 1];
    for k in [1, 2, 5] {
        for cut in [last.start + 1, last.start + HEADER, last.end - 1] {
            let mut damaged = image.clone();
            let len = damaged.active_index().len();
            damaged.active_index()[(frames.len() - k) * ENTRY..len].fill(0);
            damaged.active_store().truncate(cut);
            let what = format!("last {k} index entries zeroed, store cut at {cut}");
            assert_recovers(&damaged, &source.values, last.offset, &what);
        }
    }

    // A sealed segment's index lost its tail: it is rebuilt from its store.
    let sealed = image.bases()[1];
    let mut damaged = image.clone();
    let count = image.frames(sealed).len();
    let len = damaged.index(sealed).len();
    damaged.index(sealed)[(count - 3) * ENTRY..len].fill(0);
    assert_recovers(&damaged, &source.values, source.next(), "sealed index tail zeroed");
}

#[test]
fn wild_index_entries_past_the_real_ones_are_dropped() {
    let source = Source::with_records(150);
    let image = source.image();
    let frames = image.active_frames();
    let count = frames.len();
    // Entries past the real ones that look plausible but do not point at
    // their record: the right slot number with a position past the store,
    // with the position of an older record, or with garbage.
    for (name, entry) in [
        (
            "past the store",
            &(|i: usize| (i as u32, 1u64 << 20)) as &dyn Fn(usize) -> (u32, u64),
        ),
        ("at an older record", &|i: usize| {
            (i as u32, frames[i % count].start as u64)
        }),
        ("garbage", &|i: usize| (0xdead_beef ^ i as u32, 0x0123_4567_89ab_cdef)),
    ] {
        let mut damaged = image.clone();
        for slot in count..INDEX_SLOTS {
            let (rel, pos) = entry(slot);
            let raw = &mut damaged.active_index()[slot * ENTRY..(slot + 1) * ENTRY];
            raw[..4].copy_from_slice(&rel.to_le_bytes());
            raw[4..].copy_from_slice(&pos.to_le_bytes());
        }
        assert_recovers(&damaged, &source.values, source.next(), &format!("wild entries {name}"));
    }
}

// ----- (d): a missing index ------------------------------------------------------------

#[test]
fn a_missing_index_is_rebuilt_from_the_store() {
    let source = Source::with_records(150);
    let image = source.image();
    let base = image.active_base();
    let frames = image.active_frames();

    let mut damaged = image.clone();
    damaged.files.remove(&index_name(base));
    assert_recovers(&damaged, &source.values, source.next(), "active index missing");

    // Missing index and a torn tail: cut anywhere in the last two records.
    let from = frames[frames.len() - 2].start;
    for cut in from..frames[frames.len() - 1].end {
        let mut damaged = image.clone();
        damaged.files.remove(&index_name(base));
        damaged.active_store().truncate(cut);
        let next = frame_at(&frames, cut, source.next());
        assert_recovers(
            &damaged,
            &source.values,
            next,
            &format!("active index missing, store cut at {cut}"),
        );
    }

    // A sealed segment's index is missing.
    for sealed in [image.bases()[0], image.bases()[1]] {
        let mut damaged = image.clone();
        damaged.files.remove(&index_name(sealed));
        assert_recovers(
            &damaged,
            &source.values,
            source.next(),
            &format!("index of sealed {sealed} missing"),
        );
    }
}

// ----- (f): torn batches -------------------------------------------------------------------

#[test]
fn a_torn_batch_is_cut_whole_and_the_records_before_it_stay() {
    let mut source = Source::with_records(130);
    let first_batch = source.append_batch(4);
    source.append(value(source.next()));
    let last_batch = source.append_batch(5);
    let image = source.image();
    let frames = image.active_frames();
    let in_batch = |f: &&Frame, first: u64, n: u64| f.offset >= first && f.offset < first + n;
    let last: Vec<Frame> = frames.iter().filter(|f| in_batch(f, last_batch, 5)).copied().collect();
    let earlier: Vec<Frame> = frames.iter().filter(|f| in_batch(f, first_batch, 4)).copied().collect();
    assert_eq!(
        (last.len(), earlier.len()),
        (5, 4),
        "both batches are in the active segment"
    );
    for (i, frame) in last.iter().enumerate() {
        let continues = frame.flags & FLAG_BATCH_CONTINUES != 0;
        assert_eq!(continues, i + 1 < last.len(), "batch flag on {}", frame.offset);
    }
    let batch_start = last[0].start;
    let batch_end = last[4].end;

    // Cut anywhere inside the last batch, down to its first byte: all of it goes.
    for cut in batch_start..batch_end {
        let mut damaged = image.clone();
        damaged.active_store().truncate(cut);
        assert_recovers(
            &damaged,
            &source.values,
            last_batch,
            &format!("last batch cut at {cut}"),
        );
    }
    // The same with the index entries of the batch lost.
    for cut in [batch_start + 1, last[3].end, last[4].start + 1, batch_end - 1] {
        let mut damaged = image.clone();
        let len = damaged.active_index().len();
        let first_slot = (last_batch - image.active_base()) as usize;
        damaged.active_index()[first_slot * ENTRY..len].fill(0);
        damaged.active_store().truncate(cut);
        let what = format!("last batch cut at {cut}, its index entries zeroed");
        assert_recovers(&damaged, &source.values, last_batch, &what);
    }
    // A garbled byte in the batch's last record takes the whole batch.
    for at in last[4].start..last[4].end {
        let mut damaged = image.clone();
        damaged.active_store()[at] ^= 0xff;
        let what = format!("byte {at} of the last batch's last record garbled");
        assert_recovers(&damaged, &source.values, last_batch, &what);
    }
    // A cut inside the earlier batch takes it whole too; one between the
    // batches keeps the earlier one.
    for cut in earlier[0].start..earlier[3].end {
        let mut damaged = image.clone();
        damaged.active_store().truncate(cut);
        assert_recovers(
            &damaged,
            &source.values,
            first_batch,
            &format!("earlier batch cut at {cut}"),
        );
    }
    let mut damaged = image.clone();
    damaged.active_store().truncate(earlier[3].end);
    assert_recovers(
        &damaged,
        &source.values,
        first_batch + 4,
        "cut right after the earlier batch",
    );
}

#[test]
fn a_torn_batch_that_opened_a_segment_leaves_it_empty() {
    // Small records fill the active index to two slots short, so that a batch
    // of five rolls to a new segment of its own.
    let mut source = Source::new();
    loop {
        source.append(format!("small {}", source.next()).into_bytes());
        let image = Image::capture(&source.log);
        if image.bases().len() >= 2 && image.active_frames().len() == INDEX_SLOTS - 2 {
            break;
        }
    }
    let batch = source.append_batch(5);
    let image = source.image();
    assert_eq!(image.active_base(), batch, "the batch opened a segment");
    let frames = image.active_frames();
    assert_eq!(frames.len(), 5);
    for cut in 0..frames[4].end {
        let mut damaged = image.clone();
        damaged.active_store().truncate(cut);
        assert_recovers(
            &damaged,
            &source.values,
            batch,
            &format!("batch alone in its segment, cut at {cut}"),
        );
    }
    let mut damaged = image.clone();
    damaged.files.remove(&index_name(batch));
    damaged.active_store().truncate(frames[4].end - 1);
    assert_recovers(
        &damaged,
        &source.values,
        batch,
        "batch alone in its segment, index missing",
    );
}

// ----- damage that recovery must not paper over ----------------------------------------------

#[test]
fn a_cut_sealed_segment_is_reported_not_silently_shortened() {
    let source = Source::with_records(150);
    let image = source.image();
    let sealed = image.bases()[1];
    let frames = image.frames(sealed);
    for cut in [
        frames[frames.len() - 1].end - 1,
        frames[frames.len() - 1].start,
        frames[10].start + 3,
    ] {
        let mut damaged = image.clone();
        damaged.store(sealed).truncate(cut);
        let dir = damaged.write();
        match Log::open(dir.path(), config()) {
            Err(LogError::Corrupt { file, .. }) => assert_eq!(file, dir.path().join(store_name(sealed))),
            Err(e) => panic!("sealed store cut at {cut}: expected corruption, got {e}"),
            Ok(log) => panic!(
                "sealed store cut at {cut}: opened with next offset {} instead of failing",
                log.next_offset()
            ),
        }
        // The image is left as it was found: no file was cut to hide the damage.
        for (name, bytes) in &damaged.files {
            if name.ends_with(".store") {
                assert_eq!(&fs::read(dir.path().join(name)).unwrap(), bytes, "{name} untouched");
            }
        }
    }
}

// ----- a batch cut on purpose -------------------------------------------------------------------

#[test]
fn a_batch_cut_by_truncate_after_is_not_taken_for_a_torn_one() {
    let mut source = Source::with_records(130);
    let batch = source.append_batch(5);
    // Keep the first three records of the batch: the new last one carried the
    // batch flag, which must not make a reopen drop what truncate_after kept.
    source.log.cut_after(batch + 2).unwrap();
    source.values.truncate((batch + 3) as usize);
    let image = source.image();
    let last = *image.active_frames().last().unwrap();
    assert_eq!(last.offset, batch + 2);
    assert_eq!(
        last.flags & FLAG_BATCH_CONTINUES,
        0,
        "the cut batch ends at the last record kept"
    );
    assert_recovers(&image, &source.values, batch + 3, "batch cut by truncate_after");

    // A new batch torn after it goes alone: the cut batch before it stays.
    let torn = source.append_batch(4);
    assert_eq!(torn, batch + 3);
    let image = source.image();
    let frames = image.active_frames();
    let new_batch: Vec<Frame> = frames.iter().filter(|f| f.offset >= torn).copied().collect();
    for cut in new_batch[0].start + 1..new_batch[3].end {
        let mut damaged = image.clone();
        damaged.active_store().truncate(cut);
        let what = format!("batch after a cut batch, torn at {cut}");
        assert_recovers(&damaged, &source.values, torn, &what);
    }
}
