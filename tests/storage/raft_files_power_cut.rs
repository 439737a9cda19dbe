//! Power cuts in the middle of a write of the small files Raft keeps beside
//! the log (`cluster::Durable`: the vote, the term runs, the purged id, the
//! state machine's tables, the node id), the way `power_cut.rs` does for
//! the segments: a model follows every step the write makes in its
//! directory (`fsops::watch`), which names the directory held as of its last
//! sync and what each file held as of its own, and before every step builds
//! the images a crash there could leave: any subset of the unsynced
//! directory changes (a creation, a rename) with any subset of the unsynced
//! file contents, each either whole or torn half-way, and a file never
//! synced either empty or missing. Each image is written to a fresh
//! directory and read back.
//!
//! This proves that a document reads back, in every image, as its old value
//! or its new one (never an error, never a mix), and as the new one in every
//! image once the write returned: what `Durable::write` with `sync` promises
//! (`save_vote` must not return before the vote is durable). The mark files
//! (`cluster::marks`) are private to the cluster; their power cuts are in
//! that module's tests.
//!
//! Before these files went through `fsops` the harness saw no step of theirs
//! at all: every scenario here failed its "made its steps" check.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use distlog::cluster::Durable;
use distlog::log::fsops::{self, Step};
use serde_json::{Value, json};

type Ino = u64;
type Names = BTreeMap<String, Ino>;
type Image = BTreeMap<String, Vec<u8>>;

/// Syncs told to the model and not yet returned: they count once the
/// writer's next step is told (one thread writes here).
enum Pending {
    File(Ino, Vec<u8>),
    Dir(Names),
}

/// What the directory holds now and as of its syncs, files told apart by
/// inode (a rename moves a file to another name).
struct Model {
    dir: PathBuf,
    names_now: Names,
    names_synced: Names,
    content_now: HashMap<Ino, Vec<u8>>,
    content_synced: HashMap<Ino, Vec<u8>>,
    pending: Option<Pending>,
    steps: Vec<String>,
}

impl Model {
    /// The directory as it is, all of it taken as synced.
    fn all_synced(dir: &Path) -> Model {
        let mut model = Model {
            dir: dir.to_path_buf(),
            names_now: Names::new(),
            names_synced: Names::new(),
            content_now: HashMap::new(),
            content_synced: HashMap::new(),
            pending: None,
            steps: Vec::new(),
        };
        model.refresh();
        model.names_synced = model.names_now.clone();
        model.content_synced = model.content_now.clone();
        model
    }

    fn refresh(&mut self) {
        self.names_now.clear();
        for entry in fs::read_dir(&self.dir).expect("read the directory") {
            let entry = entry.expect("directory entry");
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let path = entry.path();
            let ino = fs::metadata(&path).expect("stat").ino();
            self.content_now.insert(ino, fs::read(&path).expect("read a file"));
            self.names_now.insert(name, ino);
        }
    }

    /// The previous step returned: its sync is durable.
    fn complete(&mut self) {
        match self.pending.take() {
            Some(Pending::File(ino, bytes)) => {
                self.content_synced.insert(ino, bytes);
            }
            Some(Pending::Dir(names)) => self.names_synced = names,
            None => {}
        }
    }

    fn note(&mut self, step: &Step<'_>) {
        self.steps.push(step_kind(step));
        self.pending = match step {
            Step::SyncData(path) | Step::SyncAll(path) => {
                let ino = self.names_now.get(&file_name(path)).copied();
                ino.map(|ino| Pending::File(ino, self.content_now.get(&ino).cloned().unwrap_or_default()))
            }
            Step::SyncDir(_) => Some(Pending::Dir(self.names_now.clone())),
            _ => None,
        };
    }

    /// Every image a crash now may leave.
    fn images(&self) -> Vec<(String, Image)> {
        let changed: Vec<&String> = (self.names_now.keys().chain(self.names_synced.keys()))
            .filter(|name| self.names_now.get(*name) != self.names_synced.get(*name))
            .collect();
        let mut images = Vec::new();
        for names_reached in subsets(&changed) {
            let mut names = self.names_synced.clone();
            for name in &names_reached {
                match self.names_now.get(*name) {
                    Some(ino) => names.insert((**name).clone(), *ino),
                    None => names.remove(*name),
                };
            }
            let unsynced: Vec<Ino> = (names.values().copied())
                .filter(|ino| self.content_synced.get(ino) != self.content_now.get(ino))
                .collect();
            for contents in every_way(&unsynced) {
                for missing_if_never_synced in [false, true] {
                    let image: Image = (names.iter())
                        .filter_map(|(name, ino)| {
                            let bytes = self.content(*ino, contents.get(ino).copied(), missing_if_never_synced)?;
                            Some((name.clone(), bytes))
                        })
                        .collect();
                    let label = format!(
                        "entries reached: {names_reached:?}; contents: {contents:?}; never synced missing: \
                         {missing_if_never_synced}"
                    );
                    images.push((label, image));
                }
            }
        }
        images
    }

    /// A file as of its last sync, or with what was written since, whole or torn.
    fn content(&self, ino: Ino, reached: Option<Reached>, missing_if_never_synced: bool) -> Option<Vec<u8>> {
        let synced = self.content_synced.get(&ino);
        let now = self.content_now.get(&ino).cloned().unwrap_or_default();
        match (reached.unwrap_or(Reached::Not), synced) {
            (Reached::Whole, _) => Some(now),
            (Reached::Torn, synced) => Some(torn(synced.map_or(&[][..], Vec::as_slice), &now)),
            (Reached::Not, Some(bytes)) => Some(bytes.clone()),
            (Reached::Not, None) if missing_if_never_synced => None,
            (Reached::Not, None) => Some(Vec::new()),
        }
    }
}

/// How much of a file's unsynced writes reached the disk.
#[derive(Clone, Copy, Debug)]
enum Reached {
    Not,
    Torn,
    Whole,
}

/// The first half of the new bytes over the old ones.
fn torn(old: &[u8], new: &[u8]) -> Vec<u8> {
    let half = new.len() / 2;
    (0..new.len().max(old.len().min(half)))
        .map(|i| {
            if i < half {
                new[i]
            } else {
                old.get(i).copied().unwrap_or(0)
            }
        })
        .take(new.len().max(half))
        .collect()
}

fn subsets<T: Copy>(items: &[T]) -> Vec<Vec<T>> {
    (0..1u32 << items.len())
        .map(|bits| {
            (0..items.len())
                .filter(|i| bits >> i & 1 == 1)
                .map(|i| items[i])
                .collect()
        })
        .collect()
}

fn every_way(inodes: &[Ino]) -> Vec<HashMap<Ino, Reached>> {
    let mut ways = vec![HashMap::new()];
    for ino in inodes {
        ways = (ways.into_iter())
            .flat_map(|way| {
                [Reached::Not, Reached::Torn, Reached::Whole].map(|reached| {
                    let mut way = way.clone();
                    way.insert(*ino, reached);
                    way
                })
            })
            .collect();
    }
    ways
}

fn file_name(path: &Path) -> String {
    path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned()
}

fn step_kind(step: &Step<'_>) -> String {
    let debug = format!("{step:?}");
    debug.split('(').next().unwrap_or_default().to_owned()
}

/// What document `name` reads as in `image`: `Ok(None)` if there is none.
fn read_back(image: &Image, name: &str) -> Result<Option<Value>, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    for (file, bytes) in image {
        fs::write(dir.path().join(file), bytes).expect("write the image");
    }
    let durable = Durable::open(dir.path().to_path_buf()).map_err(|e| e.to_string())?;
    durable.read::<Value>(name).map_err(|e| e.to_string())
}

struct Harness {
    model: Model,
    name: String,
    allowed: Vec<Option<Value>>,
    crash_points: usize,
    images: usize,
    failures: Vec<String>,
}

impl Harness {
    fn check(&mut self, at: &str) {
        self.crash_points += 1;
        for (label, image) in self.model.images() {
            self.images += 1;
            match read_back(&image, &self.name) {
                Ok(read) if self.allowed.contains(&read) => {}
                outcome => self.failures.push(format!(
                    "crash before {at}, image [{label}] {:?}: {outcome:?}, expected one of {:?}",
                    image.keys().collect::<Vec<_>>(),
                    self.allowed
                )),
            }
        }
    }
}

fn lock(harness: &Mutex<Harness>) -> MutexGuard<'_, Harness> {
    harness.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `new` over document `name` (holding `old`, synced) with every
/// crash point checked, and returns the kinds of step the write made.
fn write_with_power_cuts(durable: &Durable, name: &str, old: Option<Value>, new: Value) -> Vec<String> {
    let harness = Arc::new(Mutex::new(Harness {
        model: Model::all_synced(durable.dir()),
        name: name.to_owned(),
        allowed: vec![old, Some(new.clone())],
        crash_points: 0,
        images: 0,
        failures: Vec::new(),
    }));
    let observed = harness.clone();
    let watch = fsops::watch(
        durable.dir(),
        Arc::new(move |step: &Step<'_>| {
            let mut harness = lock(&observed);
            harness.model.refresh();
            harness.model.complete();
            harness.check(&format!("{step:?}"));
            harness.model.note(step);
            Ok(())
        }),
    );
    durable.write(name, &new, true).expect("write");
    drop(watch);
    let mut harness = lock(&harness);
    harness.model.refresh();
    harness.model.complete();
    harness.allowed = vec![Some(new)];
    harness.check("the return of the write");
    eprintln!(
        "{name}: steps {:?}, {} crash points, {} images",
        harness.model.steps, harness.crash_points, harness.images
    );
    assert!(
        harness.crash_points > 1,
        "{name}: the write made no step the harness saw"
    );
    assert!(
        harness.failures.is_empty(),
        "{name}: {} of {} images failed; the first ones:\n{}",
        harness.failures.len(),
        harness.images,
        harness.failures.iter().take(4).cloned().collect::<Vec<_>>().join("\n")
    );
    harness.model.steps.clone()
}

fn raft_dir() -> (tempfile::TempDir, Durable) {
    let dir = tempfile::tempdir().expect("tempdir");
    let durable = Durable::open(dir.path().join("raft")).expect("open");
    (dir, durable)
}

/// The steps a durable write makes, in order: the old document stays
/// under its name until the synced new one is renamed over it.
const DURABLE_WRITE: [&str; 5] = ["Create", "Write", "SyncData", "Rename", "SyncDir"];

#[test]
fn a_first_vote_is_absent_or_whole_after_a_crash_at_every_step() {
    let (_dir, durable) = raft_dir();
    let vote = json!({"leader_id": {"term": 1, "node_id": 3}, "committed": false});
    let steps = write_with_power_cuts(&durable, "vote", None, vote);
    assert_eq!(steps, DURABLE_WRITE);
}

#[test]
fn a_new_vote_replaces_the_old_one_whole_after_a_crash_at_every_step() {
    let (_dir, durable) = raft_dir();
    let old = json!({"leader_id": {"term": 4, "node_id": 1}, "committed": true});
    durable.write("vote", &old, true).expect("write");
    let new = json!({"leader_id": {"term": 5, "node_id": 2}, "committed": false});
    let steps = write_with_power_cuts(&durable, "vote", Some(old), new);
    assert_eq!(steps, DURABLE_WRITE);
}

#[test]
fn term_runs_purged_ids_and_tables_are_old_or_new_after_a_crash_at_every_step() {
    let (_dir, durable) = raft_dir();
    let runs = |n: u64| json!({"runs": (0..n).map(|i| [i * 10, i + 1]).collect::<Vec<_>>()});
    let table = |n: u64| json!({"keys": (0..n).map(|i| format!("key-{i}-{}", "x".repeat(40))).collect::<Vec<_>>()});
    let documents = [
        ("terms", runs(3), runs(300)),
        (
            "purged",
            json!({"leader_id": {"term": 1, "node_id": 1}, "index": 7}),
            json!(null),
        ),
        ("state", table(200), table(2)),
        ("node-id", json!(1), json!(2)),
    ];
    for (name, old, new) in documents {
        durable.write(name, &old, true).expect("write");
        // A leftover temporary file from an earlier crash is emptied, not appended to.
        fs::write(durable.dir().join(format!("{name}.tmp")), b"left by a crash").expect("write");
        let steps = write_with_power_cuts(&durable, name, Some(old), new);
        assert_eq!(steps, DURABLE_WRITE, "{name}");
    }
}

/// `raft/` is created inside a data directory whose log may already be on
/// disk: its name must be durable in the data directory before anything is
/// written in it, or a power cut could keep the segments and lose `raft/`
/// (the node would then take its log for a standalone one and refuse to
/// start). Opening creates it, then syncs the data directory.
#[test]
fn opening_makes_the_raft_directory_durable_in_its_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let steps: Arc<Mutex<Vec<(String, PathBuf)>>> = Arc::default();
    let seen = steps.clone();
    let watch = fsops::watch(
        dir.path(),
        Arc::new(move |step: &Step<'_>| {
            let mut seen = seen.lock().unwrap_or_else(PoisonError::into_inner);
            seen.push((step_kind(step), step.path().to_path_buf()));
            Ok(())
        }),
    );
    let raft = dir.path().join("raft");
    Durable::open(raft.clone()).expect("open");
    drop(watch);
    let steps = steps.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let created = steps
        .iter()
        .position(|(kind, path)| kind == "CreateDir" && *path == raft);
    let synced = steps
        .iter()
        .position(|(kind, path)| kind == "SyncDir" && path.as_path() == dir.path());
    assert!(
        created.is_some() && synced > created,
        "raft/ created, then its parent synced: {steps:?}"
    );
}
