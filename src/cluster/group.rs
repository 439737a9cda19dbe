//! A named log's own Raft group on this node (see `catalogue`): the same
//! machinery as the cluster group (the log is the Raft log, control
//! frames, committed-only reads, batches whole, retention through Raft),
//! started on the catalogue's word rather than formed from seeds.
//!
//! In a named group a node's Raft id is its id in group 0, and a member's
//! URLs are the ones group 0 records. The group's messages go under
//! `/raft/{group}/` (`network::group_path`). Its directory holds its
//! segments and `raft/` as group 0's does, plus `raft/replica`
//! (`{"group":..,"node":..}`): a replica opens only on the node it was
//! made for (a node that came back under a new id would otherwise answer
//! in the group with an id its members do not know).
//!
//! Not done here (see `docs/named-logs.md`): a storage fault in a named
//! group's log is not repaired (the group does not open: its node's
//! replica stays down, the others serve). Replicas move (`moves`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{PoisonError, RwLock};

use serde::{Deserialize, Serialize};

use super::durable::Durable;
use super::error::ClusterError;
use super::last_run;
use super::log_store::LogStore;
use super::node::Cluster;
use super::repair;
use super::start::{Running, StartError};
use super::state_machine::StateMachine;
use super::types::{Member, NodeId};
use crate::log::Log;

/// The file naming the group and node a replica was made for.
const REPLICA: &str = "replica";

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Replica {
    group: u64,
    node: NodeId,
}

/// The node id the replica in `dir` was made for, if one was (a node
/// back under a new id finds its old replicas' directories: `logs::placed`
/// sets one aside when the catalogue places that group on its new id).
pub fn replica_made_for(dir: &Path) -> Result<Option<NodeId>, StartError> {
    if !dir.join("raft").is_dir() {
        return Ok(None);
    }
    // Read only: nothing is created or synced (each sync is a disk cache
    // flush, and a restart asks this of every replica the node holds).
    let durable = Durable::existing(dir.join("raft"));
    Ok(durable.read::<Replica>(REPLICA)?.map(|replica| replica.node))
}

/// The named groups a node holds, by group id.
#[derive(Debug, Default)]
pub struct Groups(RwLock<BTreeMap<u64, Cluster>>);

impl Cluster {
    /// The Raft group this is (0: the cluster group).
    pub fn group_id(&self) -> u64 {
        self.inner.group
    }

    /// Group `group` on this node: this one for 0, else a named log's
    /// group started here.
    pub fn group(&self, group: u64) -> Option<Cluster> {
        match group {
            0 => Some(self.clone()),
            _ => self
                .inner
                .groups
                .0
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&group)
                .cloned(),
        }
    }

    /// The named logs' groups started on this node.
    pub fn groups_held(&self) -> Vec<Cluster> {
        self.inner
            .groups
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Opens the Raft side of `log` (held in `dir`) as group `group` and
    /// starts it; it answers `/raft/{group}/*` from then on. Called on
    /// group 0.
    pub async fn start_group(&self, group: u64, log: Log, dir: &Path) -> Result<Cluster, StartError> {
        debug_assert_eq!(self.inner.group, 0, "groups are started from the cluster group");
        debug_assert!(group > 0);
        let id = self.inner.id;
        let durable = Durable::open(dir.join("raft"))?;
        let made_for = Replica { group, node: id };
        match durable.read::<Replica>(REPLICA)? {
            Some(replica) if replica != made_for => {
                return Err(StartError::Raft(format!(
                    "{} holds group {}'s replica of node {}; this node is {id} in group {group}",
                    dir.display(),
                    replica.group,
                    replica.node
                )));
            }
            Some(_) => {}
            None => durable.write(REPLICA, &made_for, true)?,
        }
        let store = LogStore::open(log, durable.clone())?;
        let previous_run = last_run::previous(&durable);
        check_log(&store, previous_run.as_ref()).await?;
        let write_caching = store.log().config().durability != crate::log::Durability::Always;
        // Before this run is recorded (see `cluster::start`).
        store.restore_seen_committed(previous_run.as_ref())?;
        last_run::record(&durable, &last_run::LastRun::now(write_caching))?;
        let sm = StateMachine::open(store.clone(), durable.clone())?;
        let checked = sm.clone();
        tokio::task::spawn_blocking(move || checked.forget_applied_past_log())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))??;
        let running = Running {
            id,
            group,
            url: self.inner.url.clone(),
            config: self.inner.config.clone(),
            store,
            durable,
            write_caching,
            parent: Some(std::sync::Arc::downgrade(&self.inner)),
        };
        let (started, book) = running.start(sm).await?;
        self.inner
            .groups
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group, started.clone());
        // From now on group 0's peer-book keeper updates this book at each of its membership
        // changes (`start::keep_peer_book`); until the next, it has the current one.
        {
            use openraft::async_runtime::WatchReceiver;
            book.update(self.raft().metrics().borrow_watched().membership_config.nodes());
        }
        tracing::info!(group, node_id = id, "named log's group started");
        Ok(started)
    }

    /// Makes this group's first membership: `nodes`, at the URLs group 0
    /// records for them. Called by the first node of a log's placement
    /// once; a group already initialized (by an earlier start) is left as
    /// it is.
    pub async fn initialize_group(&self, cluster: &Cluster, nodes: &[NodeId]) -> Result<(), ClusterError> {
        debug_assert!(self.inner.group > 0);
        let members = cluster.members();
        let mut first: BTreeMap<NodeId, Member> = BTreeMap::new();
        for node in nodes {
            let (member, _) = members.get(node).ok_or(ClusterError::NoSuchMember(*node))?;
            first.insert(*node, member.clone());
        }
        match self.inner.raft.initialize(first).await {
            Ok(()) => {
                // The first node of a new log stands at once.
                self.wake("initialized");
                Ok(())
            }
            Err(openraft::errors::RaftError::APIError(openraft::errors::InitializeError::NotAllowed(_))) => Ok(()),
            Err(e) => Err(ClusterError::Stopped(e.to_string())),
        }
    }

    /// Waits up to `within` until this group knows a leader and where it
    /// is (a follower may hear of its leader before the first membership
    /// reaches it); says whether it does.
    pub async fn wait_for_leader(&self, within: std::time::Duration) -> bool {
        use openraft::async_runtime::WatchReceiver;
        let mut metrics = self.inner.raft.metrics();
        let known = tokio::time::timeout(within, async {
            loop {
                {
                    let now = metrics.borrow_watched();
                    let leader = now.current_leader.and_then(|id| now.membership_config.get_node(&id));
                    if leader.is_some() {
                        return;
                    }
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        known.is_ok()
    }

    /// Stops group `group` here and forgets it (its files are the caller's).
    pub async fn stop_group(&self, group: u64) {
        let stopped = self
            .inner
            .groups
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&group);
        if let Some(stopped) = stopped {
            stopped.shutdown().await;
        }
    }
}

/// Checks every frame of a named group's log at open. A write a power cut
/// tore past everything recorded durable is cut, as on group 0
/// (`repair::is_torn_tail`); any other fault keeps the group from opening.
async fn check_log(store: &LogStore, previous_run: Option<&last_run::LastRun>) -> Result<(), StartError> {
    let checked = store.clone();
    let fault = tokio::task::spawn_blocking(move || repair::check(&checked))
        .await
        .map_err(|e| StartError::Raft(e.to_string()))??;
    let Some(fault) = fault else {
        return Ok(());
    };
    if let repair::Fault::Corrupt { offset, .. } = &fault
        && repair::is_torn_tail(store, *offset, previous_run)?
    {
        tracing::warn!(%fault, "a named log's replica lost a write the power cut tore: cutting the log before it");
        let kept = store.clone();
        let again = tokio::task::spawn_blocking(move || {
            repair::keep_sound_prefix(&kept, &fault)?;
            repair::check(&kept)
        })
        .await
        .map_err(|e| StartError::Raft(e.to_string()))??;
        return match again {
            None => Ok(()),
            Some(fault) => Err(StartError::Raft(format!("storage fault: {fault}"))),
        };
    }
    Err(StartError::Raft(format!(
        "storage fault: {fault} (a named log's replica is not repaired yet: it stays down, the other replicas \
         serve the log)"
    )))
}
