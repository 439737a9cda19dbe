//! The cluster's HTTP face: `GET /cluster`, `POST /cluster/join`,
//! `DELETE /cluster/members/{id}`, `POST /cluster/leader`, and the peer
//! RPCs under `/raft/` (formats in `cluster::network`). On a node without
//! `--peers` they answer 404 `not_a_cluster`. A peer RPC's named sender
//! and client certificate are handed to the cluster, which holds them to
//! the message (`cluster::sender`). With traces on, handling a
//! peer RPC is a span under the request's. Beside a peer listener
//! (`--peer-listen`), all but `GET /cluster` are served there only, and a
//! membership change asked of a follower is sent to the leader's peer URL.

use super::json_body::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ApiResult, Echo, cluster_error};
use super::state::AppState;
use crate::auth::{ClientCertificate, PeerInfo};
use crate::cluster::{
    APPEND_BUDGET_BYTES, Caller, Cluster, ClusterError, GATED_HEADER, HostProof, JoinRequest, MAX_DOCUMENT, Position,
    SENDER_HEADER, STREAM_HEADER, SnapshotBody, TARGET_HEADER,
};
use crate::telemetry;

fn cluster_of(state: &AppState) -> ApiResult<&Cluster> {
    state.mode.cluster().ok_or(ApiError::NotCluster)
}

/// A small JSON body (cluster requests are a few hundred bytes; a snapshot
/// is tables, still small), refused with a JSON error when it is not.
fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadClusterRequest(format!("bad JSON body: {e}")))
}

pub async fn status(State(state): State<AppState>) -> ApiResult<Response> {
    Ok(Json(cluster_of(&state)?.status()).into_response())
}

/// A membership change refused by a follower goes to the leader's peer
/// URL, where the membership routes are served.
fn membership_error(cluster: &Cluster, error: ClusterError, path: &str) -> ApiError {
    let error = match error {
        ClusterError::NotLeader { leader_url } => ClusterError::NotLeader {
            leader_url: cluster.leader_peer_url().or(leader_url),
        },
        other => other,
    };
    cluster_error(error, path)
}

/// A peer-only route on the client listener (see `api::Listener`).
pub async fn peer_port_only(State(state): State<AppState>, request: Request) -> ApiError {
    ApiError::PeerPortOnly {
        path: Echo::of(request.uri().path()),
        peer_url: state.mode.cluster().map(|c| c.peer_url().to_string()),
    }
}

pub async fn join(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let cluster = cluster_of(&state)?;
    let request: JoinRequest = parse(&body)?;
    cluster
        .join(request)
        .await
        .map_err(|e| membership_error(cluster, e, "/cluster/join"))?;
    Ok(Json(cluster.status()).into_response())
}

/// `DELETE /cluster/members/{id}?force=true`: remove at once, without
/// waiting for the node's replicas to move (they move afterwards).
#[derive(Deserialize, Default)]
pub struct RemoveQuery {
    #[serde(default)]
    force: bool,
}

pub async fn remove_member(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<RemoveQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let force = query
        .map_err(|e| ApiError::BadClusterRequest(format!("bad query: {}", e.body_text())))?
        .force;
    let cluster = cluster_of(&state)?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::BadClusterRequest(format!("bad member id {id:?}")))?;
    let path = format!("/cluster/members/{id}{}", if force { "?force=true" } else { "" });
    // Its replicas of named logs move first: the logs stay whole and writable.
    // Forced, they move once it is gone (a replica on a node that is no member moves at once).
    let held = match force {
        true => Vec::new(),
        false => cluster
            .drain(id, DRAIN_WAIT)
            .await
            .map_err(|e| membership_error(cluster, e, &path))?,
    };
    if !held.is_empty() {
        let body = serde_json::json!({
            "status": "moving",
            "id": id,
            "logs": held,
            "message": format!("node {id}'s replicas of {} named logs are still moving; ask again to finish the removal", held.len()),
        });
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let removed = cluster.remove(id).await;
    cluster.end_drain(id);
    removed.map_err(|e| membership_error(cluster, e, &path))?;
    Ok(Json(cluster.status()).into_response())
}

/// How long `DELETE /cluster/members/{id}` waits for the node's replicas to
/// move before it answers `202` (asked again, it goes on).
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// `GET /raft/{group}/membership`: this replica's committed view of its group
/// (group 0's leader asks it to learn that a move is done, `cluster::moves`).
pub async fn raft_membership(State(state): State<AppState>, group: RaftGroup) -> ApiResult<Response> {
    let cluster = cluster_of(&state)?
        .group(group.0)
        .ok_or(ApiError::NoSuchGroup(group.0))?;
    Ok(Json(cluster.group_membership()).into_response())
}

#[derive(Deserialize)]
struct LeaderRequest {
    id: u64,
}

pub async fn transfer_leader(State(state): State<AppState>, body: Bytes) -> ApiResult<Response> {
    let cluster = cluster_of(&state)?;
    let request: LeaderRequest = parse(&body)?;
    cluster
        .transfer_leadership(request.id)
        .await
        .map_err(|e| membership_error(cluster, e, "/cluster/leader"))?;
    Ok(Json(cluster.status()).into_response())
}

/// The group a peer RPC is for: `/raft/{group}/...`, else group 0
/// (`/raft/append` and the others, which nodes without named logs serve).
pub struct RaftGroup(u64);

impl<S: Send + Sync> FromRequestParts<S> for RaftGroup {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let mut segments = parts.uri.path().trim_start_matches('/').split('/');
        // Not a number: no group has that id, so the message is refused.
        let group = match (segments.next(), segments.next(), segments.next()) {
            (Some("raft"), Some(group), Some(_)) if !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()) => {
                group.parse().unwrap_or(u64::MAX)
            }
            (Some("raft"), Some(_), Some(_)) => u64::MAX,
            _ => 0,
        };
        Ok(RaftGroup(group))
    }
}

fn checked_target(state: &AppState, group: RaftGroup, headers: &HeaderMap) -> ApiResult<Cluster> {
    let cluster = cluster_of(state)?
        .group(group.0)
        .ok_or(ApiError::NoSuchGroup(group.0))?;
    let target = headers.get(TARGET_HEADER).and_then(|v| v.to_str().ok());
    cluster.check_target(target).map_err(|e| cluster_error(e, ""))?;
    Ok(cluster)
}

/// What a peer RPC's request shows of its caller: the sender it names
/// (`x-distlog-raft-sender`) and its verified client certificate (the
/// connection's `PeerInfo` is attached whenever there is a policy, which
/// mutual TLS always makes).
pub struct RaftCaller {
    named: Option<String>,
    certificate: Option<ClientCertificate>,
}

impl RaftCaller {
    fn caller(&self) -> Caller<'_> {
        Caller {
            named: self.named.as_deref(),
            certificate: self.certificate.as_ref().map(|c| c as &dyn HostProof),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RaftCaller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // A header that is not text is passed on as a name no node has.
        let named = parts
            .headers
            .get(SENDER_HEADER)
            .map(|v| v.to_str().unwrap_or("(not text)").to_string());
        let certificate = parts
            .extensions
            .get::<axum::extract::ConnectInfo<PeerInfo>>()
            .and_then(|info| info.0.client_cert.clone());
        Ok(RaftCaller { named, certificate })
    }
}

impl HostProof for ClientCertificate {
    fn names_hosts(&self) -> bool {
        ClientCertificate::names_hosts(self)
    }

    fn valid_for(&self, host: &str) -> bool {
        ClientCertificate::valid_for(self, host)
    }
}

/// The span of handling a peer's RPC, under the request's server span
/// (which continues the sender's `traceparent`, see `api::observe`).
fn handler_span(name: &'static str) -> tracing::Span {
    telemetry::span(|| tracing::info_span!("raft.handle", otel.name = name))
}

/// A peer RPC's refusal. A peer refused for who it is counts as a failed
/// authentication (`distlog_auth_failures_total{reason="peer_identity_mismatch"}`):
/// a misissued certificate, or someone speaking for a member.
fn rpc_error(error: ClusterError) -> ApiError {
    if let ClusterError::PeerIdentityMismatch(why) = &error {
        metrics::counter!(crate::auth::AUTH_FAILURES, "reason" => "peer_identity_mismatch").increment(1);
        tracing::debug!(%why, "a peer RPC refused");
    }
    cluster_error(error, "")
}

fn rpc_answer<T: serde::Serialize>(answer: T) -> Response {
    (StatusCode::OK, Json(answer)).into_response()
}

pub async fn raft_append(
    State(state): State<AppState>,
    group: RaftGroup,
    from: RaftCaller,
    request: Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let cluster = checked_target(&state, group, &parts.headers)?;
    // A leader sends at most its byte budget, or one entry past it: the
    // limit follows the log's record limit, not --max-request-bytes, which
    // is for clients (so members must share --max-record-bytes).
    let most = APPEND_BUDGET_BYTES + 2 * cluster.store().log().config().max_record_bytes + (1 << 20);
    let limit = usize::try_from(most.max(state.limits.max_request_bytes)).unwrap_or(usize::MAX);
    let body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| ApiError::BadClusterRequest(format!("append-entries body: {e}")))?;
    // A node that does not pipeline takes each request as it comes and does
    // not say it gates, so its leaders keep to one at a time.
    let position = stream_position(&parts.headers)?.filter(|_| cluster.pipelines());
    let sent_commit = sent_commit(&parts.headers);
    let answer = telemetry::in_span(
        handler_span("raft.append_entries"),
        cluster.handle_append(from.caller(), body, position, sent_commit),
    )
    .await
    .map_err(rpc_error)?;
    let mut answer = rpc_answer(answer);
    if position.is_some() {
        // The sender may keep several requests of its stream in flight.
        answer
            .headers_mut()
            .insert(GATED_HEADER, axum::http::HeaderValue::from_static("1"));
    }
    Ok(answer)
}

/// The sender's committed index when it sent an append (`COMMIT_HEADER`),
/// if it says one (a node of an earlier version does not). One that does
/// not read as an index is ignored: it serves reads only, and must not
/// stop replication.
fn sent_commit(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get(crate::cluster::COMMIT_HEADER)?
        .to_str()
        .ok()?
        .parse::<u64>()
        .ok()
}

/// Named groups' heartbeats from one peer, batched (`cluster::pulse`): each item is checked and
/// handled as its own `/raft/{group}/append` would be (`Cluster::handle_heartbeat`: no entries,
/// no group 0), within the deadline the sender names, and answered in order: `ok`, or the status
/// and error body its own request would have had (504 past the deadline).
pub async fn raft_heartbeats(State(state): State<AppState>, from: RaftCaller, request: Request) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, crate::cluster::pulse_body_limit())
        .await
        .map_err(|e| ApiError::BadClusterRequest(format!("heartbeat batch body: {e}")))?;
    let items = crate::cluster::decode_batch(&body).map_err(ApiError::BadClusterRequest)?;
    let deadline = crate::cluster::item_deadline(&parts.headers);
    let (caller, headers, state) = (&from, &parts.headers, &state);
    let answers = futures_util::future::join_all(items.into_iter().map(|(group, append)| async move {
        let handled = async {
            let cluster = checked_target(state, RaftGroup(group), headers)?;
            cluster
                .handle_heartbeat(caller.caller(), append)
                .await
                .map_err(rpc_error)
        };
        let handled = tokio::time::timeout(deadline, handled).await.unwrap_or_else(|_| {
            Err(rpc_error(crate::cluster::ClusterError::Timeout(format!(
                "not handled within {deadline:?}"
            ))))
        });
        match handled {
            Ok(answer) => crate::cluster::PulseAnswer {
                ok: Some(answer),
                status: 200,
                body: String::new(),
            },
            Err(e) => crate::cluster::PulseAnswer {
                ok: None,
                status: e.status().as_u16(),
                body: serde_json::json!({"error": e.to_string(), "code": e.code()}).to_string(),
            },
        }
    }))
    .await;
    Ok(rpc_answer(answers))
}

/// A peer's pulse for the named groups it leads quietly (`cluster::quiet`):
/// answered with those this node follows quietly under it.
pub async fn raft_quiet(State(state): State<AppState>, from: RaftCaller, request: Request) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let cluster = checked_target(&state, RaftGroup(0), &parts.headers)?;
    let body = axum::body::to_bytes(body, crate::cluster::pulse_body_limit())
        .await
        .map_err(|e| ApiError::BadClusterRequest(format!("quiet pulse body: {e}")))?;
    let pulse: crate::cluster::QuietPulse =
        serde_json::from_slice(&body).map_err(|e| ApiError::BadClusterRequest(format!("quiet pulse: {e}")))?;
    let answer = cluster
        .take_quiet_pulse(from.caller(), pulse)
        .map_err(|e| cluster_error(e, ""))?;
    Ok(axum::Json(answer).into_response())
}

/// Where a pipelined append-entries stands in its sender's stream
/// (`x-distlog-append-stream`), if it says.
fn stream_position(headers: &HeaderMap) -> ApiResult<Option<Position>> {
    let Some(value) = headers.get(STREAM_HEADER) else {
        return Ok(None);
    };
    let position = value.to_str().ok().and_then(Position::parse);
    position
        .map(Some)
        .ok_or_else(|| ApiError::BadClusterRequest(format!("bad {STREAM_HEADER} header {value:?}")))
}

pub async fn raft_vote(
    State(state): State<AppState>,
    group: RaftGroup,
    from: RaftCaller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let cluster = checked_target(&state, group, &headers)?;
    let answer = telemetry::in_span(
        handler_span("raft.vote"),
        cluster.handle_vote(from.caller(), parse(&body)?),
    )
    .await
    .map_err(rpc_error)?;
    Ok(rpc_answer(answer))
}

pub async fn raft_pre_vote(
    State(state): State<AppState>,
    group: RaftGroup,
    from: RaftCaller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let cluster = checked_target(&state, group, &headers)?;
    let answer = telemetry::in_span(
        handler_span("raft.pre_vote"),
        cluster.handle_pre_vote(from.caller(), parse(&body)?),
    )
    .await
    .map_err(rpc_error)?;
    Ok(rpc_answer(answer))
}

/// Snapshot bodies read at once (one node a process). One is what a leader
/// sends; a second covers a new leader's while an old one's is still
/// arriving. Each may be `MAX_DOCUMENT` bytes, so anyone who reaches the
/// port and knows a node's id could otherwise make it buffer 64 MiB per
/// concurrent request.
static SNAPSHOT_BODIES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

/// The longest one snapshot body may take to arrive whole: the body timeout
/// only bounds the gaps between its bytes, so a sender trickling a byte at a
/// time would otherwise hold a reader's place for good.
const SNAPSHOT_BODY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

/// A snapshot is the tables, which the producers and consumers make up to
/// megabytes: its body may be as large as the tables file may be (not the
/// 2 MiB of axum's default, which would keep a follower from ever catching
/// up through a snapshot of a busy cluster).
pub async fn raft_snapshot(
    State(state): State<AppState>,
    group: RaftGroup,
    from: RaftCaller,
    request: Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let cluster = checked_target(&state, group, &parts.headers)?;
    // Refused at once rather than queued: the sender retries, and a queue
    // would hold the connections of whoever floods it.
    let _reading = SNAPSHOT_BODIES
        .try_acquire()
        .map_err(|_| ApiError::Busy("two snapshots are being received; retry shortly"))?;
    let limit = usize::try_from(MAX_DOCUMENT).unwrap_or(usize::MAX);
    let body = tokio::time::timeout(SNAPSHOT_BODY_DEADLINE, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| ApiError::BadClusterRequest("the snapshot body did not arrive within 120 s".into()))?
        .map_err(|e| ApiError::BadClusterRequest(format!("snapshot body: {e}")))?;
    let snapshot: SnapshotBody = parse(&body)?;
    let answer = telemetry::in_span(
        handler_span("raft.install_snapshot"),
        cluster.handle_snapshot(from.caller(), snapshot),
    )
    .await
    .map_err(rpc_error)?;
    Ok(rpc_answer(answer))
}

pub async fn raft_transfer(
    State(state): State<AppState>,
    group: RaftGroup,
    from: RaftCaller,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let cluster = checked_target(&state, group, &headers)?;
    let answer = telemetry::in_span(
        handler_span("raft.transfer_leader"),
        cluster.handle_transfer(from.caller(), parse(&body)?),
    )
    .await
    .map_err(rpc_error)?;
    Ok(rpc_answer(answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn group_of(path: &str) -> u64 {
        let request = axum::http::Request::post(path).body(()).expect("a request");
        let (mut parts, ()) = request.into_parts();
        let Ok(RaftGroup(group)) = RaftGroup::from_request_parts(&mut parts, &()).await;
        group
    }

    /// `"+0".parse::<u64>()` is `Ok(0)`: a group that is not all digits
    /// must not reach group 0 (or any group) by another spelling.
    #[tokio::test]
    async fn only_a_group_of_digits_names_a_group() {
        assert_eq!(group_of("/raft/append").await, 0);
        assert_eq!(group_of("/raft/7/append").await, 7);
        for path in [
            "/raft/+0/append",
            "/raft/+7/vote",
            "/raft/0x1/append",
            "/raft/%31/append",
        ] {
            assert_eq!(group_of(path).await, u64::MAX, "{path}");
        }
    }
}
