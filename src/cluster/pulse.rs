//! Heartbeats of the named logs' groups, coalesced per target node. Each group's leader sends
//! every follower an empty append-entries every `--heartbeat-ms`; with hundreds of groups that is
//! hundreds of HTTP requests a heartbeat interval between two nodes, most of an idle node's CPU.
//! So a named group's heartbeat (an append-entries without entries) does not go out on its own:
//! it waits up to `WINDOW` for the heartbeats of other groups to the same node, and they go in one
//! `POST /raft/heartbeats`, each then handled as its own `/raft/{group}/append` would be (target,
//! sender and group checks, the group's Raft core), and answered in order. Group 0's heartbeats,
//! and every append that carries entries, go alone as before.
//!
//! Wire format (body, binary; at most `MAX_ITEMS` items and `MAX_BODY` bytes):
//!
//! ```text
//! item*:  group u64 BE | len u32 BE | an append-entries body of `len` bytes (codec::encode_append)
//! ```
//!
//! Answer: a JSON array, one element an item, in order: `{"ok": AppendEntriesResponse}`, or
//! `{"status": 404, "body": "..."}` where that item alone was refused (its status and error body,
//! as its own request would have been answered; 504 past its deadline, `WAIT_HEADER`).
//!
//! Only heartbeats are batched: openraft's heartbeat workers get their own clients
//! (`RaftNetworkFactory::new_heartbeat_client`), and only those of named groups batch; the
//! replication streams' entry-less appends (commit-index updates, probes) are never delayed. The
//! receiver refuses an item that carries entries or is for group 0. A target that answers it
//! has no such route (`404 not_found`: an older version) gets heartbeats one at a time again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use openraft::raft::AppendEntriesResponse;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::types::{NodeId, TypeConfig};

pub const HEARTBEATS_PATH: &str = "/raft/heartbeats";

/// How long a heartbeat waits for others to the same node. Well under a heartbeat interval (100
/// ms by default), which is well under an election timeout: followers see heartbeats at most this
/// much later than they would alone.
pub(super) const WINDOW: Duration = Duration::from_millis(10);

/// Items in one batch at most (more wait for the next).
pub const MAX_ITEMS: usize = 1024;

/// A batch's body at most. A heartbeat's body is tens of bytes (a vote, the previous and
/// committed log ids, no entries).
pub const MAX_BODY: usize = 1 << 20;

/// The body limit of `POST /raft/heartbeats`.
pub fn pulse_body_limit() -> usize {
    MAX_BODY
}

/// One item's answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct PulseAnswer {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<AppendEntriesResponse<TypeConfig>>,
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub body: String,
}

/// Appends `group`'s `append` body to a batch.
pub(super) fn encode_item(out: &mut Vec<u8>, group: u64, append: &[u8]) {
    debug_assert!(append.len() <= MAX_BODY);
    out.extend_from_slice(&group.to_be_bytes());
    out.extend_from_slice(&u32::try_from(append.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(append);
}

/// A batch's items: (group, append-entries body). Refuses a body past `MAX_BODY`, more than
/// `MAX_ITEMS` items, or an item whose length runs past the end.
pub fn decode_batch(body: &bytes::Bytes) -> Result<Vec<(u64, bytes::Bytes)>, String> {
    if body.len() > MAX_BODY {
        return Err(format!(
            "a heartbeat batch of {} bytes (at most {MAX_BODY})",
            body.len()
        ));
    }
    let mut items = Vec::new();
    let mut at = 0usize;
    while at < body.len() {
        if items.len() == MAX_ITEMS {
            return Err(format!("more than {MAX_ITEMS} heartbeats in a batch"));
        }
        let header = body
            .get(at..at + 12)
            .ok_or("a heartbeat item cut short in its header")?;
        let group = u64::from_be_bytes(header[..8].try_into().map_err(|_| "group")?);
        let len = u32::from_be_bytes(header[8..].try_into().map_err(|_| "length")?) as usize;
        let start = at + 12;
        let end = start
            .checked_add(len)
            .filter(|end| *end <= body.len())
            .ok_or("a heartbeat item runs past the batch")?;
        items.push((group, body.slice(start..end)));
        at = end;
    }
    Ok(items)
}

/// Header of a batch: how long the sender waits for its answer, in milliseconds. The receiver
/// gives each item 3/4 of it and answers a late one 504, so that one slow group does not cost the
/// others their answers.
pub const WAIT_HEADER: &str = "x-distlog-heartbeats-wait-ms";

/// Each item's deadline on the receiving side (`WAIT_HEADER`; 3/4 of a heartbeat interval's
/// default, 100 ms, without it; at most a second).
pub fn item_deadline(headers: &reqwest::header::HeaderMap) -> Duration {
    let waited = headers
        .get(WAIT_HEADER)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .unwrap_or(100);
    Duration::from_millis(waited.min(1_000) * 3 / 4)
}

/// Why a whole batch failed, for each heartbeat in it: `unreachable` as `PeerError::rpc` would
/// say (the peer refused, or no connection was made), else a network error.
#[derive(Clone, Debug)]
pub(super) struct BatchFailure {
    pub unreachable: bool,
    pub why: String,
}

/// What a heartbeat waits for: its answer, or why its batch failed.
pub(super) type Waiting = oneshot::Sender<Result<PulseAnswer, BatchFailure>>;

/// A heartbeat handed to its target's batcher.
pub(super) struct Pending {
    pub group: u64,
    pub body: Vec<u8>,
    /// Where its group reaches the target now (its peer book's word).
    pub url: String,
    /// When its sender stops waiting.
    pub deadline: Instant,
    pub answer: Waiting,
}

/// Per target node, the queue its batcher drains (one task a target, made on first use and
/// ended when every sender is gone, i.e. never while the node runs); and the targets that do not
/// take batches (a node of a version without the route), sent to one heartbeat at a time.
#[derive(Clone, Debug, Default)]
pub struct Pulses(Arc<PulsesInner>);

#[derive(Debug, Default)]
struct PulsesInner {
    queues: Mutex<HashMap<NodeId, mpsc::UnboundedSender<Pending>>>,
    direct: Mutex<HashSet<NodeId>>,
}

impl Pulses {
    /// The queue to `target`, with `spawn` starting its batcher when there is none yet (or the
    /// last one ended).
    pub(super) fn queue(
        &self,
        target: NodeId,
        spawn: impl FnOnce(mpsc::UnboundedReceiver<Pending>),
    ) -> mpsc::UnboundedSender<Pending> {
        let mut queues = self.0.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(queue) = queues.get(&target).filter(|q| !q.is_closed()) {
            return queue.clone();
        }
        let (queue, receive) = mpsc::unbounded_channel();
        spawn(receive);
        queues.insert(target, queue.clone());
        queue
    }

    /// Whether `target` takes batches (until it answered that it has no such route).
    pub(super) fn batches_to(&self, target: NodeId) -> bool {
        !self
            .0
            .direct
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&target)
    }

    /// `target` has no batch route: its heartbeats go one at a time from now on.
    pub(super) fn send_directly_to(&self, target: NodeId) {
        self.0
            .direct
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(target);
    }
}

/// Takes the next batch off `receive`: waits for one heartbeat, then `WINDOW` for others, and
/// takes what came (up to `MAX_ITEMS` and `MAX_BODY`), leaving out those whose sender stopped
/// waiting. `None` once every sender is gone.
pub(super) async fn next_batch(receive: &mut mpsc::UnboundedReceiver<Pending>) -> Option<Vec<Pending>> {
    let first = receive.recv().await?;
    tokio::time::sleep(WINDOW).await;
    let mut batch = vec![first];
    let mut bytes = batch[0].body.len() + 12;
    while batch.len() < MAX_ITEMS {
        match receive.try_recv() {
            Ok(next) if bytes + next.body.len() + 12 <= MAX_BODY => {
                bytes += next.body.len() + 12;
                batch.push(next);
            }
            Ok(next) => {
                // Cannot happen with heartbeats of tens of bytes; failed, it is sent again at the
                // next heartbeat.
                let _ = next.answer.send(Err(BatchFailure {
                    unreachable: false,
                    why: "a heartbeat batch was full".into(),
                }));
                break;
            }
            Err(_) => break,
        }
    }
    let now = Instant::now();
    batch.retain(|pending| !pending.answer.is_closed() && pending.deadline > now);
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_decodes_to_its_items_in_order() {
        let mut body = Vec::new();
        encode_item(&mut body, 7, b"seven");
        encode_item(&mut body, 3, b"");
        encode_item(&mut body, u64::MAX, b"last");
        let items = decode_batch(&bytes::Bytes::from(body)).expect("a good batch");
        let items: Vec<(u64, &[u8])> = items.iter().map(|(g, b)| (*g, b.as_ref())).collect();
        assert_eq!(items, vec![(7, &b"seven"[..]), (3, &b""[..]), (u64::MAX, &b"last"[..])]);
    }

    #[test]
    fn a_batch_cut_short_or_too_long_is_refused() {
        let mut body = Vec::new();
        encode_item(&mut body, 1, b"abc");
        let cut = bytes::Bytes::from(body[..body.len() - 1].to_vec());
        assert!(decode_batch(&cut).is_err(), "item past the end");
        let header_only = bytes::Bytes::from(body[..10].to_vec());
        assert!(decode_batch(&header_only).is_err(), "header cut short");
        let mut lying = Vec::new();
        lying.extend_from_slice(&1u64.to_be_bytes());
        lying.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            decode_batch(&bytes::Bytes::from(lying)).is_err(),
            "a length past the end"
        );
        let mut many = Vec::new();
        for g in 0..=MAX_ITEMS as u64 {
            encode_item(&mut many, g, b"");
        }
        assert!(decode_batch(&bytes::Bytes::from(many)).is_err(), "too many items");
        assert_eq!(decode_batch(&bytes::Bytes::new()).expect("empty").len(), 0);
    }
}
