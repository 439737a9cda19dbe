//! Crashes at the worst moment inside the Raft store, and a cluster data
//! directory opened without `--peers`: each leaves a node that restarts in a
//! state the design allows. They use the public store API (the segmented log
//! as openraft's log store and state machine) and
//! `openraft::storage::StorageHelper`, which is what `Raft::new` runs at
//! startup.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use distlog::cluster::{Cluster, ClusterConfig, Durable, LogStore, Member, StateMachine, TypeConfig};
use distlog::log::{Log, LogConfig};
use distlog::node::{Node as Server, NodeConfig};
use openraft::EntryPayload;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, StorageHelper};

type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;

fn id(term: u64, index: u64) -> LogId {
    LogId::new(openraft::vote::leader_id_std::CommittedLeaderId::new(term), index)
}

fn blank(term: u64, index: u64) -> Entry {
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Blank,
    }
}

fn membership(term: u64, index: u64) -> Entry {
    let nodes: BTreeMap<u64, Member> = [(
        1,
        Member {
            url: "http://127.0.0.1:9".into(),
            max_record_bytes: None,
            peer_url: None,
        },
    )]
    .into();
    let voters: BTreeSet<u64> = [1].into();
    Entry {
        log_id: id(term, index),
        payload: EntryPayload::Membership(openraft::Membership::new(vec![voters], nodes).expect("membership")),
    }
}

fn membership_of(node: u64) -> openraft::Membership<u64, Member> {
    let nodes: BTreeMap<u64, Member> = [(
        node,
        Member {
            url: "http://127.0.0.1:9".into(),
            max_record_bytes: None,
            peer_url: None,
        },
    )]
    .into();
    openraft::Membership::new(vec![[node].into()], nodes).expect("membership")
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "store" || e == "index")
}

fn copy_segments(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("dir") {
        let path = entry.expect("entry").path();
        if is_segment(&path) {
            std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
        }
    }
}

fn remove_segments(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("dir") {
        let path = entry.expect("entry").path();
        if is_segment(&path) {
            std::fs::remove_file(&path).expect("remove");
        }
    }
}

fn log_config() -> LogConfig {
    LogConfig {
        max_segment_bytes: 1 << 20,
        max_record_bytes: 64 * 1024,
        ..LogConfig::default()
    }
}

fn open(dir: &Path) -> (LogStore, StateMachine) {
    let log = Log::open(dir, log_config()).expect("log opens");
    let durable = Durable::open(dir.join("raft")).expect("raft dir");
    let store = LogStore::open(log, durable.clone()).expect("store opens");
    let sm = StateMachine::open(store.clone(), durable).expect("state machine opens");
    (store, sm)
}

/// The id a node takes when it starts on `dir` (after its storage checks),
/// with seeds that never answer: formation waits and nothing else is written.
async fn id_at_start(log: &Log, dir: &Path) -> u64 {
    let config = unanswered_seeds();
    let cluster = Cluster::start(log.clone(), dir, config, &Default::default())
        .await
        .expect("starts");
    let id = cluster.id();
    cluster.shutdown().await;
    id
}

/// A node's settings with seeds that never answer.
fn unanswered_seeds() -> ClusterConfig {
    ClusterConfig {
        peers: vec!["http://127.0.0.1:9".into()],
        advertise_url: "http://127.0.0.1:8".into(),
        peer_url: None,
        routes: HashMap::new(),
        heartbeat: Duration::from_millis(100),
        election_timeout: (Duration::from_millis(300), Duration::from_millis(600)),
        write_timeout: Duration::from_secs(5),
        ready_lag: 2000,
        replica_timeout: Duration::from_secs(600),
        bootstrap_expect: 1,
        rejoin: false,
        forward_writes: false,
        append_window: 8,
        pulses: Default::default(),
        client: reqwest::Client::new(),
    }
}

/// What kill -9 leaves: nothing more is written (the page cache keeps
/// what was).
fn crash(store: LogStore, sm: StateMachine) {
    store.log().close().expect("close");
    drop(sm);
    drop(store);
}

/// `StateMachine::install_snapshot` resets the log to start after the
/// snapshot *before* it records the snapshot and the tables. A process
/// that dies in between (kill -9, or a failed write of the snapshot
/// document) comes back with an empty log past the snapshot, the old
/// tables (applied behind) and the committed mark (ahead of applied, as it
/// is after every apply batch until the tables are written behind):
/// openraft's startup re-applies `(applied, committed]` from a log that no
/// longer holds it and fails, at every restart. `repair::check` does not
/// notice (both marks are below the reset log's first index).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_crashed_inside_install_snapshot_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, mut sm) = open(dir.path());
    // A follower's log: 0..10 in term 1; entry 4 is a membership change,
    // so applying it writes the tables at once (applied = 4).
    let entries: Vec<Entry> = (0..10)
        .map(|i| if i == 4 { membership(1, i) } else { blank(1, i) })
        .collect();
    store.blocking_append(entries.clone()).await.expect("append");
    let applied = entries[..5].iter().cloned().map(|e| Ok::<_, std::io::Error>((e, None)));
    sm.apply(futures_util::stream::iter(applied)).await.expect("apply");
    // openraft saves committed = 8 right before it applies 5..=8; the
    // tables are written behind (200 ms), the committed mark at once.
    store.save_committed(Some(id(1, 8))).await.expect("save committed");
    // The leader (which purged up to 20) sends snapshot 20. Since the fix,
    // `install_snapshot` writes the snapshot and the tables first and then
    // resets the log: the process dying in between leaves the tables and
    // snapshot of 20 with the old log. That state is made here by keeping a
    // copy of the segment files from before the install and putting it
    // back after it (as if the reset never happened).
    let saved = tempfile::tempdir().expect("tempdir");
    store.log().sync().expect("sync");
    copy_segments(dir.path(), saved.path());
    let meta = openraft::type_config::alias::SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(id(1, 20)),
        last_membership: openraft::StoredMembership::new(Some(id(1, 4)), membership_of(1)),
    };
    let mut tables = sm.tables();
    tables.applied = Some(id(1, 20));
    sm.install_snapshot(&meta, tables).await.expect("install");
    crash(store, sm);
    remove_segments(dir.path());
    copy_segments(saved.path(), dir.path());
    let (mut store, mut sm) = open(dir.path());
    let state = StorageHelper::new(&mut store, &mut sm)
        .with_id(1)
        .get_initial_state()
        .await;
    assert!(
        state.is_ok(),
        "a node that died inside install_snapshot cannot start again: {}",
        state.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

/// The same crash inside `install_snapshot`, on a node whose log holds
/// another entry at the snapshot's index (a deposed leader's uncommitted
/// tail of term 1 past index 20, the snapshot at (2, 20)). A review
/// reasoned that the start, taking the tables back to that snapshot
/// (applied (2, 20)) over a log ending at (1, 29), would be refused by
/// openraft on every start ("inverted log order"); this holds that it is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_install_snapshot_over_a_conflicting_tail_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, mut sm) = open(dir.path());
    let entries: Vec<Entry> = (0..30)
        .map(|i| if i == 4 { membership(1, i) } else { blank(1, i) })
        .collect();
    store.blocking_append(entries.clone()).await.expect("append");
    let applied = entries[..5].iter().cloned().map(|e| Ok::<_, std::io::Error>((e, None)));
    sm.apply(futures_util::stream::iter(applied)).await.expect("apply");
    let saved = tempfile::tempdir().expect("tempdir");
    store.log().sync().expect("sync");
    copy_segments(dir.path(), saved.path());
    let meta = openraft::type_config::alias::SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(id(2, 20)),
        last_membership: openraft::StoredMembership::new(Some(id(1, 4)), membership_of(1)),
    };
    let mut tables = sm.tables();
    tables.applied = Some(id(2, 20));
    sm.install_snapshot(&meta, tables).await.expect("install");
    crash(store, sm);
    remove_segments(dir.path());
    copy_segments(saved.path(), dir.path());
    let (mut store, mut sm) = open(dir.path());
    let rolled = sm.clone();
    tokio::task::spawn_blocking(move || rolled.forget_applied_past_log())
        .await
        .expect("joined")
        .expect("the start's roll-back");
    let state = StorageHelper::new(&mut store, &mut sm)
        .with_id(1)
        .get_initial_state()
        .await;
    assert!(
        state.is_ok(),
        "a node that died inside install_snapshot over a conflicting tail cannot start again: {}",
        state.err().map(|e| e.to_string()).unwrap_or_default()
    );
}

/// Repair of a faulty log (`Cluster::start`): `keep_sound_prefix` cuts the
/// log and lowers the flushed and committed marks to what it holds
/// (synced), and only then is the new node id written. A process that dies
/// in between (kill -9; or `durable.write(NODE_ID)` failing, e.g. on the
/// full disk that often comes with a storage fault) restarts with marks
/// that no longer show the fault and the old node id: it votes and counts
/// towards commits under the id whose acknowledged entries it lost, which
/// is what the repair exists to prevent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_interrupted_before_the_new_id_is_written_never_comes_back_under_the_old_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    const OLD_ID: u64 = 7;
    {
        let (mut store, sm) = open(dir.path());
        Durable::open(dir.path().join("raft"))
            .expect("raft dir")
            .write("node-id", &OLD_ID, true)
            .expect("node id");
        // Acknowledged to a leader: flushed = (1, 9).
        store
            .blocking_append((0..10).map(|i| blank(1, i)))
            .await
            .expect("append");
        assert_eq!(store.flushed(), Some(id(1, 9)));
        // The disk loses the tail: entries 5..=9 are gone.
        store.log().cut_after(4).expect("cut");
        // Since the fix the repair writes the new id first, then runs
        // `repair::keep_sound_prefix` for `Fault::Short`; the process dies
        // right after it (before the node ever starts Raft).
        Durable::open(dir.path().join("raft"))
            .expect("raft dir")
            .write("node-id", &(OLD_ID + 1), true)
            .expect("new node id");
        store.forget_marks_past_log().expect("forget marks");
        crash(store, sm);
    }
    let log = Log::open(dir.path(), log_config()).expect("log opens");
    let id_now = id_at_start(&log, dir.path()).await;
    assert_ne!(
        id_now, OLD_ID,
        "the node lost entries 5..=9 it had acknowledged as node {OLD_ID}, and is back as node {OLD_ID}"
    );
}

/// A cluster member's data directory opened without `--peers` (a missing
/// DISTLOG_PEERS on a restart) serves as a standalone leader: records it
/// takes land after the Raft entries with no term run of their own, so on
/// the next start with `--peers` they read as entries of the last term
/// (`Terms::term_at`), with the same log ids as the entries the real
/// leader wrote at those offsets. openraft skips entries whose ids match,
/// so the node keeps different records at committed offsets for good.
/// The reverse direction is refused (`StartError::StandaloneLog`); this
/// one is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_data_dir_is_refused_without_peers() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (mut store, sm) = open(dir.path());
        store
            .blocking_append((0..3).map(|i| blank(1, i)))
            .await
            .expect("append");
        crash(store, sm);
    }
    let config = NodeConfig {
        log: log_config(),
        ..NodeConfig::new(dir.path())
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    if let Ok(server) = Server::start(config, listener).await {
        // What it would take: a POST now lands at offset 3 ...
        let _ = server.shutdown().await;
        let path = dir.path().to_path_buf();
        let offset = tokio::task::spawn_blocking(move || {
            let log = Log::open(&path, log_config()).expect("log opens");
            let offset = log
                .append_batch(&[distlog::log::Payload::new(b"{\"standalone\":true}")])
                .expect("append");
            log.close().expect("close");
            offset
        })
        .await
        .expect("standalone append");
        // ... and the Raft log now claims it as entry (term 1, index 3).
        let (store, sm) = open(dir.path());
        let claimed = store.last_id();
        crash(store, sm);
        panic!(
            "a cluster data directory served standalone; the standalone record at offset {offset} reads back as Raft entry {claimed:?}"
        );
    }
}

/// `LogStore::truncate_after` cuts the log first and lowers the flushed
/// mark in a second step. A process that dies in between (kill -9 while a
/// new leader takes back uncommitted entries) comes back with a flushed
/// mark past its log: `repair::check` calls that a storage fault, and a
/// healthy node gives up its id and rejoins as a learner, leaving its old
/// id a silent voter (a 3-node cluster with one other node down stalls
/// until the catch-up ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_truncate_after_is_not_a_storage_fault() {
    let dir = tempfile::tempdir().expect("tempdir");
    const OLD_ID: u64 = 7;
    {
        let (mut store, sm) = open(dir.path());
        Durable::open(dir.path().join("raft"))
            .expect("raft dir")
            .write("node-id", &OLD_ID, true)
            .expect("node id");
        store
            .blocking_append((0..10).map(|i| blank(1, i)))
            .await
            .expect("append");
        // truncate_after(Some((1, 4))), then the process dies. Since the fix
        // the flushed mark comes down before the cut, so every crash point
        // inside it leaves a mark the log holds; the end state is checked.
        store.truncate_after(Some(id(1, 4))).await.expect("truncate");
        crash(store, sm);
    }
    let log = Log::open(dir.path(), log_config()).expect("log opens");
    let id_now = id_at_start(&log, dir.path()).await;
    assert_eq!(
        id_now, OLD_ID,
        "entries Raft truncated on purpose were taken for lost ones: a healthy node gave up its id"
    );
}

/// A read of the Raft log takes each entry's term from the term table. It
/// used to read the frames first and the table after: a truncation and a
/// rewrite in between (a leader stepping down while a replication task
/// reads) labelled old frames with the new term. Every record here names
/// its own term; reads race truncations and rewrites, from disk (the
/// recent-entries cache forgotten before each read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_truncations_never_label_a_record_with_another_term() {
    use openraft::storage::RaftLogReader;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _sm) = open(dir.path());
    let record = |term: u64, index: u64| Entry {
        log_id: id(term, index),
        payload: EntryPayload::Normal(distlog::cluster::UserRecord::new(
            0,
            0,
            bytes::Bytes::from(term.to_string()),
        )),
    };
    store
        .blocking_append((0..60).map(|i| record(1, i)))
        .await
        .expect("append");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = tokio::spawn({
        let mut store = store.clone();
        let stop = stop.clone();
        async move {
            let mut reader = store.get_log_reader().await;
            let (mut reads, mut mislabelled) = (0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                store.forget_recent();
                if let Ok(entries) = reader.try_get_log_entries(20..60).await {
                    for e in entries {
                        if let EntryPayload::Normal(r) = &e.payload
                            && r.value != e.log_id.committed_leader_id().term.to_string().as_bytes()
                        {
                            mislabelled.push(format!("{} holds {:?}", e.log_id, r.value));
                        }
                    }
                }
                reads += 1;
            }
            (reads, mislabelled)
        }
    });
    for term in 2..200u64 {
        store.truncate_after(Some(id(1, 19))).await.expect("truncate");
        store
            .blocking_append((20..60).map(|i| record(term, i)))
            .await
            .expect("append");
    }
    stop.store(true, Ordering::Relaxed);
    let (reads, mislabelled) = reader.await.expect("reader");
    assert!(reads > 10, "too few reads to prove anything: {reads}");
    assert!(
        mislabelled.is_empty(),
        "{} of them, in {reads} reads: {:?}",
        mislabelled.len(),
        &mislabelled[..mislabelled.len().min(5)]
    );
}

/// A full disk under the Raft log: openraft takes any error of its log
/// storage as fatal, so an append that met ENOSPC stopped the node's Raft
/// core until a restart, while a standalone log resumes once space is
/// freed (and retention, which runs through Raft, could not free any). The
/// store now waits for room and says so (`disk_full`); the append
/// completes once space is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_that_meets_a_full_disk_waits_for_room_instead_of_failing() {
    use distlog::log::fsops::{self, Step};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, _sm) = open(dir.path());
    store
        .blocking_append((0..5).map(|i| blank(1, i)))
        .await
        .expect("append");
    let full = Arc::new(AtomicBool::new(true));
    let _watch = fsops::watch(
        dir.path(),
        Arc::new({
            let full = full.clone();
            move |step: &Step<'_>| match step {
                Step::Allocate(..) | Step::Write(..) if full.load(Ordering::SeqCst) => {
                    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
                }
                _ => Ok(()),
            }
        }),
    );
    // Entries big enough that the store must grow for them.
    let big = |index: u64| Entry {
        log_id: id(1, index),
        payload: EntryPayload::Normal(distlog::cluster::UserRecord::new(
            0,
            0,
            bytes::Bytes::from(vec![b'x'; 60 * 1024]),
        )),
    };
    let appending = tokio::spawn({
        let mut store = store.clone();
        async move { store.blocking_append((5..40).map(big)).await }
    });
    let waiting = async {
        while !store.disk_full() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(10), waiting).await.is_err() {
        let answer = tokio::time::timeout(Duration::from_secs(5), appending).await;
        panic!("the append did not wait for room: {answer:?}");
    }
    assert!(!appending.is_finished(), "it waits while the disk is full");
    full.store(false, Ordering::SeqCst);
    let done = tokio::time::timeout(Duration::from_secs(10), appending).await;
    assert!(
        matches!(done, Ok(Ok(Ok(_)))),
        "room again: the append completes: {done:?}"
    );
    assert!(!store.disk_full());
    assert_eq!(store.log().written_offset(), 40);
}

/// The same with retention set and whole segments it would delete: the
/// waiting append held openraft's core, so retention (a snapshot and a
/// purge through that core) could not free anything. The store now gives
/// back its disk reserve, the append goes on, and retention is woken at
/// once; the reserve is made again once there is room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_that_retention_could_free_gives_back_the_reserve_and_wakes_retention() {
    use distlog::log::fsops::{self, Step};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        max_segment_bytes: 256 * 1024,
        retention_bytes: Some(256 * 1024),
        ..log_config()
    };
    let log = Log::open(dir.path(), config).expect("log opens");
    let mut store =
        LogStore::open(log, Durable::open(dir.path().join("raft")).expect("raft dir")).expect("store opens");
    let reserve = dir.path().join("raft").join("reserve.appends");
    assert!(reserve.exists(), "the reserve is made at start");
    let big = |index: u64| Entry {
        log_id: id(1, index),
        payload: EntryPayload::Normal(distlog::cluster::UserRecord::new(
            0,
            0,
            bytes::Bytes::from(vec![b'x'; 2 * 1024]),
        )),
    };
    // Past retention's margin of 1,000 entries behind readers' end (what
    // is applied), by more than the oldest segment. The append below
    // rolls a segment (an allocation the full disk refuses).
    store.blocking_append((0..1400).map(big)).await.expect("append");
    assert!(store.log().active_base() > 0, "sealed segments for retention to delete");

    // The log's files get no room until the reserve is given back.
    let full = Arc::new(AtomicBool::new(true));
    let _watch = fsops::watch(
        dir.path(),
        Arc::new({
            let full = full.clone();
            let reserve = reserve.clone();
            move |step: &Step<'_>| match step {
                Step::Remove(path) if *path == reserve => {
                    full.store(false, Ordering::SeqCst);
                    Ok(())
                }
                Step::Allocate(..) | Step::Write(..) if full.load(Ordering::SeqCst) => {
                    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
                }
                _ => Ok(()),
            }
        }),
    );
    let appended = tokio::time::timeout(Duration::from_secs(10), store.blocking_append((1400..1600).map(big))).await;
    assert!(
        matches!(appended, Ok(Ok(_))),
        "the append did not go on with the reserve's room: {appended:?} (waiting: {})",
        store.disk_full()
    );
    assert!(!reserve.exists(), "the reserve was given back");
    let woken = tokio::time::timeout(Duration::from_secs(1), store.retention_wanted().notified()).await;
    assert!(woken.is_ok(), "retention was not woken");
    // New entries must not take the room retention's snapshot and purge
    // need (a review finding): refused until the purge.
    assert!(store.refuses_new_entries(), "new entries are taken before the purge");
    store.purge(id(1, 399)).await.expect("purge");
    assert!(!store.refuses_new_entries(), "new entries are refused after the purge");

    store.make_reserve();
    assert!(reserve.exists(), "the reserve is made again once there is room");
}

/// `install_snapshot` on a node whose log does not reach the snapshot
/// resets a multi-segment log: the new segment first, then the old ones,
/// newest first. A crash in between leaves the oldest old segments and the
/// new empty one, and the flushed and committed marks name entries of the
/// segments already gone: the next start took that for a storage fault and
/// came back under a new id (then rejoined as a learner). The marks come
/// down before the reset now: the snapshot, written before, holds what
/// they named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_snapshot_installs_reset_is_not_a_storage_fault() {
    use distlog::log::fsops::{self, Step};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const OLD_ID: u64 = 7;
    let dir = tempfile::tempdir().expect("tempdir");
    let small = || LogConfig {
        max_segment_bytes: 8 * 1024,
        max_record_bytes: 4 * 1024,
        ..log_config()
    };
    {
        let log = Log::open(dir.path(), small()).expect("log opens");
        let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
        durable.write("node-id", &OLD_ID, true).expect("node id");
        let mut store = LogStore::open(log, durable.clone()).expect("store opens");
        let mut sm = StateMachine::open(store.clone(), durable).expect("state machine opens");
        let record = |index: u64| Entry {
            log_id: id(1, index),
            payload: EntryPayload::Normal(distlog::cluster::UserRecord::new(
                0,
                0,
                bytes::Bytes::from(vec![b'r'; 1024]),
            )),
        };
        store.blocking_append((0..60).map(record)).await.expect("append");
        store.save_committed(Some(id(1, 59))).await.expect("committed");
        assert!(store.log().stats().segments > 3, "a log of several segments");
        // The reset stops (as a crash would) once the newest segment is gone.
        let removals = Arc::new(AtomicUsize::new(0));
        let _watch = fsops::watch(
            dir.path(),
            Arc::new({
                let removals = removals.clone();
                move |step: &Step<'_>| match step {
                    Step::Remove(_) if removals.fetch_add(1, Ordering::SeqCst) >= 2 => {
                        Err(std::io::Error::other("the process died here"))
                    }
                    _ => Ok(()),
                }
            }),
        );
        let meta = openraft::type_config::alias::SnapshotMetaOf::<TypeConfig> {
            last_log_id: Some(id(1, 100)),
            last_membership: openraft::StoredMembership::new(Some(id(1, 0)), membership_of(1)),
        };
        let mut tables = sm.tables();
        tables.applied = Some(id(1, 100));
        let _ = sm.install_snapshot(&meta, tables).await;
        assert!(
            removals.load(Ordering::SeqCst) >= 3,
            "the reset removed the newest segment"
        );
        drop(_watch);
        // The writer failed half-way: close says so; what is on disk stays.
        let _ = store.log().close();
        drop(sm);
        drop(store);
    }
    let log = Log::open(dir.path(), small()).expect("a log reset half-way opens");
    let id_now = id_at_start(&log, dir.path()).await;
    assert_eq!(
        id_now, OLD_ID,
        "a crash inside a snapshot's reset was taken for a storage fault (a new id)"
    );
}

/// A review finding: a start whose log lost applied entries (a power cut
/// with write caching) rewrote the tables (`forget_applied_past_log`)
/// with a plain `write_tables`, not `with_room`: on a full disk the start
/// failed, every time, while `reserve.marks` still held the room it needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_rolls_the_tables_back_on_a_full_disk_uses_the_reserve() {
    use distlog::cluster::Tables;
    use distlog::log::fsops::{self, Step};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), log_config()).expect("log opens");
    let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
    let mut store = LogStore::open(log, durable.clone()).expect("store opens");
    store
        .blocking_append((0..20).map(|i| blank(1, i)))
        .await
        .expect("append");
    // The tables name entries a power cut took from the log.
    let ahead = Tables {
        applied: Some(id(1, 30)),
        ..Tables::default()
    };
    durable.write("state", &ahead, true).expect("tables");
    let marks = dir.path().join("raft").join("reserve.marks");
    assert!(marks.exists(), "reserve.marks made at start");
    // The disk is full until a reserve is given back.
    let full = Arc::new(AtomicBool::new(true));
    let _watch = fsops::watch(
        dir.path(),
        Arc::new({
            let full = full.clone();
            move |step: &Step<'_>| match step {
                Step::Remove(path)
                    if path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("reserve.")) =>
                {
                    full.store(false, Ordering::SeqCst);
                    Ok(())
                }
                Step::Create(..) | Step::Allocate(..) | Step::Write(..) if full.load(Ordering::SeqCst) => {
                    Err(std::io::Error::from_raw_os_error(libc::ENOSPC))
                }
                _ => Ok(()),
            }
        }),
    );
    let sm = StateMachine::open(store.clone(), durable.clone()).expect("sm opens");
    let rolled = tokio::task::spawn_blocking(move || sm.forget_applied_past_log())
        .await
        .expect("joined");
    assert!(
        rolled.is_ok(),
        "the start fails on a full disk though reserve.marks (exists: {}) holds room: {rolled:?}",
        marks.exists()
    );
}

/// Issue 19 item 15: a follower that installs a snapshot taken while a
/// batch was being applied (its tables hold readers below the batch's
/// first record) has its log start after the snapshot, while readers were
/// held at that first record: `next_offset` was below `lowest_offset`
/// until the batch's last record was applied. Readers' bounds never cross.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_mid_batch_never_shows_next_offset_below_lowest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut store, mut sm) = open(dir.path());
    store
        .blocking_append((0..5).map(|i| blank(1, i)))
        .await
        .expect("append");
    // The leader's snapshot: applied up to 20, a batch open from 18.
    let meta = openraft::type_config::alias::SnapshotMetaOf::<TypeConfig> {
        last_log_id: Some(id(1, 20)),
        last_membership: openraft::StoredMembership::new(Some(id(1, 0)), membership_of(1)),
    };
    let mut tables = sm.tables();
    tables.applied = Some(id(1, 20));
    tables.open_batch_from = Some(18);
    sm.install_snapshot(&meta, tables).await.expect("install");
    let log = store.log();
    assert_eq!(log.lowest_offset(), 21, "the log starts after the snapshot");
    assert!(
        log.next_offset() >= log.lowest_offset(),
        "next_offset {} below lowest_offset {}",
        log.next_offset(),
        log.lowest_offset()
    );
    let stats = log.stats();
    assert!(stats.next_offset >= stats.lowest_offset, "{stats:?}");
}

/// Issue 19 item 15: the table of hidden ranges (aborted batches,
/// duplicates, failed conditions) only grew. Once the log no longer holds
/// a range, the tables written and the snapshot built forget it; a range
/// the log still reaches stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_ranges_the_log_no_longer_holds_are_forgotten() {
    use distlog::log::attributes::BATCH_OPEN;
    use openraft::storage::RaftSnapshotBuilder;
    let dir = tempfile::tempdir().expect("tempdir");
    // Segments of a few entries, so that the purge deletes whole segments
    // below 9: readers reach nothing below the first segment left.
    let log = Log::open(
        dir.path(),
        LogConfig {
            max_segment_bytes: 256,
            max_record_bytes: 64,
            ..log_config()
        },
    )
    .expect("log opens");
    let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
    let mut store = LogStore::open(log, durable.clone()).expect("store opens");
    let mut sm = StateMachine::open(store.clone(), durable).expect("state machine opens");
    let open_record = |index: u64| Entry {
        log_id: id(1, index),
        payload: EntryPayload::Normal(distlog::cluster::UserRecord::new(
            BATCH_OPEN,
            1,
            bytes::Bytes::from_static(b"cut short"),
        )),
    };
    // A batch opened at 1 and at 12, each cut short by a blank entry.
    let entries: Vec<Entry> = (0..20)
        .map(|i| if i == 1 || i == 12 { open_record(i) } else { blank(1, i) })
        .collect();
    store.blocking_append(entries.clone()).await.expect("append");
    let applied = entries.into_iter().map(|e| Ok::<_, std::io::Error>((e, None)));
    sm.apply(futures_util::stream::iter(applied)).await.expect("apply");
    assert_eq!(sm.tables().aborted, vec![(1, 2), (12, 13)]);
    store.purge(id(1, 9)).await.expect("purge");
    assert_eq!(store.first_index(), 10);
    let lowest = store.log().lowest_offset();
    assert!(
        (3..=10).contains(&lowest),
        "whole segments went: the log starts at {lowest}"
    );
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("snapshot");
    assert_eq!(
        snapshot.snapshot.aborted,
        vec![(12, 13)],
        "the snapshot forgets the range below the log and keeps the one in it"
    );
    assert_eq!(sm.tables().aborted, vec![(12, 13)], "and so do the tables");
}

/// The third review (issue 19 item 15): with write caching a snapshot
/// syncs the log before it names applied entries, and that sync was not
/// inside `with_room`: a full disk there (an index's flush) failed the
/// snapshot, which stops the Raft core until a restart. It waits for room
/// like the snapshot's documents now (here the marks' reserve makes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_whose_log_sync_meets_a_full_disk_waits_for_room() {
    use distlog::log::Durability;
    use distlog::log::fsops::{self, Step};
    use openraft::storage::RaftSnapshotBuilder;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        durability: Durability::Never,
        ..log_config()
    };
    let log = Log::open(dir.path(), config).expect("log opens");
    let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
    let mut store = LogStore::open(log, durable.clone()).expect("store opens");
    let mut sm = StateMachine::open(store.clone(), durable).expect("state machine opens");
    let entries: Vec<Entry> = (0..5).map(|i| blank(1, i)).collect();
    store.blocking_append(entries.clone()).await.expect("append");
    let applied = entries.into_iter().map(|e| Ok::<_, std::io::Error>((e, None)));
    sm.apply(futures_util::stream::iter(applied)).await.expect("apply");
    let failed = Arc::new(AtomicBool::new(false));
    let _full = fsops::watch(
        dir.path(),
        Arc::new({
            let failed = failed.clone();
            move |step: &Step<'_>| match step {
                Step::FlushMap(path)
                    if path.extension().is_some_and(|x| x == "index") && !failed.swap(true, Ordering::SeqCst) =>
                {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::StorageFull,
                        "no space left on device",
                    ))
                }
                _ => Ok(()),
            }
        }),
    );
    let built = sm.get_snapshot_builder().await.build_snapshot().await;
    assert!(failed.load(Ordering::SeqCst), "the index flush met the full disk");
    assert!(built.is_ok(), "the snapshot failed: {:?}", built.err());
}

/// Issue 19 item 15: a start that moves a corrupt sealed segment and those
/// after it aside writes its plan first; one that dies before the moves
/// are done finishes them at the next start, before the log opens, and
/// then repairs under a new id: the log ends where the moved segments
/// began, or, when every segment moved (the first one was bad), starts
/// over empty where Raft expects it (after the snapshot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_died_moving_segments_aside_finishes_and_repairs_under_a_new_id() {
    const OLD_ID: u64 = 7;
    for first_bad in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let small = || LogConfig {
            max_segment_bytes: 8 * 1024,
            max_record_bytes: 4 * 1024,
            ..log_config()
        };
        let bases = {
            let log = Log::open(dir.path(), small()).expect("log opens");
            let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
            durable.write("node-id", &OLD_ID, true).expect("node id");
            durable
                .write("node-url", &"http://127.0.0.1:8", true)
                .expect("node url");
            let mut store = LogStore::open(log, durable.clone()).expect("store opens");
            let record = |index: u64| Entry {
                log_id: id(1, index),
                payload: EntryPayload::Normal(distlog::cluster::UserRecord::new(
                    0,
                    0,
                    bytes::Bytes::from(vec![b'r'; 1024]),
                )),
            };
            let mut sm = StateMachine::open(store.clone(), durable.clone()).expect("state machine opens");
            let entries: Vec<Entry> = (0..60).map(record).collect();
            store.blocking_append(entries.clone()).await.expect("append");
            store.save_committed(Some(id(1, 59))).await.expect("committed");
            let bases = store.log().segment_bases();
            assert!(bases.len() > 4, "a log of several segments: {bases:?}");
            let upto = bases[1] as usize;
            let applied = entries[..=upto]
                .iter()
                .cloned()
                .map(|e| Ok::<_, std::io::Error>((e, None)));
            sm.apply(futures_util::stream::iter(applied)).await.expect("apply");
            // Retention snapshotted and purged the oldest segment.
            use openraft::storage::RaftSnapshotBuilder;
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .expect("snapshot");
            store.purge(id(1, bases[1] - 1)).await.expect("purge");
            let snapshot_end = bases[1] + 1;
            let bases = store.log().segment_bases();
            assert_eq!(store.first_index(), bases[0]);
            store.log().close().expect("close");
            // The plan, as a start that found the segment at `bad` corrupt
            // wrote it, and the newest segment already moved.
            let bad = if first_bad { bases[0] } else { bases[2] };
            let moving: Vec<u64> = bases.iter().copied().filter(|b| *b >= bad).collect();
            let plan = serde_json::json!({
                "base": bad, "bases": moving, "dir": "quarantine/1", "reason": "checksum mismatch"
            });
            durable.write("quarantine", &plan, true).expect("plan");
            let newest = *bases.last().expect("segments");
            std::fs::create_dir_all(dir.path().join("quarantine/1")).expect("quarantine dir");
            let name = format!("{newest:020}.store");
            std::fs::rename(dir.path().join(&name), dir.path().join("quarantine/1").join(&name)).expect("moved");
            (bases, bad, snapshot_end)
        };
        let (bases, bad, snapshot_end) = bases;
        // The dropped store's background tasks may hold the directory's lock
        // a moment longer (seen once in CI: `Locked`).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let log = loop {
            match distlog::cluster::open_member_log(dir.path(), small(), &unanswered_seeds()).await {
                Err(distlog::cluster::OpenError::Log(distlog::log::LogError::Locked(_)))
                    if std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                opened => break opened.expect("the moves are finished and the log opens"),
            }
        };
        for base in bases.iter().filter(|b| **b >= bad) {
            let moved = dir.path().join("quarantine/1").join(format!("{base:020}.store"));
            assert!(moved.exists(), "first_bad {first_bad}: {moved:?} moved aside");
        }
        let new_id = id_at_start(&log, dir.path()).await;
        assert_ne!(
            new_id, OLD_ID,
            "first_bad {first_bad}: a log that lost entries takes a new id"
        );
        assert!(
            !dir.path().join("raft/quarantine").exists(),
            "first_bad {first_bad}: the plan is done"
        );
        let (lowest, next) = (log.lowest_offset(), log.written_offset());
        match first_bad {
            // Every segment moved: the log starts over after the snapshot.
            true => assert_eq!((lowest, next), (snapshot_end, snapshot_end)),
            false => assert_eq!((lowest, next), (bases[0], bad)),
        }
    }
}
