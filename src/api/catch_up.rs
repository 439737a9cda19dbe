//! Reads on a cluster member that has not caught up: an offset the cluster
//! committed but this node does not show yet is waited for briefly
//! (`CATCH_UP_WAIT`, longer than a healthy follower trails), then the
//! reader is sent to the leader (`307`, code `not_caught_up`), never told
//! that the offset does not exist (a false `404`, or a range that ends
//! early). A node in touch with no leader cannot tell whether an offset
//! past its end exists: `503 no_leader`. Standalone nodes and replicas
//! answer as before.

use std::time::Duration;

use super::error::{ApiError, ApiResult};
use super::position::wait_for_records;
use super::state::AppState;
use crate::cluster::Beyond;

/// How long a read waits for this node to catch up before it is sent to
/// the leader.
const CATCH_UP_WAIT: Duration = Duration::from_millis(500);

/// Where a reader of `uri` goes on the leader: the same path and query.
pub fn path_of(uri: &axum::http::Uri) -> String {
    uri.path_and_query().map_or_else(|| "/".to_string(), |p| p.to_string())
}

/// Ok when this node may answer a read at `offset` itself (it shows it,
/// or the offset is not committed yet); `path` is where the reader goes on
/// the leader (path and query), made only when it is needed.
pub async fn shown_or_sent_on(state: &AppState, offset: u64, path: impl FnOnce() -> String) -> ApiResult<()> {
    let Some(cluster) = state.mode.cluster() else {
        return Ok(());
    };
    if offset < state.log.next_offset() {
        return Ok(());
    }
    match cluster.beyond_view(offset) {
        Beyond::Uncommitted => return Ok(()),
        // At the end of the log a reader waits or hears "nothing yet", as
        // before; only an offset past it cannot be answered.
        Beyond::Unknown if offset == state.log.next_offset() => return Ok(()),
        Beyond::Unknown => return Err(ApiError::NoLeader),
        Beyond::Committed => {}
    }
    caught_up_or_sent_on(state, cluster, offset, path).await
}

/// Waits briefly until this node shows `offset`, which the cluster
/// committed; else sends the reader to the leader.
async fn caught_up_or_sent_on(
    state: &AppState,
    cluster: &crate::cluster::Cluster,
    offset: u64,
    path: impl FnOnce() -> String,
) -> ApiResult<()> {
    wait_for_records(state, offset, CATCH_UP_WAIT).await;
    let next = state.log.next_offset();
    if offset < next {
        return Ok(());
    }
    match cluster.leader() {
        Some((leader, Some(url))) if leader != cluster.id() => Err(ApiError::NotCaughtUp {
            offset,
            next,
            location: format!("{}{}", url.trim_end_matches('/'), path()),
            leader: url,
        }),
        // The leader itself, applying what it committed: from what is here.
        Some((leader, _)) if leader == cluster.id() => Ok(()),
        // Contact lost while it waited: it cannot tell, as before the wait.
        _ => Err(ApiError::NoLeader),
    }
}

/// Ok when this node may answer what its log's last records are itself
/// (`?tail=N`): it is in touch with a leader and shows what that leader
/// committed, or catches up within the wait. Behind: the reader goes to the
/// leader, as for `shown_or_sent_on`; in touch with no leader it cannot tell
/// its last records from the log's (`503 no_leader`).
pub async fn at_the_end_or_sent_on(state: &AppState, path: impl FnOnce() -> String) -> ApiResult<()> {
    let Some(cluster) = state.mode.cluster() else {
        return Ok(());
    };
    match cluster.beyond_view(state.log.next_offset()) {
        Beyond::Unknown => return Err(ApiError::NoLeader),
        Beyond::Uncommitted => return Ok(()),
        Beyond::Committed => {}
    }
    // Behind: its last records are the log's only once it shows all it
    // knows committed, not after its next one.
    match cluster.known_commit() {
        Some(committed) => caught_up_or_sent_on(state, cluster, committed, path).await,
        None => Ok(()),
    }
}
