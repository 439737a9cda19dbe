//! Power cuts in the middle of a cut, a purge, a reset and a roll.
//!
//! A `DiskModel` follows every step the engine makes in its data directory
//! (`fsops::watch`): which names the directory held as of its last sync, and
//! what each file held as of its own last sync. Before every step (a crash
//! point) it builds the disk images a crash there could leave: a power cut
//! (synced names, synced contents), `kill -9` (everything as it is now), and
//! mixes of the two (current names with synced contents and the reverse; one
//! unsynced name or one unsynced file reaching the disk and no other). Each
//! distinct image is written to a fresh directory and reopened.
//!
//! This proves, for every such image, that the log opens, that every offset
//! from its lowest to its next reads back uncorrupted with the value appended
//! at that offset, and that it holds every record acknowledged before the
//! change began that the change itself did not mean to remove: below the cut
//! point for a cut, above the purge point for a purge, all of them with
//! `Durability::Always` for appends that roll (with the other modes only a
//! `kill -9` must keep every append, and a power cut a valid prefix). Once
//! the change returns, every image must show its whole effect.
//!
//! Segment files here are smaller than a page, so that taking a file's
//! unsynced writes whole or not at all is what a page cache can lose.
//! The cuts inside a batch found a real bug: the kept record's end-of-batch
//! rewrite came after the store was shortened, so a crash in between lost
//! the kept part of the batch. The engine now rewrites (and syncs) first.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use distlog::log::fsops::{self, Step};
use distlog::log::{Durability, Log, LogConfig, Payload};
use tempfile::TempDir;

use crate::fixtures::index_bytes;

const INDEX_SLOTS: u64 = 16;
/// Records in each batch that fills a log before a cut, a purge or a reset:
/// batches of three let a cut land inside one.
const BATCH: u64 = 3;

fn config(durability: Durability) -> LogConfig {
    LogConfig {
        max_segment_bytes: 1024,
        max_index_bytes: index_bytes(INDEX_SLOTS),
        max_record_bytes: 256,
        durability,
        ..LogConfig::default()
    }
}

/// A distinct value per offset, 4 to ~95 bytes, so that segments roll on
/// bytes as well as on index entries, and a record read at the wrong
/// offset is told apart.
fn value(offset: u64) -> Vec<u8> {
    let mut v = format!("v{offset}:").into_bytes();
    v.extend((0..offset * 37 % 90).map(|k| (offset as u8).wrapping_mul(29).wrapping_add(k as u8)));
    v
}

/// A fresh directory, in memory where the machine has `/dev/shm`: thousands
/// of images are opened, and their syncs need not wait for a disk.
fn scratch_dir() -> TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = tempfile::tempdir_in(shm)
    {
        return dir;
    }
    tempfile::tempdir().expect("tempdir")
}

fn is_segment_file(name: &str) -> bool {
    name.ends_with(".store") || name.ends_with(".index")
}

/// Segment bases in `dir`, oldest first.
fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .expect("read the data directory")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".store")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

// ----- what an image must hold ----------------------------------------------

/// What every image reopened at one crash point must look like.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Bounds {
    lowest: RangeInclusive<u64>,
    next: RangeInclusive<u64>,
    /// Offsets acknowledged before the change that it does not remove.
    holds: Range<u64>,
    /// Empty logs at these offsets are also fine (a reset under way).
    empty_at: Vec<u64>,
}

impl Bounds {
    fn exactly(lowest: u64, next: u64) -> Bounds {
        Bounds {
            lowest: lowest..=lowest,
            next: next..=next,
            holds: lowest..next,
            empty_at: Vec::new(),
        }
    }

    fn admits(&self, lowest: u64, next: u64) -> Result<(), String> {
        if lowest == next && self.empty_at.contains(&lowest) {
            return Ok(());
        }
        let holds = self.holds.is_empty() || (lowest <= self.holds.start && self.holds.end <= next);
        if self.lowest.contains(&lowest) && self.next.contains(&next) && holds {
            return Ok(());
        }
        Err(format!("opened as [{lowest}, {next}), expected {self:?}"))
    }
}

/// The bounds for every image, and what `kill -9` (nothing lost but what
/// the process held) must hold on top of them.
#[derive(Clone, Debug)]
struct Expect {
    every: Bounds,
    killed_holds: Range<u64>,
}

impl Expect {
    fn same(every: Bounds) -> Expect {
        let killed_holds = every.holds.clone();
        Expect { every, killed_holds }
    }

    /// For files read between `before` and `after` while another thread
    /// appends (a periodic sync's crash point): they hold at least what was
    /// acknowledged before, and at most what was submitted after.
    fn spanning(before: Expect, after: &Expect) -> Expect {
        let mut spanning = before;
        let next = &mut spanning.every.next;
        *next = *next.start()..=*after.every.next.end();
        spanning
    }
}

/// Evaluated at each crash point before and after the files are read.
type Expectation = Box<dyn Fn() -> Expect + Send>;

// ----- the disk model -----------------------------------------------------------

/// A file, told apart from a later one under the same name (a reset may
/// remove a segment and create one with the same base).
type Inode = u64;
type Names = BTreeMap<String, Inode>;
/// Segment files by name: what is written into a directory and reopened.
type Image = BTreeMap<String, Vec<u8>>;

/// A sync told to watchers and not yet known to be complete, with what it
/// makes durable once it is.
enum PendingSync {
    File(Inode, Vec<u8>),
    Dir(Names),
}

/// What a sync made durable, and when it was read (`DiskModel::reads`): a
/// sync that completes after a later one (two threads) makes nothing older
/// durable again.
#[derive(Clone, PartialEq)]
struct Synced<T> {
    read: u64,
    what: T,
}

impl<T> Synced<T> {
    /// Synced before the watch began.
    fn from_the_start(what: T) -> Synced<T> {
        Synced { read: 0, what }
    }
}

struct DiskModel {
    dir: PathBuf,
    next_inode: Inode,
    /// Counts the reads of what a sync will make durable.
    reads: u64,
    names_now: Names,
    /// As of the last directory sync that completed.
    names_synced: Synced<Names>,
    /// Each file's latest content, kept after its name goes: an image may
    /// bring back a name whose removal was not synced.
    content_now: HashMap<Inode, Vec<u8>>,
    /// As of each file's last sync that completed; files never synced are absent.
    content_synced: HashMap<Inode, Synced<Vec<u8>>>,
    /// Per thread: a thread's sync has completed once it makes its next step.
    pending: HashMap<ThreadId, (Option<String>, Synced<PendingSync>)>,
}

impl DiskModel {
    /// The directory as it is, all of it taken as synced (the caller synced the log).
    fn all_synced(dir: &Path) -> DiskModel {
        let mut model = DiskModel {
            dir: dir.to_path_buf(),
            next_inode: 0,
            reads: 0,
            names_now: Names::new(),
            names_synced: Synced::from_the_start(Names::new()),
            content_now: HashMap::new(),
            content_synced: HashMap::new(),
            pending: HashMap::new(),
        };
        model.refresh();
        model.names_synced.what = model.names_now.clone();
        model.content_synced = (model.content_now.iter())
            .map(|(inode, bytes)| (*inode, Synced::from_the_start(bytes.clone())))
            .collect();
        model
    }

    /// Reads the directory as it is now: every creation and removal is a
    /// step, so a name seen for the first time is a new file.
    fn refresh(&mut self) {
        let mut seen = BTreeSet::new();
        for entry in fs::read_dir(&self.dir).expect("read the data directory") {
            let Ok(name) = entry.expect("directory entry").file_name().into_string() else {
                continue;
            };
            if !is_segment_file(&name) {
                continue;
            }
            // Another thread's step may remove it while we look.
            let Ok(bytes) = fs::read(self.dir.join(&name)) else {
                continue;
            };
            let inode = match self.names_now.get(&name) {
                Some(inode) => *inode,
                None => {
                    self.next_inode += 1;
                    self.names_now.insert(name.clone(), self.next_inode);
                    self.next_inode
                }
            };
            self.content_now.insert(inode, bytes);
            seen.insert(name);
        }
        self.names_now.retain(|name, _| seen.contains(name));
    }

    /// The thread's previous step has completed: its sync is durable now.
    fn complete(&mut self, thread: ThreadId) {
        let Some((_, Synced { read, what })) = self.pending.remove(&thread) else {
            return;
        };
        match what {
            PendingSync::File(inode, bytes) => {
                let newer = self.content_synced.get(&inode).is_none_or(|old| old.read < read);
                if newer {
                    self.content_synced.insert(inode, Synced { read, what: bytes });
                }
            }
            PendingSync::Dir(names) if self.names_synced.read < read => {
                self.names_synced = Synced { read, what: names };
            }
            PendingSync::Dir(_) => {}
        }
    }

    /// Completes the syncs of the calling thread and of the committer, whose
    /// every sync is complete once the append it covers is acknowledged.
    /// A periodic sync (`Interval`) still under way stays pending.
    fn complete_finished(&mut self) {
        let me = std::thread::current().id();
        let finished: Vec<ThreadId> = self
            .pending
            .iter()
            .filter(|(thread, (name, _))| **thread == me || name.as_deref() == Some("distlog-commit"))
            .map(|(thread, _)| *thread)
            .collect();
        for thread in finished {
            self.complete(thread);
        }
    }

    /// Remembers what a sync about to be made will make durable: the file
    /// as it is now, or the directory's names as they are now.
    fn note(&mut self, step: &Step<'_>) {
        let pending = match step {
            Step::SyncData(path) | Step::SyncAll(path) | Step::FlushMap(path) => {
                let name = file_name(path);
                let Some(inode) = self.names_now.get(&name) else {
                    return;
                };
                PendingSync::File(*inode, self.content_now.get(inode).cloned().unwrap_or_default())
            }
            Step::SyncDir(_) => PendingSync::Dir(self.names_now.clone()),
            _ => return,
        };
        self.reads += 1;
        let thread = std::thread::current();
        let read = self.reads;
        self.pending.insert(
            thread.id(),
            (thread.name().map(str::to_owned), Synced { read, what: pending }),
        );
    }

    fn synced_names(&self) -> &Names {
        &self.names_synced.what
    }

    fn synced_content(&self, inode: Inode) -> Option<&Vec<u8>> {
        self.content_synced.get(&inode).map(|synced| &synced.what)
    }

    /// Names whose entry differs between the synced directory and the current one.
    fn unsynced_names(&self) -> Vec<String> {
        let synced = self.synced_names();
        let mut changed: Vec<String> = (self.names_now.keys().chain(synced.keys()))
            .filter(|name| self.names_now.get(*name) != synced.get(*name))
            .cloned()
            .collect();
        changed.sort_unstable();
        changed.dedup();
        changed
    }

    /// Files among `names` whose content differs from their last sync.
    fn unsynced_files(&self, names: &Names) -> Vec<Inode> {
        let mut inodes: Vec<Inode> = (names.values().copied())
            .filter(|inode| self.synced_content(*inode) != self.content_now.get(inode))
            .collect();
        inodes.sort_unstable();
        inodes.dedup();
        inodes
    }

    /// The synced names with the unsynced changes to `reached` made too.
    fn names_with(&self, reached: &[&String]) -> Names {
        let mut names = self.synced_names().clone();
        for name in reached {
            match self.names_now.get(*name) {
                Some(inode) => names.insert((*name).clone(), *inode),
                None => names.remove(*name),
            };
        }
        names
    }

    /// A file as of its last sync with, if `reached`, what was written since.
    /// A file never synced is empty, or missing when `missing_if_never_synced`.
    fn content(&self, inode: Inode, reached: bool, missing_if_never_synced: bool) -> Option<Vec<u8>> {
        match (reached, self.synced_content(inode)) {
            (true, _) => self.content_now.get(&inode).cloned(),
            (false, Some(bytes)) => Some(bytes.clone()),
            (false, None) if missing_if_never_synced => None,
            (false, None) => Some(Vec::new()),
        }
    }

    fn name_of(&self, inode: Inode) -> String {
        (self.names_now.iter().chain(self.synced_names()))
            .find(|(_, i)| **i == inode)
            .map_or_else(|| format!("file #{inode}"), |(name, _)| name.clone())
    }

    /// Every image a crash now may leave: any subset of the unsynced
    /// directory changes on disk, and with it any subset of the unsynced
    /// file contents (see `reached`). Each is labelled, and told whether it
    /// is the `kill -9` one (everything reached the disk).
    fn images(&self) -> Vec<(String, bool, Image)> {
        let mut images = Vec::new();
        let changed = self.unsynced_names();
        for names_reached in reached(&changed) {
            let names = self.names_with(&names_reached);
            let files = self.unsynced_files(&names);
            for files_reached in reached(&files) {
                for missing_if_never_synced in [false, true] {
                    let image: Image = (names.iter())
                        .filter_map(|(name, inode)| {
                            let reached = files_reached.contains(&inode);
                            Some((name.clone(), self.content(*inode, reached, missing_if_never_synced)?))
                        })
                        .collect();
                    let killed = names_reached.len() == changed.len() && files_reached.len() == files.len();
                    let files_label: Vec<String> = files_reached.iter().map(|i| self.name_of(**i)).collect();
                    let missing = if missing_if_never_synced {
                        "; never synced files missing"
                    } else {
                        ""
                    };
                    let label = format!(
                        "synced state; reached the disk too: entries {names_reached:?}, contents {files_label:?}{missing}"
                    );
                    images.push((label, killed, image));
                }
            }
        }
        images
    }
}

/// Unsynced changes small enough in number are tried in every combination.
const EVERY_SUBSET_UP_TO: usize = 5;

/// Which of `changes` reached the disk before the power went: every subset
/// of a few; of more, none, all, each one alone and all but each one.
fn reached<T>(changes: &[T]) -> Vec<Vec<&T>> {
    let n = changes.len();
    let masks: Vec<Vec<bool>> = if n <= EVERY_SUBSET_UP_TO {
        (0..1u32 << n)
            .map(|bits| (0..n).map(|i| (bits >> i) & 1 == 1).collect())
            .collect()
    } else {
        let mut masks = vec![vec![false; n], vec![true; n]];
        for one in 0..n {
            masks.push((0..n).map(|i| i == one).collect());
            masks.push((0..n).map(|i| i != one).collect());
        }
        masks
    };
    (masks.iter())
        .map(|mask| {
            changes
                .iter()
                .zip(mask)
                .filter(|(_, on)| **on)
                .map(|(c, _)| c)
                .collect()
        })
        .collect()
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
        .to_owned()
}

// ----- reopening images -------------------------------------------------------------

/// Writes `image` into a fresh directory, opens it and reads every record:
/// the log's lowest and next offsets, or what went wrong.
fn reopen(image: &Image, config: &LogConfig) -> Result<(u64, u64), String> {
    let dir = scratch_dir();
    for (name, bytes) in image {
        fs::write(dir.path().join(name), bytes).expect("write the image");
    }
    let log = Log::open(dir.path(), config.clone()).map_err(|e| format!("does not open: {e}"))?;
    let read = read_everything(&log);
    log.close().map_err(|e| format!("does not close: {e}"))?;
    read
}

/// Reads every offset the log says it holds, one by one and as one range,
/// checking each value.
fn read_everything(log: &Log) -> Result<(u64, u64), String> {
    let (lowest, next) = (log.lowest_offset(), log.next_offset());
    for offset in lowest..next {
        let record = log
            .read(offset)
            .map_err(|e| format!("reading {offset} of [{lowest}, {next}): {e}"))?;
        if record.value != value(offset) {
            return Err(format!("offset {offset} holds a value appended at another offset"));
        }
    }
    let all = log
        .read_range(lowest, u32::MAX, u64::MAX)
        .map_err(|e| format!("reading [{lowest}, {next}) as a range: {e}"))?;
    if all.len() as u64 != next - lowest {
        return Err(format!("a range read of [{lowest}, {next}) gave {} records", all.len()));
    }
    Ok((lowest, next))
}

fn hash_of(image: &Image, bounds: &Bounds) -> u64 {
    let mut hasher = DefaultHasher::new();
    image.hash(&mut hasher);
    bounds.hash(&mut hasher);
    hasher.finish()
}

// ----- the harness --------------------------------------------------------------------

struct Harness {
    scenario: String,
    config: LogConfig,
    model: DiskModel,
    expectation: Expectation,
    /// Images already reopened against the same bounds.
    checked: HashSet<u64>,
    crash_points: usize,
    images: usize,
    failures: Vec<String>,
}

impl Harness {
    /// A crash point: just before `step`, or after the change returned.
    fn crash_here(&mut self, at: &str) {
        let before = (self.expectation)();
        self.model.refresh();
        let expect = Expect::spanning(before, &(self.expectation)());
        self.model.complete(std::thread::current().id());
        self.check_images(at, &expect);
    }

    fn check_images(&mut self, at: &str, expect: &Expect) {
        self.crash_points += 1;
        for (label, killed, image) in self.model.images() {
            let mut bounds = expect.every.clone();
            if killed {
                bounds.holds = expect.killed_holds.clone();
            }
            if !self.checked.insert(hash_of(&image, &bounds)) {
                continue;
            }
            self.images += 1;
            let outcome = reopen(&image, &self.config).and_then(|(lowest, next)| bounds.admits(lowest, next));
            if let Err(why) = outcome {
                let files: Vec<String> = image.iter().map(|(n, b)| format!("{n}:{}", b.len())).collect();
                self.failures.push(format!(
                    "crash point {} ({at}), image [{label}] {files:?}: {why}",
                    self.crash_points
                ));
            }
        }
    }
}

/// Reopens every image a crash may leave, at every step the engine makes in
/// the log's directory, until `finish`.
struct PowerCuts {
    harness: Arc<Mutex<Harness>>,
    started: Instant,
    _watch: fsops::Watch,
}

fn lock(harness: &Mutex<Harness>) -> MutexGuard<'_, Harness> {
    harness.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PowerCuts {
    /// Syncs the log, takes its directory as the last synced state, and
    /// starts watching.
    fn start(scenario: &str, log: &Log, expectation: Expectation) -> PowerCuts {
        log.sync().expect("sync before the watch");
        let harness = Arc::new(Mutex::new(Harness {
            scenario: scenario.to_owned(),
            config: log.config().clone(),
            model: DiskModel::all_synced(log.dir()),
            expectation,
            checked: HashSet::new(),
            crash_points: 0,
            images: 0,
            failures: Vec::new(),
        }));
        let observed = harness.clone();
        let watch = fsops::watch(
            log.dir(),
            Arc::new(move |step: &Step<'_>| {
                let mut harness = lock(&observed);
                harness.crash_here(&format!("{step:?}"));
                harness.model.note(step);
                // Never fail the step: the engine runs as it would.
                Ok(())
            }),
        );
        PowerCuts {
            harness,
            started: Instant::now(),
            _watch: watch,
        }
    }

    /// The change returned: a last crash point where every image must
    /// show `done`, then the verdict.
    fn finish(self, done: Expect) {
        let mut harness = lock(&self.harness);
        harness.model.refresh();
        harness.model.complete_finished();
        harness.check_images("after the change returned", &done);
        eprintln!(
            "{}: {} crash points, {} distinct images reopened, {} ms",
            harness.scenario,
            harness.crash_points,
            harness.images,
            self.started.elapsed().as_millis()
        );
        assert!(
            harness.crash_points > 1,
            "{}: the change made no step",
            harness.scenario
        );
        let failures = &harness.failures;
        assert!(
            failures.is_empty(),
            "{}: {} of {} images failed; the first ones:\n{}",
            harness.scenario,
            failures.len(),
            harness.images,
            failures.iter().take(4).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

// ----- the log being cut -------------------------------------------------------------

struct Source {
    _dir: TempDir,
    log: Log,
}

impl Source {
    /// A log holding `value(o)` at every offset below `records` (or a few
    /// more: whole batches of `BATCH`, and at least two in the active
    /// segment), in several segments.
    fn in_batches(durability: Durability, records: u64) -> Source {
        let dir = scratch_dir();
        let log = Log::open(dir.path(), config(durability)).expect("open");
        let source = Source { _dir: dir, log };
        while source.next() < records || source.next() - source.bases().last().copied().unwrap_or(0) < 2 * BATCH {
            let first = source.next();
            let values: Vec<Vec<u8>> = (first..first + BATCH).map(value).collect();
            let payloads: Vec<Payload> = values.iter().map(|v| Payload::new(v)).collect();
            assert_eq!(source.log.append_batch(&payloads).expect("append a batch"), first);
        }
        assert!(source.bases().len() >= 4, "several segments: {:?}", source.bases());
        source
    }

    fn next(&self) -> u64 {
        self.log.next_offset()
    }

    fn bases(&self) -> Vec<u64> {
        segment_bases(self.log.dir())
    }
}

// ----- cuts ----------------------------------------------------------------------------

/// Cuts so that `keep` is the first offset gone; `pick_keep` chooses it
/// from the segment bases and the next offset. A crash may leave the
/// records from `keep` on or not, but never lose one below it.
fn cut_scenario(what: &str, durability: Durability, pick_keep: impl Fn(&[u64], u64) -> u64) {
    let source = Source::in_batches(durability, 75);
    let n = source.next();
    let keep = pick_keep(&source.bases(), n);
    assert!(0 < keep && keep < n, "the cut keeps some records and drops others");
    let during = Bounds {
        lowest: 0..=0,
        next: keep..=n,
        holds: 0..keep,
        empty_at: Vec::new(),
    };
    let scenario = format!("cut {what} ({durability:?}), keeping [0, {keep}) of [0, {n})");
    let cuts = PowerCuts::start(&scenario, &source.log, Box::new(move || Expect::same(during.clone())));
    source.log.cut_after(keep - 1).expect("cut");
    assert_eq!(source.next(), keep, "the live log ends at the cut");
    cuts.finish(Expect::same(Bounds::exactly(0, keep)));
}

/// Where a cut falls in its batch: after its last record (nothing to
/// rewrite), or after its first (the kept record's "batch continues" flag
/// is cleared in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InBatch {
    AtItsEnd,
    AfterItsFirst,
}

/// The first offset a cut drops, given the first offset of the batch it
/// falls after or in.
fn keep_from(batch: u64, in_batch: InBatch) -> u64 {
    assert_eq!(batch % BATCH, 0, "segments hold whole batches");
    match in_batch {
        InBatch::AtItsEnd => batch,
        InBatch::AfterItsFirst => batch + 1,
    }
}

/// Cuts in the active segment's last batch, or just before it.
fn cut_inside_the_active_segment(durability: Durability, in_batch: InBatch) {
    cut_scenario(
        &format!("inside the active segment, {in_batch:?}"),
        durability,
        |bases, next| {
            let keep = keep_from(next - BATCH, in_batch);
            assert!(keep > bases[bases.len() - 1], "the cut is inside the active segment");
            keep
        },
    );
}

/// Removes the segments from the third on and keeps the second whole.
fn cut_at_a_segment_boundary(durability: Durability) {
    cut_scenario("at a segment boundary", durability, |bases, _| bases[2]);
}

/// Removes whole later segments and shortens a sealed one: after its first
/// batch, or inside its second.
fn cut_across_segments(durability: Durability, in_batch: InBatch) {
    cut_scenario(&format!("across segments, {in_batch:?}"), durability, |bases, _| {
        keep_from(bases[1] + BATCH, in_batch)
    });
}

#[test]
fn a_cut_inside_the_active_segment_survives_a_crash_at_every_step_with_always() {
    cut_inside_the_active_segment(Durability::Always, InBatch::AtItsEnd);
}

/// Found by this harness: `Segment::cut_from` shortens the store (`SetLen`)
/// before it clears the kept record's "batch continues" flag (`Rewrite`). A
/// crash in between (kill -9, or a power cut that kept the truncation but
/// not the rewrite) leaves a batch without an end, and recovery drops the
/// records of it that the cut kept. With `Never` both writes go through the
/// map with no step between them, so the harness has no crash point there.
#[test]
fn a_cut_inside_a_batch_of_the_active_segment_survives_a_crash_at_every_step_with_always() {
    cut_inside_the_active_segment(Durability::Always, InBatch::AfterItsFirst);
}

#[test]
fn a_cut_inside_the_active_segment_survives_a_crash_at_every_step_with_never() {
    cut_inside_the_active_segment(Durability::Never, InBatch::AtItsEnd);
    cut_inside_the_active_segment(Durability::Never, InBatch::AfterItsFirst);
}

#[test]
fn a_cut_at_a_segment_boundary_survives_a_crash_at_every_step_with_always() {
    cut_at_a_segment_boundary(Durability::Always);
}

#[test]
fn a_cut_at_a_segment_boundary_survives_a_crash_at_every_step_with_never() {
    cut_at_a_segment_boundary(Durability::Never);
}

#[test]
fn a_cut_across_segments_survives_a_crash_at_every_step_with_always() {
    cut_across_segments(Durability::Always, InBatch::AtItsEnd);
}

#[test]
fn a_cut_across_segments_survives_a_crash_at_every_step_with_never() {
    cut_across_segments(Durability::Never, InBatch::AtItsEnd);
}

/// As `a_cut_inside_a_batch_of_the_active_segment_...`: the sealed segment
/// that a cut across segments shortens is not mapped, in either mode.
#[test]
fn a_cut_across_segments_inside_a_batch_survives_a_crash_at_every_step_with_always() {
    cut_across_segments(Durability::Always, InBatch::AfterItsFirst);
}

#[test]
fn a_cut_across_segments_inside_a_batch_survives_a_crash_at_every_step_with_never() {
    cut_across_segments(Durability::Never, InBatch::AfterItsFirst);
}

// ----- purges ----------------------------------------------------------------------------

/// Purges the three oldest segments. A crash may leave any of them, but
/// never a hole, and never loses a record after them.
fn purge_of_several_segments(durability: Durability) {
    let source = Source::in_batches(durability, 75);
    let n = source.next();
    let new_lowest = source.bases()[3];
    let during = Bounds {
        lowest: 0..=new_lowest,
        next: n..=n,
        holds: new_lowest..n,
        empty_at: Vec::new(),
    };
    let scenario = format!("purge before {new_lowest} ({durability:?}) of [0, {n})");
    let cuts = PowerCuts::start(&scenario, &source.log, Box::new(move || Expect::same(during.clone())));
    assert_eq!(source.log.purge_before(new_lowest).expect("purge"), 3);
    assert_eq!(source.log.lowest_offset(), new_lowest);
    cuts.finish(Expect::same(Bounds::exactly(new_lowest, n)));
}

#[test]
fn a_purge_of_several_segments_survives_a_crash_at_every_step_with_always() {
    purge_of_several_segments(Durability::Always);
}

#[test]
fn a_purge_of_several_segments_survives_a_crash_at_every_step_with_never() {
    purge_of_several_segments(Durability::Never);
}

// ----- resets ------------------------------------------------------------------------------

/// Resets to the base `pick_base` chooses. A crash may leave a contiguous
/// part of the old log (a prefix while later segments go, a suffix while
/// earlier ones go behind a segment cut to nothing) or the empty new one.
fn reset_scenario(what: &str, durability: Durability, pick_base: impl Fn(&[u64], u64) -> u64) {
    let source = Source::in_batches(durability, 75);
    let n = source.next();
    let base = pick_base(&source.bases(), n);
    let during = Bounds {
        lowest: 0..=n,
        next: 0..=n,
        holds: 0..0,
        empty_at: vec![base],
    };
    let scenario = format!("reset to {base} {what} ({durability:?}) of [0, {n})");
    let cuts = PowerCuts::start(&scenario, &source.log, Box::new(move || Expect::same(during.clone())));
    source.log.reset(base).expect("reset");
    assert_eq!((source.log.lowest_offset(), source.next()), (base, base));
    cuts.finish(Expect::same(Bounds::exactly(base, base)));
}

fn reset_above_the_log(durability: Durability) {
    reset_scenario("above the next offset", durability, |_, next| next + 100);
}

/// The new segment takes the name of an old one removed just before.
fn reset_to_an_existing_base(durability: Durability) {
    reset_scenario("onto an existing segment's name", durability, |bases, _| bases[2]);
}

#[test]
fn a_reset_above_the_log_survives_a_crash_at_every_step_with_always() {
    reset_above_the_log(Durability::Always);
}

#[test]
fn a_reset_above_the_log_survives_a_crash_at_every_step_with_never() {
    reset_above_the_log(Durability::Never);
}

#[test]
fn a_reset_to_an_existing_base_survives_a_crash_at_every_step_with_always() {
    reset_to_an_existing_base(Durability::Always);
}

#[test]
fn a_reset_to_an_existing_base_survives_a_crash_at_every_step_with_never() {
    reset_to_an_existing_base(Durability::Never);
}

// ----- rolls ---------------------------------------------------------------------------------

/// Single appends until the log has rolled twice. With `Always`, every
/// acknowledged append must be in every image; otherwise only `kill -9`
/// keeps them all, and a power cut keeps at least what was synced before.
fn roll_scenario(durability: Durability) {
    let dir = scratch_dir();
    let log = Log::open(dir.path(), config(durability)).expect("open");
    let before = 20;
    for offset in 0..before {
        assert_eq!(log.append(&value(offset)).expect("append"), offset);
    }
    let acked = Arc::new(AtomicU64::new(before));
    let submitted = Arc::new(AtomicU64::new(before));
    let expectation = {
        let (acked, submitted) = (acked.clone(), submitted.clone());
        move || {
            // Acknowledged first: what is submitted is never less.
            let acked = acked.load(Ordering::Acquire);
            let submitted = submitted.load(Ordering::Acquire);
            let synced = if durability == Durability::Always {
                acked
            } else {
                before
            };
            Expect {
                every: Bounds {
                    lowest: 0..=0,
                    next: synced..=submitted,
                    holds: 0..synced,
                    empty_at: Vec::new(),
                },
                killed_holds: 0..acked,
            }
        }
    };
    let scenario = format!("appends that roll twice ({durability:?})");
    let cuts = PowerCuts::start(&scenario, &log, Box::new(expectation.clone()));
    let segments = segment_bases(dir.path()).len();
    let mut offset = before;
    while segment_bases(dir.path()).len() < segments + 2 {
        submitted.store(offset + 1, Ordering::Release);
        assert_eq!(log.append(&value(offset)).expect("append"), offset);
        acked.store(offset + 1, Ordering::Release);
        offset += 1;
    }
    cuts.finish(expectation());
    log.close().expect("close");
}

#[test]
fn appends_that_roll_with_always_lose_nothing_acknowledged_at_any_step() {
    roll_scenario(Durability::Always);
}

#[test]
fn appends_that_roll_with_never_leave_an_openable_prefix_at_every_step() {
    roll_scenario(Durability::Never);
}

#[test]
fn appends_that_roll_with_interval_leave_an_openable_prefix_at_every_step() {
    roll_scenario(Durability::Interval(Duration::from_millis(1)));
}
