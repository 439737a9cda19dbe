//! Writes through any node (`--forward-writes`): a cluster follower that
//! would redirect a writer to its leader (`307 not_leader`) sends the
//! request there itself, over the peer connection (`Cluster::peer_client`:
//! the peers' TLS roots, client certificate and token), and relays the
//! leader's answer: its status and body, `Content-Type`, `Location` and
//! `Retry-After`. The routes: `POST /` and `PUT`/`DELETE /consumers/{name}`.
//!
//! The forwarded request is the client's method, path and query, body (read
//! here first, under the limits this node holds every body to) and the
//! headers in `PASSED`; not its `Authorization`: the peer client sends the
//! peer token. Headers added (the wire format between nodes):
//! - `x-distlog-forwarded: <follower's node id>`, the marker. A marked
//!   write is never forwarded again: a node that does not lead answers it
//!   as it would without forwarding (`307`/`503`). One hop at most.
//! - `x-distlog-forwarded-for: <principal>`, who the client is, when this
//!   node's policy identified it (it authorised the client first). The
//!   leader's guard takes it only on the forwarded routes, only from a
//!   caller the ACL grants `cluster` by name (a peer; not through `admin`
//!   or `*`), and never for a principal the ACL grants `admin` (`403`);
//!   from anyone else it is dropped. With no authentication configured
//!   nothing is carried.
//! - `x-distlog-deadline-ms: <ms>`, what is left of the write's time (this
//!   node's `--write-timeout-ms`, counted from when it took the request):
//!   the leader stops waiting for the commit past it (`outcome_unknown`).
//!   Trusted as the identity is: the guard drops it from anyone else.
//!
//! At most `--max-forwarded-writes` writes are forwarded at once (each
//! holds the client's connection and one to the leader for up to the
//! write's time): past it a write is refused before its body is read,
//! `503 busy` with `Retry-After: 1`.
//!
//! Failures stay honest: a forward refused before the request went out
//! (connection refused, a failed handshake) is `503 no_leader` (nothing was
//! done; retry); one that failed after it went out (a reset, no answer in
//! time) is `503 outcome_unknown`. A `307` from the node it was sent to
//! (leadership moved before that node took the write) is `503 no_leader`:
//! nothing was done there either. So is a `401` from the leader (it did not
//! take this node's peer token) and a `403` about the peer rather than the
//! client (the leader did not act for the client): the peers' setup is at
//! fault, not the write, and this node logs why.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use tokio::sync::OwnedSemaphorePermit;

use super::conditions::{EXPECTED_LAST_OFFSET, PRODUCER_EPOCH, PRODUCER_ID, PRODUCER_SEQ};
use super::error::{ApiError, ApiResult};
use super::state::AppState;
use crate::auth::Principal;
use crate::cluster::{Cluster, ClusterError};
use crate::mode::AppendError;

/// The marker of a forwarded request: the forwarding node's id.
pub const FORWARDED: &str = "x-distlog-forwarded";
/// The client's principal, on a forwarded request.
pub const FORWARDED_FOR: &str = "x-distlog-forwarded-for";
/// Milliseconds left of a forwarded write's time.
pub const DEADLINE: &str = "x-distlog-deadline-ms";

/// The client's headers a forwarded request carries: what the leader
/// decides the write by, and the trace and request id it belongs to.
static PASSED: [HeaderName; 9] = [
    header::CONTENT_TYPE,
    // The answer's form (a protobuf `AppendResult` or JSON).
    header::ACCEPT,
    HeaderName::from_static(PRODUCER_ID),
    HeaderName::from_static(PRODUCER_EPOCH),
    HeaderName::from_static(PRODUCER_SEQ),
    HeaderName::from_static(EXPECTED_LAST_OFFSET),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
    HeaderName::from_static("x-request-id"),
];

/// The leader's headers relayed with its answer.
static RELAYED: [HeaderName; 3] = [header::CONTENT_TYPE, header::LOCATION, header::RETRY_AFTER];

/// Forwarded writes, by `outcome`: `relayed` (the leader's answer, any
/// status), `no_leader` (nothing was written), `outcome_unknown`,
/// `timeout` (the write's time passed before it went out), `busy` (refused:
/// `--max-forwarded-writes` were under way).
pub const FORWARDED_WRITES: &str = "distlog_forwarded_writes_total";

fn count(outcome: &'static str) {
    metrics::counter!(FORWARDED_WRITES, "outcome" => outcome).increment(1);
}

/// The largest answer relayed: the leader's answers to writes are small
/// JSON documents.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long past the deadline this node waits for the leader's answer:
/// the leader stops at the deadline, then its answer must come back.
const ANSWER_GRACE: Duration = Duration::from_millis(500);

/// A write this node sends on to its leader.
pub struct Forward {
    cluster: Cluster,
    /// The leader's advertise URL (the one a `307` would name).
    leader: String,
    deadline: Instant,
    /// One of the `--max-forwarded-writes` places, held until the answer.
    _place: OwnedSemaphorePermit,
}

impl Forward {
    /// The forward of a write refused here with `refusal`, when this node
    /// forwards writes and the request was not forwarded to it already;
    /// `busy` when `--max-forwarded-writes` are under way.
    pub fn of(state: &AppState, headers: &HeaderMap, refusal: &AppendError) -> ApiResult<Option<Forward>> {
        let AppendError::Cluster(ClusterError::NotLeader {
            leader_url: Some(leader),
        }) = refusal
        else {
            return Ok(None);
        };
        let Some(cluster) = state.mode.cluster() else {
            return Ok(None);
        };
        if !cluster.forwards_writes() || headers.contains_key(FORWARDED) {
            return Ok(None);
        }
        let Ok(place) = state.limits.forwarded_writes.clone().try_acquire_owned() else {
            count("busy");
            return Err(ApiError::Busy(
                "--max-forwarded-writes writes are being forwarded to the leader; retry shortly",
            ));
        };
        Ok(Some(Forward {
            cluster: cluster.clone(),
            leader: leader.clone(),
            deadline: Instant::now() + cluster.write_timeout(),
            _place: place,
        }))
    }

    /// Sends the request (`parts` and its `body`, already read) to the
    /// leader and relays its answer.
    pub async fn send(self, parts: &Parts, body: Bytes) -> ApiResult<Response> {
        let answer = self.forward(parts, body).await;
        count(match &answer {
            Ok(_) => "relayed",
            Err(e) => e.code(),
        });
        answer
    }

    async fn forward(self, parts: &Parts, body: Bytes) -> ApiResult<Response> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ApiError::ClusterTimeout(
                "the write's time passed before it was forwarded to the leader; nothing was written".into(),
            ));
        }
        let (client, base) = self.cluster.peer_client(&self.leader);
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut request = client
            .request(parts.method.clone(), format!("{base}{path}"))
            .timeout(left + ANSWER_GRACE)
            .body(body);
        for name in &PASSED {
            for value in parts.headers.get_all(name) {
                request = request.header(name, value);
            }
        }
        request = request
            .header(FORWARDED, self.cluster.id())
            .header(DEADLINE, left.as_millis().max(1) as u64);
        let client = parts
            .extensions
            .get::<Principal>()
            .map(|Principal(client)| client.as_str());
        if let Some(client) = client {
            let value = HeaderValue::from_bytes(client.as_bytes())
                .map_err(|_| ApiError::Internal("the client's principal cannot be carried in a header".into()))?;
            request = request.header(FORWARDED_FOR, value);
        }
        let request = crate::telemetry::propagate(request, &tracing::Span::current());
        match request.send().await {
            Ok(answer) => relay(answer, &self.leader, client).await,
            Err(e) => Err(not_sent_or_unknown(e, &self.leader)),
        }
    }
}

/// A forward that got no answer: refused before the request went out
/// (nothing was done), or after (it may have been).
fn not_sent_or_unknown(e: reqwest::Error, leader: &str) -> ApiError {
    if e.is_connect() {
        return ApiError::LeaderUnreachable(format!(
            "the leader at {leader} could not be reached ({e}); nothing was written"
        ));
    }
    ApiError::OutcomeUnknown(format!(
        "the write was forwarded to the leader at {leader} and no answer came back: {e}"
    ))
}

/// The leader's answer, as this node's; `client`, the principal the
/// write was forwarded for.
async fn relay(mut answer: reqwest::Response, leader: &str, client: Option<&str>) -> ApiResult<Response> {
    let status = answer.status();
    if status == StatusCode::TEMPORARY_REDIRECT {
        return Err(ApiError::LeaderUnreachable(format!(
            "the node at {leader} stopped leading before it took the write; nothing was written"
        )));
    }
    if status == StatusCode::UNAUTHORIZED {
        return Err(refused_peer(
            leader,
            "did not accept this node's peer credentials (401)",
        ));
    }
    let mut body = Vec::new();
    loop {
        match answer.chunk().await {
            Ok(Some(chunk)) if body.len() + chunk.len() <= MAX_ANSWER_BYTES => body.extend_from_slice(&chunk),
            Ok(Some(_)) => {
                return Err(ApiError::OutcomeUnknown(format!(
                    "the leader at {leader} answered {status} with more than {MAX_ANSWER_BYTES} bytes"
                )));
            }
            Ok(None) => break,
            Err(e) => {
                return Err(ApiError::OutcomeUnknown(format!(
                    "the leader at {leader} answered {status}, but its answer was cut off: {e}"
                )));
            }
        }
    }
    if status == StatusCode::FORBIDDEN && !refuses(&body, client) {
        return Err(refused_peer(leader, "refused this node, not the client (403)"));
    }
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for name in &RELAYED {
        if let Some(value) = answer.headers().get(name) {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

/// Whether a leader's `403` body names `client` as the one refused: the
/// leader acted for the client, and its refusal is the client's to see.
fn refuses(body: &[u8], client: Option<&str>) -> bool {
    let Some(client) = client else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|refusal| refusal.get("principal").and_then(|p| p.as_str()) == Some(client))
}

/// A leader that refused this node as a peer: the write was not taken
/// (the guard runs first), and the fault is the peers' setup.
fn refused_peer(leader: &str, why: &str) -> ApiError {
    tracing::warn!(
        leader,
        "a forwarded write was refused: the leader {why}; check --peer-token-file and the ACL's cluster grant"
    );
    ApiError::LeaderUnreachable(format!("the leader at {leader} {why}; nothing was written"))
}

/// What is left of a forwarded write's time, on a marked request.
pub fn time_left(headers: &HeaderMap) -> Option<Duration> {
    if !headers.contains_key(FORWARDED) {
        return None;
    }
    let millis = headers.get(DEADLINE)?.to_str().ok()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(millis))
}

/// The client a marked request is forwarded for (`FORWARDED_FOR`); the
/// guard trusts it only from a peer.
pub fn forwarded_for(headers: &HeaderMap) -> Option<&str> {
    if !headers.contains_key(FORWARDED) {
        return None;
    }
    std::str::from_utf8(headers.get(FORWARDED_FOR)?.as_bytes()).ok()
}

/// Runs `write` within `left`, the time a forwarding follower has left for
/// it (`time_left`); unbounded here when `None`. Past it the write's
/// outcome is unknown: it may have been proposed.
pub async fn within<T>(left: Option<Duration>, write: impl Future<Output = ApiResult<T>>) -> ApiResult<T> {
    let Some(left) = left else {
        return write.await;
    };
    if left.is_zero() {
        return Err(ApiError::ClusterTimeout(
            "the forwarded write's time passed before the leader took it; nothing was written".into(),
        ));
    }
    match tokio::time::timeout(left, write).await {
        Ok(answer) => answer,
        Err(_) => Err(ApiError::OutcomeUnknown(format!(
            "not committed within the {} ms the forwarding follower had left; the write may still commit",
            left.as_millis()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_and_the_identity_are_read_from_marked_requests_only() {
        let mut headers = HeaderMap::new();
        headers.insert(DEADLINE, HeaderValue::from_static("250"));
        headers.insert(FORWARDED_FOR, HeaderValue::from_static("writer"));
        assert_eq!(time_left(&headers), None);
        assert_eq!(forwarded_for(&headers), None);
        headers.insert(FORWARDED, HeaderValue::from_static("2"));
        assert_eq!(time_left(&headers), Some(Duration::from_millis(250)));
        assert_eq!(forwarded_for(&headers), Some("writer"));
        headers.insert(DEADLINE, HeaderValue::from_static("soon"));
        assert_eq!(time_left(&headers), None);
    }

    /// A connection refused is a write never sent; one closed after the
    /// request went out is a write that may have been taken.
    #[tokio::test]
    async fn a_refused_connection_is_no_leader_and_a_dropped_one_unknown() {
        let client = reqwest::Client::new();
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let refused_at = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let refused = client.post(&refused_at).body("{}").send().await.unwrap_err();
        let answer = not_sent_or_unknown(refused, &refused_at);
        assert_eq!(
            (answer.status(), answer.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "no_leader")
        );

        let dropping = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dropped_at = format!("http://{}", dropping.local_addr().unwrap());
        let server = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut conn, _) = dropping.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
        });
        let dropped = client.post(&dropped_at).body("{}").send().await.unwrap_err();
        server.await.unwrap();
        let answer = not_sent_or_unknown(dropped, &dropped_at);
        assert_eq!(
            (answer.status(), answer.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "outcome_unknown")
        );
    }

    /// An answer from a one-shot server: `status` and a JSON `body`.
    async fn answered(status: &str, body: &'static str) -> reqwest::Response {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let _ = conn.write_all(answer.as_bytes()).await;
        });
        reqwest::Client::new().post(&url).body("{}").send().await.unwrap()
    }

    /// The leader refusing the peer (its token, its grant) is no write of
    /// the client's refused: nothing was written, retry; refusing the
    /// client is relayed.
    #[tokio::test]
    async fn a_leader_refusing_the_peer_is_no_leader_and_refusing_the_client_is_relayed() {
        let unknown_token = answered("401 Unauthorized", r#"{"code":"unauthorized"}"#).await;
        let answer = relay(unknown_token, "leader", Some("writer")).await.unwrap_err();
        assert_eq!(
            (answer.status(), answer.code()),
            (StatusCode::SERVICE_UNAVAILABLE, "no_leader")
        );

        let the_peer = r#"{"code":"forbidden","principal":"peer","action":"produce"}"#;
        for client in [Some("writer"), None] {
            let answer = relay(answered("403 Forbidden", the_peer).await, "leader", client)
                .await
                .unwrap_err();
            assert_eq!(
                (answer.status(), answer.code()),
                (StatusCode::SERVICE_UNAVAILABLE, "no_leader")
            );
        }

        let the_client = r#"{"code":"forbidden","principal":"writer","action":"produce"}"#;
        let answer = relay(answered("403 Forbidden", the_client).await, "leader", Some("writer"))
            .await
            .unwrap();
        assert_eq!(answer.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn a_write_past_its_time_is_unknown_and_one_with_none_left_is_not_started() {
        let slow = within(Some(Duration::from_millis(10)), async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(())
        });
        assert!(matches!(slow.await, Err(ApiError::OutcomeUnknown(_))));
        let started = std::sync::atomic::AtomicBool::new(false);
        let none_left = within(Some(Duration::ZERO), async {
            started.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        });
        assert!(matches!(none_left.await, Err(ApiError::ClusterTimeout(_))));
        assert!(!started.load(std::sync::atomic::Ordering::Relaxed));
        assert!(within(None, async { Ok(1) }).await.is_ok());
    }
}
