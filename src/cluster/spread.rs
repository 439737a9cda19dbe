//! Leader spreading for the named logs' groups. Placement (`Catalogue::place`) orders a log's
//! replicas and makes each node the first about equally often: the order is the log's
//! preference for its leader, the first its *preferred leader* (the node that initializes the
//! group and so leads it first). Failures move leaders about (a node that restarts comes back a
//! follower of every group), so each pass of the catalogue's follower (`logs::placed::follow`,
//! every 5 s) looks at every group this node leads: if a node ahead of it in the log's order has
//! been a voter in touch and caught up for `SETTLED`, leadership is handed to the first such node
//! (Kafka's preferred-replica election). A node that is down, cut off or behind is passed over.
//!
//! A hand-over is a small outage when it fails: openraft's leader stops taking writes and sending
//! heartbeats once it starts one, until some node wins an election. So it is only started when the
//! group is whole (every voter in touch with the leader: if the target cannot win, another voter
//! times out and elects), to a node that is still one of the cluster group's voters (not one being
//! removed), at most `AT_ONCE` a pass; a target that failed to take a group is not tried for it
//! again for `FAILED_BACKOFF`.
//!
//! Nothing here is state that must survive: after a restart the first passes find the same.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;

use super::node::Cluster;
use super::status::matched;
use super::types::NodeId;

/// How long the preferred leader must have been able to lead before it is handed leadership: a
/// node just back is not handed a group it may lose again at once.
const SETTLED: Duration = Duration::from_secs(10);

/// Entries the preferred leader may still lack when handed leadership: openraft makes it wait
/// until it holds the leader's last entry (up to an election timeout) before it stands, and the
/// old leader takes no write meanwhile, so it must be close.
const CAUGHT_UP: u64 = 64;

/// After a hand-over was started, the group is left alone this long (a hand-over that failed is
/// an election; trying again at once could make another).
const AGAIN_AFTER: Duration = Duration::from_secs(30);

/// Hand-overs started in one pass at most: after a restart a node may be the preferred leader of
/// hundreds of groups, and each hand-over is an election.
const AT_ONCE: usize = 32;

/// How long a node that did not take a group when handed it is passed over for that group.
const FAILED_BACKOFF: Duration = Duration::from_secs(300);

/// What the passes remember between them, per group id.
#[derive(Default)]
pub struct Spreading {
    /// The node ahead of this one that could lead the group, and since when it could.
    able_since: BTreeMap<u64, (NodeId, Instant)>,
    /// When a hand-over of the group was last started.
    handed_at: BTreeMap<u64, Instant>,
    /// (group, node) hand-overs that failed, and when.
    failed: Arc<Mutex<BTreeMap<(u64, NodeId), Instant>>>,
}

impl Cluster {
    /// One pass over the groups this node holds (called on group 0's `Cluster`): starts a
    /// hand-over of each it leads to the first node ahead of it in the log's order that has been
    /// able to lead for `SETTLED`.
    pub fn spread_leaders(&self, spreading: &mut Spreading) {
        debug_assert_eq!(self.group_id(), 0, "the catalogue is group 0's");
        let (now, me) = (Instant::now(), self.id());
        let voters = self.voter_ids();
        let order: BTreeMap<u64, Vec<NodeId>> = self
            .catalogue()
            .logs
            .values()
            .map(|placed| (placed.group, placed.nodes.clone()))
            .collect();
        let failed = spreading.failed.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let passed_over = |group: u64, node: NodeId| {
            failed
                .get(&(group, node))
                .is_some_and(|at| now.duration_since(*at) < FAILED_BACKOFF)
        };
        let (mut able, mut started) = (BTreeSet::new(), 0);
        for group in self.groups_held() {
            let id = group.group_id();
            let Some(order) = order.get(&id) else { continue };
            let ahead = order.iter().copied().take_while(|node| *node != me);
            let Some(to) = ahead
                .filter(|node| voters.contains(node) && !passed_over(id, *node))
                .find(|node| group.could_hand_to(*node))
            else {
                continue;
            };
            able.insert(id);
            let since = match spreading.able_since.get(&id) {
                Some((node, since)) if *node == to => *since,
                _ => {
                    spreading.able_since.insert(id, (to, now));
                    now
                }
            };
            let handed_lately = spreading
                .handed_at
                .get(&id)
                .is_some_and(|at| now.duration_since(*at) < AGAIN_AFTER);
            if now.duration_since(since) < SETTLED || handed_lately || started >= AT_ONCE {
                continue;
            }
            started += 1;
            spreading.handed_at.insert(id, now);
            let failures = spreading.failed.clone();
            tokio::spawn(async move {
                tracing::info!(group = id, to, "handing a named log's leadership to a node it prefers");
                match group.transfer_leadership(to).await {
                    Ok(()) => tracing::info!(group = id, to, "a named log's leadership was handed over"),
                    Err(e) => {
                        tracing::warn!(group = id, to, error = %e, "a named log's hand-over failed: that node is passed over for it a while");
                        failures
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert((id, to), Instant::now());
                    }
                }
            });
        }
        spreading.able_since.retain(|id, _| able.contains(id));
        spreading
            .handed_at
            .retain(|_, at| now.duration_since(*at) < AGAIN_AFTER);
        spreading
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, at| now.duration_since(*at) < FAILED_BACKOFF);
    }

    /// On a group's leader: whether voter `to`, another node, is close enough behind to take
    /// leadership now, and every voter is in touch (should `to` not win, one of them elects).
    fn could_hand_to(&self, to: NodeId) -> bool {
        let metrics = self.raft().metrics().borrow_watched().clone();
        if to == self.id() || metrics.current_leader != Some(self.id()) {
            return false;
        }
        let members = self.members();
        if !matches!(members.get(&to), Some((_, true))) {
            return false;
        }
        let whole = members
            .iter()
            .filter(|(id, (_, voter))| *voter && **id != self.id())
            .all(|(id, _)| self.reachable(&metrics, *id));
        let last = metrics.last_log_index.unwrap_or_default();
        whole && matched(&metrics, to).is_some_and(|held| held.saturating_add(CAUGHT_UP) >= last)
    }
}
