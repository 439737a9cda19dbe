//! A member's log whose sealed segment fails its check at open: the
//! segment and every one after it move aside, never deleted, when the
//! cluster can supply them again; otherwise the start is refused.
//!
//! The engine checks a sealed segment's last record (and that it holds the
//! offsets up to the next base) at open, and refuses the log there. The
//! records from the bad segment on can be taken away only if another node
//! holds every committed one among them. What a node can know before it
//! starts: whether it is a cluster member at all (a `raft/` directory; a
//! standalone log started with `--peers` is refused first, untouched), its
//! saved vote, and what the seeds answer. A leader in touch with a majority
//! in a term not behind the saved vote (`recovery::live_leader`) holds
//! every entry committed in the terms this node has seen: the cut loses
//! nothing committed, and the node catches up from it. Without one (a
//! one-node cluster, a majority with the same fault, a whole cluster
//! restarting) nothing moves, and the error says what to do
//! (docs/operations.md).
//!
//! The cut, in a crash-safe order:
//! 1. `raft/quarantine` (this module's `Plan`, synced) names the segments
//!    to move and where: `<data dir>/quarantine/<unix ms>/`;
//! 2. the files move (`Log::move_segments_aside`); a start that finds the
//!    plan finishes the moves before it opens the log;
//! 3. the start takes the plan for a storage fault (`repair`): a new id,
//!    recorded before the log's marks come down to what is left, so the
//!    node never votes under its old id on a log that lost what it
//!    acknowledged; it joins again and catches up (`formation`);
//! 4. the plan goes (`done`) once that repair is on disk.
//!
//! A frame that the start's checksum scan finds corrupt inside a segment
//! (`repair::Fault::Corrupt`) is held to the same rule before the log is
//! cut in front of it (`allow_cut`): a live leader listing this node's id,
//! or the start is refused with every file as it was. The decision is
//! synced (`raft/cut`) before the new id is recorded, so that a start that
//! a crash interrupted after that goes on with the cut rather than asking
//! again under an id no leader knows yet; it goes once the repair is on
//! disk (`cut_done`).
//!
//! Disk format: `raft/quarantine` is a `durable` document,
//! `{"base": <first offset moved>, "bases": [<segment bases>], "dir": "<dir>", "reason": "..."}`;
//! `raft/cut` is `{"offset": <the corrupt frame's offset>, "reason": "..."}`.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::durable::Durable;
use super::log_store::LogStore;
use super::node::ClusterConfig;
use super::recovery;
use crate::log::{Log, LogConfig, LogError, fsops};

/// Why a member's log does not open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "{dir} holds a standalone log (no raft/ directory) with a corrupt sealed segment: {error}. Nothing was moved or deleted. Start it without --peers to see it refused the same way, and restore it from a backup (docs/operations.md)"
    )]
    CorruptStandalone { dir: String, error: String },
    #[error(
        "{0}. This member's log is corrupt, and no leader in touch with a majority answered: this node may hold the only copy of committed records past the bad spot (a one-node cluster, or most members down), so nothing was moved or deleted. If the other members are starting, start this one again once they have a leader: it will then set the bad part aside (a sealed segment moved aside, or the log cut before a bad frame) and catch up. Otherwise see docs/operations.md (a corrupt sealed segment)"
    )]
    CorruptAlone(String),
    #[error(transparent)]
    Log(LogError),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("opening the log failed: {0}")]
    Task(String),
}

/// The plan's document in `raft/`.
const PLAN: &str = "quarantine";
/// Where moved segments go, under the data directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// A cut under way (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The first offset moved: the corrupt segment's base.
    pub base: u64,
    /// The segments to move, named by base.
    pub bases: Vec<u64>,
    /// Where they go, relative to the data directory.
    pub dir: PathBuf,
    /// The open's error.
    pub reason: String,
    /// The whole member goes: every segment there is when the moves run,
    /// and every file of `raft/` but this plan (its snapshot, tables, marks,
    /// vote and id), so that the next start is an empty data directory's
    /// (`contradiction`).
    #[serde(default)]
    pub whole: bool,
}

/// Opens a member's log in `data_dir`, moving a corrupt sealed segment and
/// those after it aside where that is safe (see the module doc).
pub async fn open_member_log(data_dir: &Path, config: LogConfig, cluster: &ClusterConfig) -> Result<Log, OpenError> {
    let raft_dir = data_dir.join("raft");
    if raft_dir.is_dir() {
        let durable = Durable::open(raft_dir.clone())?;
        if let Some(plan) = pending(&durable)? {
            blocking({
                let dir = data_dir.to_path_buf();
                move || finish_moves(&dir, &plan).map(|_| ())
            })
            .await?;
        }
    }
    let error = match open(data_dir, &config).await? {
        Ok(log) => return Ok(log),
        Err(error) => error,
    };
    let Some(base) = Log::corrupt_segment_base(data_dir, &error) else {
        return Err(OpenError::Log(error));
    };
    if !raft_dir.is_dir() {
        return Err(OpenError::CorruptStandalone {
            dir: data_dir.display().to_string(),
            error: error.to_string(),
        });
    }
    let durable = Durable::open(raft_dir)?;
    let vote_term = LogStore::saved_vote_term(&durable)?;
    let Some(id) = super::identity::stored_id(&durable)? else {
        return Err(OpenError::CorruptAlone(error.to_string()));
    };
    let Some(leader) = recovery::live_leader(cluster, vote_term, id).await else {
        return Err(OpenError::CorruptAlone(error.to_string()));
    };
    tracing::error!(
        %error,
        leader = %leader.url,
        leader_term = leader.term,
        "a sealed segment is corrupt: moving it and the segments after it aside, to catch up from the leader under a new id"
    );
    let plan = plan(data_dir, base, error.to_string()).await?;
    durable.write(PLAN, &plan, true)?;
    let moved = blocking({
        let dir = data_dir.to_path_buf();
        move || finish_moves(&dir, &plan)
    })
    .await?;
    tracing::warn!(files = moved.len(), to = %data_dir.join(QUARANTINE_DIR).display(), "moved aside (delete them once the node has caught up)");
    open(data_dir, &config).await?.map_err(OpenError::Log)
}

/// The document of a cut inside a segment that a start decided on.
const CUT: &str = "cut";

/// A cut before a corrupt frame, decided (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Cut {
    offset: u64,
    reason: String,
}

/// Whether the log may be cut before the corrupt frame at `offset`: the cut
/// an earlier start decided on there goes on; otherwise only with a live leader
/// that lists this node (`vote_term`: the saved vote's), and the decision
/// is synced before the caller records a new id and cuts.
pub async fn allow_cut(
    durable: &Durable,
    cluster: &ClusterConfig,
    vote_term: u64,
    offset: u64,
    reason: String,
) -> Result<(), OpenError> {
    // Only the cut decided on: a decision is no licence for a cut
    // elsewhere. One that cannot be read is asked for again.
    let decided = durable.read::<Cut>(CUT).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "raft/{CUT} cannot be read: asking for a leader again");
        None
    });
    if decided.is_some_and(|cut| cut.offset == offset) {
        return Ok(());
    }
    let alone = || OpenError::CorruptAlone(format!("the frame at offset {offset} is corrupt: {reason}"));
    let Some(id) = super::identity::stored_id(durable)? else {
        return Err(alone());
    };
    let Some(leader) = recovery::live_leader(cluster, vote_term, id).await else {
        return Err(alone());
    };
    tracing::error!(
        offset,
        %reason,
        leader = %leader.url,
        leader_term = leader.term,
        "a frame inside the log is corrupt: cutting the log before it, to catch up from the leader under a new id"
    );
    durable.write(CUT, &Cut { offset, reason }, true)?;
    Ok(())
}

/// The cut before a corrupt frame is over (or there was none): its repair
/// is on disk.
pub fn cut_done(durable: &Durable) -> io::Result<()> {
    durable.remove(CUT)
}

/// Plans moving the whole of `log` aside, for the next start to carry out
/// (`open_member_log` moves the files, `start` takes a new id): a member
/// whose committed entries a leader contradicts (`contradiction`). Synced
/// before it returns; a plan already made stays.
pub fn plan_whole_log_aside(durable: &Durable, log: &Log, reason: String) -> io::Result<Plan> {
    if let Some(plan) = pending(durable)? {
        return Ok(plan);
    }
    let bases = log.segment_bases();
    let plan = Plan {
        base: bases.first().copied().unwrap_or(0),
        bases,
        dir: quarantine_dir_now(),
        reason,
        whole: true,
    };
    durable.write(PLAN, &plan, true)?;
    Ok(plan)
}

/// The cut under way, if a start began one.
pub fn pending(durable: &Durable) -> io::Result<Option<Plan>> {
    durable.read::<Plan>(PLAN)
}

/// The cut is over: its repair is on disk.
pub fn done(durable: &Durable) -> io::Result<()> {
    durable.remove(PLAN)
}

async fn open(dir: &Path, config: &LogConfig) -> Result<Result<Log, LogError>, OpenError> {
    let (dir, config) = (dir.to_path_buf(), config.clone());
    tokio::task::spawn_blocking(move || Log::open(&dir, config))
        .await
        .map_err(|e| OpenError::Task(e.to_string()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, LogError> + Send + 'static) -> Result<T, OpenError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpenError::Task(e.to_string()))?
        .map_err(OpenError::Log)
}

async fn plan(data_dir: &Path, base: u64, reason: String) -> Result<Plan, OpenError> {
    let dir = data_dir.to_path_buf();
    let bases = blocking(move || Log::segment_bases_from(&dir, base)).await?;
    Ok(Plan {
        base,
        bases,
        dir: quarantine_dir_now(),
        reason,
        whole: false,
    })
}

/// `<data_dir>/quarantine/<unix ms>`: where what a repair takes out of the
/// log now goes.
pub fn dir_now(data_dir: &Path) -> PathBuf {
    data_dir.join(quarantine_dir_now())
}

/// `quarantine/<unix ms>`: where a plan made now moves segments.
fn quarantine_dir_now() -> PathBuf {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    Path::new(QUARANTINE_DIR).join(millis.to_string())
}

fn finish_moves(data_dir: &Path, plan: &Plan) -> Result<Vec<PathBuf>, LogError> {
    // Only a relative path under the data directory: the document is read
    // from disk.
    let safe = plan
        .dir
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !safe || plan.dir.as_os_str().is_empty() {
        return Err(LogError::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "raft/{PLAN}: {} is not a directory under the data directory",
                plan.dir.display()
            ),
        )));
    }
    let to = data_dir.join(&plan.dir);
    if !plan.whole {
        return Log::move_segments_aside(data_dir, &plan.bases, &to);
    }
    // Segments made after the plan was written (a roll, a snapshot's reset)
    // go too.
    let bases = Log::segment_bases_from(data_dir, 0)?;
    let mut moved = Log::move_segments_aside(data_dir, &bases, &to)?;
    moved.extend(move_raft_files_aside(&data_dir.join("raft"), &to.join("raft")).map_err(LogError::Io)?);
    Ok(moved)
}

/// Every file of `raft` but the plan, into `to` (made first and synced
/// into its parent); both directories synced after. A start that died
/// midway finishes the rest; a file whose name was moved already was written
/// after the move and stays.
fn move_raft_files_aside(raft: &Path, to: &Path) -> io::Result<Vec<PathBuf>> {
    fsops::create_dir_all(to)?;
    if let Some(parent) = to.parent() {
        fsops::sync_dir(parent)?;
    }
    let mut moved = Vec::new();
    for entry in std::fs::read_dir(raft)? {
        let from = entry?.path();
        if from.file_name().is_some_and(|name| name == PLAN) || !from.is_file() {
            continue;
        }
        let Some(name) = from.file_name() else { continue };
        let into = to.join(name);
        // Already moved: this one was written after (a start that died
        // after recording its new id), and the moved one is the one to keep.
        if into.exists() {
            continue;
        }
        fsops::rename(&from, &into)?;
        moved.push(into);
    }
    fsops::sync_dir(to)?;
    fsops::sync_dir(raft)?;
    Ok(moved)
}

#[cfg(test)]
mod review_tests {
    use std::time::Duration;

    use super::*;
    use crate::cluster::log_store::test_support::{small_segments, write_more_records_synced, write_records_synced};
    use crate::cluster::status::{ClusterStatus, MemberStatus};

    /// This node at `http://127.0.0.1:1`, with `peers` for seeds.
    fn seeded(peers: Vec<String>) -> ClusterConfig {
        ClusterConfig {
            peers,
            advertise_url: "http://127.0.0.1:1".into(),
            peer_url: None,
            routes: Default::default(),
            heartbeat: Duration::from_millis(50),
            election_timeout: (Duration::from_millis(150), Duration::from_millis(300)),
            write_timeout: Duration::from_secs(5),
            ready_lag: 0,
            replica_timeout: Duration::from_secs(600),
            bootstrap_expect: 1,
            rejoin: false,
            client: reqwest::Client::new(),
            forward_writes: false,
            append_window: 1,
            pulses: Default::default(),
        }
    }

    /// A cut before a corrupt frame needs a live leader (here none: no seed
    /// but itself), and records nothing when refused; a cut an earlier start
    /// decided on goes on without asking (the new id it recorded is not one
    /// any leader knows yet), until `cut_done`.
    #[tokio::test]
    async fn a_cut_before_a_corrupt_frame_needs_a_leader_unless_an_earlier_start_decided_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
        super::super::identity::record_id(&durable, 5, "http://127.0.0.1:1").expect("id");
        let alone = seeded(vec!["http://127.0.0.1:1".into()]);
        let refused = allow_cut(&durable, &alone, 1, 40, "checksum mismatch".into()).await;
        assert!(matches!(refused, Err(OpenError::CorruptAlone(_))), "{refused:?}");
        assert!(!durable.exists(CUT), "a refused cut records nothing");

        let decided = Cut {
            offset: 40,
            reason: "checksum mismatch".into(),
        };
        durable.write(CUT, &decided, true).expect("decided");
        let allowed = allow_cut(&durable, &alone, 1, 40, "checksum mismatch".into()).await;
        assert!(allowed.is_ok(), "{allowed:?}");
        cut_done(&durable).expect("done");
        assert!(!durable.exists(CUT), "the decision goes with its repair");
        let refused_again = allow_cut(&durable, &alone, 1, 40, "checksum mismatch".into()).await;
        assert!(
            matches!(refused_again, Err(OpenError::CorruptAlone(_))),
            "{refused_again:?}"
        );

        // Review: a decision at one offset licenses no cut at another, and
        // one that cannot be read is no decision (the leader is asked again).
        durable.write(CUT, &decided, true).expect("decided");
        let elsewhere = allow_cut(&durable, &alone, 1, 12, "checksum mismatch".into()).await;
        assert!(matches!(elsewhere, Err(OpenError::CorruptAlone(_))), "{elsewhere:?}");
        std::fs::write(dir.path().join("raft").join(CUT), b"garbled").expect("garble");
        let garbled = allow_cut(&durable, &alone, 1, 40, "checksum mismatch".into()).await;
        assert!(matches!(garbled, Err(OpenError::CorruptAlone(_))), "{garbled:?}");
    }

    /// Review of the contradiction repair: moving only the segments aside
    /// left the snapshot, tables and marks in `raft/`, which may hold the
    /// contradicted entries (the next start applied and committed them
    /// again, and was refused again, under a new id each time). A whole
    /// plan moves every file of `raft/` but itself, and segments made after
    /// it was written; the start then opens an empty member.
    #[tokio::test]
    async fn a_whole_plan_moves_every_segment_and_raft_file_aside() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = small_segments();
        let durable = Durable::open(dir.path().join("raft")).expect("raft dir");
        super::super::identity::record_id(&durable, 5, "http://127.0.0.1:1").expect("id");
        let (d, c, r) = (dir.path().to_path_buf(), config.clone(), durable.clone());
        tokio::task::spawn_blocking(move || {
            let log = Log::open(&d, c.clone()).expect("log opens");
            let store = LogStore::open(log, r.clone()).expect("store");
            write_records_synced(&store, 100);
            plan_whole_log_aside(&r, store.log(), "contradicted".into()).expect("plan");
            // After the plan: more segments, and the snapshot retention took.
            write_more_records_synced(&store, 100, 100);
            r.write("snapshot", &serde_json::json!({"applied": 150}), true)
                .expect("snapshot");
            store.log().close().expect("closed");
        })
        .await
        .expect("member dir");
        let raft_files = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            names
        };
        let before = raft_files(&dir.path().join("raft"));
        assert!(before.len() > 2, "a member's raft/ files: {before:?}");

        let log = open_member_log(dir.path(), config.clone(), &seeded(vec![]))
            .await
            .expect("opens");
        assert_eq!(log.next_offset(), 0, "no segment is left");
        let plan = pending(&durable)
            .expect("read")
            .expect("the plan stays until the start is done");
        assert_eq!(raft_files(&dir.path().join("raft")), vec![PLAN.to_string()]);
        let kept = raft_files(&dir.path().join(&plan.dir).join("raft"));
        let others: Vec<String> = before.into_iter().filter(|n| n != PLAN).collect();
        assert_eq!(kept, others, "every raft/ file but the plan, moved");
        let store = LogStore::open(log, durable.clone()).expect("store");
        assert_eq!(
            (store.committed(), store.purged()),
            (None, None),
            "an empty member's marks"
        );

        // Review: a start that dies after recording its new id (the plan
        // still pending) moves again; the new id stays, the moved one is kept.
        super::super::identity::record_id(&durable, 6, "http://127.0.0.1:1").expect("new id");
        store.log().close().expect("closed");
        drop(store);
        let moved_before = std::fs::read_dir(dir.path().join(&plan.dir).join("raft"))
            .expect("moved")
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name(), std::fs::read(e.path()).expect("read")))
            .collect::<std::collections::BTreeMap<_, _>>();
        let again = open_member_log(dir.path(), config, &seeded(vec![]))
            .await
            .expect("opens again");
        assert_eq!(
            super::super::identity::stored_id(&durable).expect("read"),
            Some(6),
            "the new id stays"
        );
        let moved_after = std::fs::read_dir(dir.path().join(&plan.dir).join("raft"))
            .expect("moved")
            .filter_map(|e| e.ok())
            .map(|e| (e.file_name(), std::fs::read(e.path()).expect("read")))
            .collect::<std::collections::BTreeMap<_, _>>();
        assert_eq!(moved_after, moved_before, "the moved files are kept as they were");
        drop(again);
    }

    /// A member's data directory (node id 5) on 1 KiB segments whose second
    /// segment's last frame rotted.
    fn corrupt_member_dir(dir: &Path, config: &LogConfig) {
        let log = Log::open(dir, config.clone()).expect("log opens");
        let durable = Durable::open(dir.join("raft")).expect("raft dir");
        super::super::identity::record_id(&durable, 5, "http://127.0.0.1:1").expect("id");
        let store = LogStore::open(log, durable).expect("store");
        write_records_synced(&store, 200);
        store.log().close().expect("closed");
        let mut stores: Vec<_> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|x| x == "store"))
            .collect();
        stores.sort();
        assert!(stores.len() >= 3, "several sealed segments");
        let mut bytes = std::fs::read(&stores[1]).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x5a;
        std::fs::write(&stores[1], bytes).expect("write");
    }

    /// Review of `sealed`: the seeds now answer for another cluster (its
    /// ids are not this node's cluster's: node 77 leads members [77]). It
    /// leads, in touch with its majority, in a term not behind this node's
    /// vote, yet it holds none of this node's entries: the cut must not run.
    #[tokio::test]
    async fn a_leader_of_another_cluster_at_the_seed_url_does_not_license_the_cut() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = small_segments();
        let (d, c) = (dir.path().to_path_buf(), config.clone());
        tokio::task::spawn_blocking(move || corrupt_member_dir(&d, &c))
            .await
            .expect("member dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let foreign = ClusterStatus {
            node_id: 77,
            url: url.clone(),
            peer_url: None,
            initialized: true,
            term: 3,
            leader_id: Some(77),
            leader_url: Some(url.clone()),
            leader_contact_ms: Some(0),
            commit_offset: Some(10),
            max_record_bytes: None,
            peers: vec![url.clone()],
            removed: None,
            members: vec![MemberStatus {
                id: 77,
                url: url.clone(),
                voter: true,
                match_offset: Some(10),
                reachable: Some(true),
                problem: None,
                max_record_bytes: None,
                peer_url: None,
                replicas: 0,
                leads: 0,
            }],
        };
        let app = axum::Router::new().route(
            "/cluster",
            axum::routing::get(move || {
                let status = foreign.clone();
                async move { axum::Json(status) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cluster = seeded(vec![url.clone()]);
        let opened = open_member_log(dir.path(), config, &cluster).await;
        let moved = dir.path().join(QUARANTINE_DIR).exists();
        assert!(
            matches!(opened, Err(OpenError::CorruptAlone(_))) && !moved,
            "a leader that does not know this node licensed the cut (moved aside: {moved}, open: {:?})",
            opened.map(|_| ())
        );
    }
}
