//! Starting a cluster node: opens the Raft side of the log, checks and
//! repairs it, starts openraft, and sets formation and the metrics going.
//! The top of `cluster`: it puts together what the modules below provide.
//!
//! Files in `<data dir>/raft/` (see `durable`): `node-id` and `node-url`
//! (see `identity`: a wiped, copied or moved node comes back under a new id), `vote`,
//! `committed`, `purged`, `terms`, `state`, `snapshot`, `flushed`,
//! `removed` while the cluster has removed this node (see `removal`), and
//! `quarantine` while corrupt segments are moved aside (see `quarantine`).

use std::path::Path;
use std::sync::Arc;

use openraft::{Config, Raft, SnapshotPolicy};

use super::durable::Durable;
use super::failpoint;
use super::formation;
use super::gate;
use super::identity;
use super::last_run;
use super::log_store::LogStore;
use super::metrics;
use super::network::{Network, PeerBook, Routes};
use super::node::{Cluster, ClusterConfig, Inner};
use super::quarantine;
use super::quiet;
use super::reconcile;
use super::recovery;
use super::removal;
use super::repair;
use super::rpc;
use super::starting::{StartProgress, StartStep};
use super::state_machine::StateMachine;
use super::types::NodeId;
use crate::log::Log;

/// Why a node cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "{0} holds a standalone log (records, and no raft/ directory): a cluster node's log is its Raft log and must start empty. Start it without --peers, or give --data-dir a new directory"
    )]
    StandaloneLog(String),
    /// A corrupt log that only the cluster could repair, with no leader to do it.
    #[error(transparent)]
    Corrupt(#[from] quarantine::OpenError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bad Raft settings: {0}")]
    Config(String),
    #[error("openraft failed to start: {0}")]
    Raft(String),
}

/// `write_caching`: the log acknowledges what it has not synced
/// (`--fsync never|interval`), so a follower's log may come back shorter
/// than it told the leader after a power cut, and the leader must take it.
/// A named log's group (`group` > 0) starts with its timer off (dormant,
/// `quiet`).
fn raft_config(config: &ClusterConfig, write_caching: bool, group: u64) -> Result<Config, StartError> {
    let config = Config {
        cluster_name: "distlog".to_string(),
        heartbeat_interval: config.heartbeat.as_millis() as u64,
        election_timeout_min: config.election_timeout.0.as_millis() as u64,
        election_timeout_max: config.election_timeout.1.as_millis() as u64,
        // The log is the user's data: Raft never snapshots or purges on its
        // own; retention asks it to (see the design note).
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: u64::MAX,
        purge_batch_size: 1,
        // A node whose log came back short must not resume leading.
        enable_leader_restore: Some(false),
        allow_log_reversion: Some(write_caching),
        // A node that cannot win (cut off, or behind) asks before it raises
        // its term, so that coming back it does not depose a healthy leader.
        enable_pre_vote: Some(true),
        max_payload_entries: 4096,
        // `append` returns once entries are written, before they are
        // synced (see `log_store`): send them to the followers then, so
        // that the leader's sync and theirs overlap.
        broadcast_submitted_on_append: Some(true),
        enable_tick: group == 0,
        ..Config::default()
    };
    config.validate().map_err(|e| StartError::Config(e.to_string()))
}

impl Cluster {
    /// Opens the Raft side of `log` in `data_dir` and starts the node;
    /// formation (initializing or joining) goes on in the background.
    /// Each step is said in `progress` as it begins.
    pub async fn start(
        log: Log,
        data_dir: &Path,
        config: ClusterConfig,
        progress: &StartProgress,
    ) -> Result<Cluster, StartError> {
        let raft_dir = data_dir.join("raft");
        if !raft_dir.exists() && log.written_offset() > log.lowest_offset() {
            return Err(StartError::StandaloneLog(data_dir.display().to_string()));
        }
        let durable = Durable::open(raft_dir)?;
        let quarantined = quarantine::pending(&durable)?;
        let store = LogStore::open(log, durable.clone())?;
        // Every segment until the check knows which an earlier start read.
        let of = store.log().segment_bases().len();
        progress.set(StartStep::CheckingLog { checked: 0, of });
        failpoint::hit(failpoint::STARTUP_CHECK)
            .await
            .map_err(StartError::Raft)?;
        let (checked, telling) = (store.clone(), progress.clone());
        let mut fault = tokio::task::spawn_blocking(move || repair::check_telling(&checked, &telling))
            .await
            .map_err(|e| StartError::Raft(e.to_string()))??;
        let previous_run = last_run::previous(&durable);
        match (&quarantined, &fault) {
            (Some(plan), _) => fault = Some(moved_aside(fault, plan, data_dir)),
            (None, Some(torn @ repair::Fault::Corrupt { offset, reason }))
                if repair::is_torn_tail(&store, *offset, previous_run.as_ref())? =>
            {
                tracing::warn!(offset, %reason,
                    "the machine went down since a run that cached writes, and a frame of the active segment past \
                     everything this node recorded as durable is corrupt (a write the power cut tore): cutting the \
                     log before it, keeping this node's id");
                let (kept, torn, telling) = (store.clone(), torn.clone(), progress.clone());
                // The rest of the check (the marks against what is left) runs again.
                fault = tokio::task::spawn_blocking(move || {
                    repair::keep_sound_prefix(&kept, &torn)?;
                    repair::check_telling(&kept, &telling)
                })
                .await
                .map_err(|e| StartError::Raft(e.to_string()))??;
            }
            (None, Some(repair::Fault::Corrupt { offset, reason })) => {
                quarantine::allow_cut(&durable, &config, store.vote_term(), *offset, reason.clone()).await?;
            }
            (None, _) => {}
        }
        let write_caching = store.log().config().durability != crate::log::Durability::Always;
        let recorded = identity::recorded_id(&durable, &config.advertise_url)?;
        progress.set(StartStep::AskingTheLeader);
        if fault.is_none()
            && !write_caching
            && let Ok(kept) = recorded
        {
            fault = recovery::check_with_leader(&config, kept, store.vote_term(), store.next_index()).await;
        }
        let id = node_id(&durable, &store, fault, recorded, &config.advertise_url).await?;
        // Before this run is recorded: a crash between the two must not let
        // the next start take a reboot for the same boot (`seen.mark`).
        store.restore_seen_committed(previous_run.as_ref())?;
        last_run::record(&durable, &last_run::LastRun::now(write_caching))?;
        if quarantined.is_some() {
            quarantine::done(&durable)?;
        }
        quarantine::cut_done(&durable)?;
        let sm = StateMachine::open(store.clone(), durable.clone())?;
        // A no-op unless the log lost applied entries (a repair, including
        // one a crash interrupted after the log was cut).
        let checked = sm.clone();
        tokio::task::spawn_blocking(move || checked.forget_applied_past_log())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))??;
        progress.set(StartStep::StartingRaft);
        let url = config.advertise_url.trim_end_matches('/').to_string();
        let running = Running {
            id,
            group: 0,
            url,
            config,
            store,
            durable,
            write_caching,
            parent: None,
        };
        let (cluster, book) = running.start(sm).await?;
        tracing::info!(node_id = id, url = %cluster.inner.url, peer_url = ?cluster.inner.config.peer_url,
            peers = ?cluster.inner.config.peers, "cluster node started");
        failpoint::announce();
        cluster.recall_removal()?;
        tokio::spawn(formation::form(cluster.clone()));
        tokio::spawn(removal::follow_membership(cluster.clone()));
        tokio::spawn(removal::watch(cluster.clone()));
        tokio::spawn(reconcile::run(cluster.clone()));
        tokio::spawn(keep_peer_book(cluster.clone(), book));
        tokio::spawn(metrics::publish(cluster.id(), cluster.raft().metrics()));
        tokio::spawn(quiet::run(cluster.clone()));
        Ok(cluster)
    }
}

/// What a Raft group (the cluster group, or a named log's) is started
/// with on this node (see `Running::start`).
pub(super) struct Running {
    pub id: NodeId,
    pub group: u64,
    pub url: String,
    pub config: ClusterConfig,
    pub store: LogStore,
    pub durable: Durable,
    pub write_caching: bool,
    /// A named log's group: the cluster group it was started from.
    pub parent: Option<std::sync::Weak<Inner>>,
}

impl Running {
    /// Starts openraft over `sm` and the store, with its peer network and
    /// reorder gate; the peer book is the caller's to keep.
    pub(super) async fn start(self, sm: StateMachine) -> Result<(Cluster, PeerBook), StartError> {
        let Running {
            id,
            group,
            url,
            config,
            store,
            durable,
            write_caching,
            parent,
        } = self;
        let visibility = sm.visibility();
        let book = PeerBook::default();
        let network = Network {
            id,
            client: config.client.clone(),
            routes: Routes::new(config.routes.clone()),
            health: Default::default(),
            book: book.clone(),
            window: config.append_window.max(1),
            group,
            pulses: config.pulses.clone(),
            commit: store.commit_now(),
        };
        let raft = Raft::new(
            id,
            Arc::new(raft_config(&config, write_caching, group)?),
            network,
            store.clone(),
            sm,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let gate = gate::Gate::new(
            Arc::new(rpc::RaftSubmit(raft.clone())),
            gate::Limits::new(config.heartbeat.max(std::time::Duration::from_millis(100))),
        );
        let cluster = Cluster {
            inner: Arc::new(Inner {
                id,
                url,
                raft,
                store,
                visibility,
                config,
                forming: std::sync::Mutex::new(None),
                removal: std::sync::Mutex::new(None),
                removal_steps: std::sync::Mutex::new(()),
                named: Default::default(),
                durable,
                contact: Default::default(),
                learners: Default::default(),
                changing: Default::default(),
                joint_seen: Default::default(),
                draining: Default::default(),
                last_stamp: tokio::sync::Mutex::new(0),
                appends_in_flight: Default::default(),
                gate,
                restart_for: Default::default(),
                restart_asked: Default::default(),
                group,
                groups: Default::default(),
                parent,
                leader_changes: Default::default(),
                book: book.clone(),
                quiet: if group == 0 {
                    Default::default()
                } else {
                    quiet::Quiet::dormant_at_start()
                },
            }),
        };
        tokio::spawn(metrics::count_leader_changes(
            Arc::downgrade(&cluster.inner),
            cluster.raft().metrics(),
        ));
        Ok((cluster, book))
    }
}

/// This node's id: the one on disk (`recorded`) if it was taken at this node's URL,
/// or a new one when there is none, when it was taken elsewhere (a copied
/// or moved directory: `identity`), or when the log lost records it had
/// made durable (`fault`), which is then repaired.
async fn node_id(
    durable: &Durable,
    store: &LogStore,
    fault: Option<repair::Fault>,
    recorded: Result<NodeId, identity::NewId>,
    url: &str,
) -> Result<NodeId, StartError> {
    if let (Ok(id), None) = (&recorded, &fault) {
        return Ok(*id);
    }
    // The new id is on disk before anything is repaired: a crash
    // mid-repair must never bring the node back under the id whose
    // acknowledged entries it lost (the next start finds the fault
    // again, or a repaired log, under a new id).
    let id = identity::new_node_id()?;
    identity::record_id(durable, id, url)?;
    // A removal was the old id's: the new one joins as a new node.
    durable.remove(removal::REMOVED_FILE)?;
    match (fault, recorded) {
        (Some(fault), old) => {
            tracing::error!(
                old_node_id = ?old.ok(),
                new_node_id = id,
                %fault,
                "STORAGE FAULT: this node's log lost records it had made durable; it will not vote or lead on it. \
                 Keeping the sound prefix and joining again under a new id, to catch up from the other members"
            );
            let repaired = store.clone();
            tokio::task::spawn_blocking(move || repair::keep_sound_prefix(&repaired, &fault))
                .await
                .map_err(|e| StartError::Raft(e.to_string()))??;
        }
        (None, Err(identity::NewId::Moved { old_id, old_url })) => tracing::warn!(
            old_node_id = old_id,
            %old_url,
            new_node_id = id,
            %url,
            "this data directory belonged to node {old_id} at {old_url}: started at another URL (a copied \
             directory, or a moved node), it joins as a new node under a new id. If node {old_id} is gone \
             for good, remove it: distlog cluster remove {old_id}"
        ),
        (None, _) => tracing::info!(node_id = id, "new data directory: generated a node id"),
    }
    Ok(id)
}

/// The fault a start that moved segments aside repairs: a bad frame or a
/// missing front the check found in what is left, or the move itself.
fn moved_aside(found: Option<repair::Fault>, plan: &quarantine::Plan, data_dir: &Path) -> repair::Fault {
    match found {
        Some(fault @ (repair::Fault::Corrupt { .. } | repair::Fault::MissingFront { .. })) => fault,
        _ => repair::Fault::MovedAside {
            base: plan.base,
            dir: data_dir.join(&plan.dir).display().to_string(),
            reason: plan.reason.clone(),
        },
    }
}

/// Keeps `book` to the membership in effect (see `network::PeerBook`);
/// ends with the node.
pub(super) async fn keep_peer_book(cluster: Cluster, book: PeerBook) {
    use openraft::async_runtime::WatchReceiver;
    debug_assert_eq!(cluster.group_id(), 0, "named groups' books follow group 0's membership");
    let mut metrics = cluster.raft().metrics();
    let mut seen = None;
    loop {
        {
            let now = metrics.borrow_watched();
            let membership = &now.membership_config;
            if seen != Some(*membership.log_id()) {
                seen = Some(*membership.log_id());
                book.update(membership.nodes());
                // A named group's own membership keeps the URLs its members had when it was
                // initialized, and its idle heartbeats (batched, `pulse`) learn nothing from a
                // `404 peer_port_only`; group 0 records a member's new peer URL (--peer-listen
                // turned on, off or moved), so the named groups' books follow it.
                for group in cluster.groups_held() {
                    group.inner.book.update(membership.nodes());
                }
            }
        }
        if metrics.changed().await.is_err() {
            return;
        }
    }
}
