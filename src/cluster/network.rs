//! The Raft transport, client side: one `Peer` per target node, speaking
//! HTTP to its `/raft/*` routes (served by `api::cluster`) at its peer URL
//! (`Member::peer_base`: its `--peer-listen` port when it has one).
//!
//! - `POST /raft/append`: the body of `codec::encode_append`, answered with
//!   an `AppendEntriesResponse` in JSON; up to `--append-window` in flight,
//!   each naming its place in its stream (`gate`, `pipeline`); waited for
//!   as `patience` says (a heartbeat's soft TTL and time for its bytes);
//! - `POST /raft/heartbeats`: a named group's append-entries without entries,
//!   batched with the others to the same node (`pulse`);
//! - `POST /raft/vote`, `/raft/pre-vote`, `/raft/snapshot`,
//!   `/raft/transfer-leader`: JSON both ways (a snapshot is metadata and
//!   small tables, see `state_machine`).
//!
//! Every request names its target node in `x-distlog-raft-target`: a node
//! that is not that one (a wiped node back under a new id at the same URL)
//! answers 409, which the sender takes as unreachable. It names its sender
//! in `x-distlog-raft-sender` (`sender`): a node that does not take this one
//! as that sender answers 403 `peer_identity_mismatch`, unreachable too.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::StreamAppendResult;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest, TransferLeaderResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EntryPayload, OptionalSend};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::Span;

use super::codec::encode_append;
use super::gate::{GATED_HEADER, Position, STREAM_HEADER};
use super::log_store::CommitNow;
use super::patience::{Allowance, Patience};
use super::peer_health::PeerHealth;
use super::pulse::{self, HEARTBEATS_PATH, Pending, PulseAnswer, Pulses};
use super::sender::SENDER_HEADER;
use super::tables::Tables;
use super::types::{Member, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::telemetry;

/// Header naming the node a Raft request is meant for.
pub const TARGET_HEADER: &str = "x-distlog-raft-target";

/// Header of an append-entries request: the sender's committed index when
/// the request was sent. The request's own `leader_commit` is the one of
/// when openraft built it, which for a request that waited out a peer's
/// absence (a retry, a heartbeat) is long past; a restarted follower took
/// it for the leader's and told a reader that a committed offset did not
/// exist. Only reads past a member's end use it (`reads`), never Raft.
pub const COMMIT_HEADER: &str = "x-distlog-leader-commit";

pub const APPEND_PATH: &str = "/raft/append";
pub const VOTE_PATH: &str = "/raft/vote";
pub const PRE_VOTE_PATH: &str = "/raft/pre-vote";
pub const SNAPSHOT_PATH: &str = "/raft/snapshot";
pub const TRANSFER_PATH: &str = "/raft/transfer-leader";

/// The body of `POST /raft/snapshot`.
#[derive(Serialize, Deserialize)]
pub struct SnapshotBody {
    pub vote: Vote,
    pub meta: SnapshotMeta,
    pub tables: Tables,
}

/// Where peers are reached: their advertised URLs, unless a route says
/// otherwise (`--peer-route`, used by the fault tests' proxies).
#[derive(Clone, Debug, Default)]
pub struct Routes(Arc<HashMap<String, String>>);

impl Routes {
    pub fn new(routes: HashMap<String, String>) -> Routes {
        Routes(Arc::new(routes))
    }

    pub fn resolve(&self, url: &str) -> String {
        let url = url.trim_end_matches('/');
        self.0.get(url).cloned().unwrap_or_else(|| url.to_string())
    }
}

/// Where each member is reached now (its peer URL, else its URL), from the
/// latest membership. openraft makes a target's `Peer` once per replication
/// stream and heartbeat worker and keeps it across a change that only
/// records a member anew (its peer URL, `--peer-listen` turned on or off),
/// so a `Peer` looks its target up here on every request.
#[derive(Clone, Debug, Default)]
pub struct PeerBook(Arc<std::sync::RwLock<HashMap<NodeId, String>>>);

impl PeerBook {
    /// Takes the members of a membership.
    pub fn update<'a>(&self, members: impl Iterator<Item = (&'a NodeId, &'a Member)>) {
        let book = members
            .map(|(id, m)| (*id, m.peer_base().trim_end_matches('/').to_string()))
            .collect();
        *self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner) = book;
    }

    /// A member answered at its URL that peers reach it at `peer_url` (it
    /// was restarted with `--peer-listen` before the membership recorded
    /// that: a whole cluster restarted at once would otherwise never elect
    /// a leader to record it). Taken only for the host the member already
    /// had: a node answering for an address must not send Raft's traffic
    /// elsewhere. The next membership recorded replaces it.
    fn learn(&self, id: NodeId, at: &str, peer_url: &str) {
        if !same_host(at, peer_url) {
            return;
        }
        let mut book = self.0.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        book.insert(id, peer_url.trim_end_matches('/').to_string());
    }

    fn get(&self, id: NodeId) -> Option<String> {
        let book = self.0.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        book.get(&id).cloned()
    }
}

/// Makes a `Peer` for each target openraft replicates to.
#[derive(Clone, Debug)]
pub struct Network {
    /// This node's id, named as the sender of every request.
    pub id: NodeId,
    pub client: reqwest::Client,
    pub routes: Routes,
    pub health: PeerHealth,
    pub book: PeerBook,
    /// Append-entries requests in flight to a gating peer at most.
    pub window: usize,
    /// The Raft group the messages are for (0: the cluster group).
    pub group: u64,
    /// The node's heartbeat batchers, shared by its named groups (`pulse`).
    pub pulses: Pulses,
    /// The group's committed index now, stamped on appends (`COMMIT_HEADER`).
    pub commit: CommitNow,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> Peer {
        Peer {
            sender: self.id,
            client: self.client.clone(),
            base: node.peer_base().trim_end_matches('/').to_string(),
            routes: self.routes.clone(),
            book: self.book.clone(),
            url: node.url.trim_end_matches('/').to_string(),
            target,
            health: self.health.clone(),
            stream: super::pipeline::StreamState::new(self.window),
            patience: Patience::default(),
            group: self.group,
            pulses: self.pulses.clone(),
            batches: false,
            commit: self.commit.clone(),
        }
    }

    /// openraft's heartbeat worker's own client: a named group's sends its heartbeats in batches
    /// (`pulse`); the replication stream's client (`new_client`) never waits for a batch.
    async fn new_heartbeat_client(&mut self, target: NodeId, node: &Member) -> Peer {
        let mut peer = self.new_client(target, node).await;
        peer.batches = self.group > 0;
        peer
    }
}

/// `path` (one of the paths above) for group `group`: group 0 keeps the
/// paths nodes without named logs serve, `/raft/append` becomes
/// `/raft/7/append` for group 7.
pub fn group_path(group: u64, path: &str) -> std::borrow::Cow<'_, str> {
    match (group, path.strip_prefix("/raft/")) {
        (0, _) | (_, None) => path.into(),
        (group, Some(rest)) => format!("/raft/{group}/{rest}").into(),
    }
}

/// The `code` of one of our JSON error bodies.
fn error_code(body: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    body.get("code")?.as_str().map(str::to_string)
}

/// Whether `elsewhere` is on the host of `at`, and no less secure (a node
/// answering for an address may point its peers to another port of its
/// own, never to another host, and never from https to http: the peer
/// client sends its token wherever it is pointed).
pub(super) fn same_host(at: &str, elsewhere: &str) -> bool {
    let (Ok(at), Ok(elsewhere)) = (reqwest::Url::parse(at), reqwest::Url::parse(elsewhere)) else {
        return false;
    };
    at.host_str().is_some()
        && at.host_str() == elsewhere.host_str()
        && !(at.scheme() == "https" && elsewhere.scheme() != "https")
}

/// The `peer_url` of a `404 peer_port_only` answer: the node serves peers
/// on a port of its own, there.
pub(super) fn peer_port_elsewhere(body: &str) -> Option<String> {
    let body: serde_json::Value = serde_json::from_str(body).ok()?;
    if body.get("code")?.as_str()? != "peer_port_only" {
        return None;
    }
    body.get("peer_url")?.as_str().map(str::to_string)
}

/// One target node.
#[derive(Clone)]
pub struct Peer {
    /// This node.
    sender: NodeId,
    /// The group's messages go under `/raft/{group}/` (group 0's under `/raft/`).
    group: u64,
    client: reqwest::Client,
    /// Where the member was reached when this `Peer` was made (its peer
    /// URL, else its URL); `book` has where it is reached now.
    base: String,
    book: PeerBook,
    /// `--peer-route`: where a URL is reached instead.
    routes: Routes,
    /// The peer's advertised URL, as logs and metrics name it.
    url: String,
    target: NodeId,
    health: PeerHealth,
    /// This `Peer`'s stream of append-entries requests (`pipeline`).
    pub(super) stream: super::pipeline::StreamState,
    /// How long its appends and snapshots are waited for.
    patience: Patience,
    /// Where a named group's heartbeats to this peer are batched (`pulse`).
    pulses: Pulses,
    /// Whether this is a named group's heartbeat client, whose heartbeats go in batches.
    batches: bool,
    /// The group's committed index now (`COMMIT_HEADER`).
    commit: CommitNow,
}

#[derive(Debug, thiserror::Error)]
enum PeerError {
    #[error("{0}")]
    Transport(#[from] reqwest::Error),
    #[error("{url} answered {status}: {body}")]
    Refused {
        url: String,
        status: reqwest::StatusCode,
        body: String,
    },
}

impl PeerError {
    /// Connection refused, a wrong node at the URL, or a node that says it
    /// cannot serve: back off. Anything else (a dropped connection, a
    /// timeout): retry.
    fn rpc(self) -> RPCError<TypeConfig> {
        match &self {
            PeerError::Transport(e) if e.is_connect() => RPCError::Unreachable(Unreachable::new(&self)),
            PeerError::Transport(_) => RPCError::Network(NetworkError::new(&self)),
            PeerError::Refused { .. } => RPCError::Unreachable(Unreachable::new(&self)),
        }
    }

    fn streaming(self) -> StreamingError<TypeConfig> {
        match self.rpc() {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            RPCError::Network(n) => StreamingError::Network(n),
            other => StreamingError::Network(NetworkError::new(&other)),
        }
    }
}

impl Peer {
    /// With traces on, `span` is the RPC's client span: the request runs in
    /// it and carries its `traceparent`. A request of a pipelined stream
    /// names its `position` in it (`gate`); the answer says whether the
    /// peer gates them.
    async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: reqwest::Body,
        content_type: &'static str,
        timeout: Duration,
        span: Span,
        position: Option<Position>,
    ) -> Result<(T, bool), PeerError> {
        let answer = self.try_post(path, body, content_type, timeout, span, position).await;
        match &answer {
            Ok(_) => self.health.answered(self.target, &self.url),
            Err(e) => self.health.failed(self.target, &self.url, e),
        }
        answer
    }

    async fn try_post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: reqwest::Body,
        content_type: &'static str,
        timeout: Duration,
        span: Span,
        position: Option<Position>,
    ) -> Result<(T, bool), PeerError> {
        let base = self.book.get(self.target).unwrap_or_else(|| self.base.clone());
        let url = format!("{}{}", self.routes.resolve(&base), group_path(self.group, path));
        let mut request = self
            .client
            .post(&url)
            .header(TARGET_HEADER, self.target.to_string())
            .header(SENDER_HEADER, self.sender.to_string())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .timeout(timeout)
            .body(body);
        if let Some(position) = position {
            request = request.header(STREAM_HEADER, position.header_value());
        }
        if path == APPEND_PATH
            && let Some(commit) = self.commit.get()
        {
            request = request.header(COMMIT_HEADER, commit.to_string());
        }
        let response = telemetry::send_traced(request, &span).await?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            if status == reqwest::StatusCode::NOT_FOUND
                && let Some(peer_url) = peer_port_elsewhere(&body)
            {
                // Sent again by openraft's next try, to the peer port.
                self.book.learn(self.target, &base, &peer_url);
            }
            let body: String = body.chars().take(300).collect();
            return Err(PeerError::Refused { url, status, body });
        }
        let gated = response.headers().contains_key(GATED_HEADER);
        Ok((response.json::<T>().await?, gated))
    }

    async fn post_json<Q: Serialize, T: DeserializeOwned>(
        &self,
        path: &'static str,
        request: &Q,
        option: &RPCOption,
    ) -> Result<T, PeerError> {
        let body = serde_json::to_vec(request).unwrap_or_default();
        self.post_json_bytes(path, body, option.soft_ttl()).await
    }

    async fn post_json_bytes<T: DeserializeOwned>(
        &self,
        path: &'static str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<T, PeerError> {
        let span = self.rpc_span(path);
        let (answer, _) = self
            .post(path, body.into(), "application/json", timeout, span, None)
            .await?;
        Ok(answer)
    }

    /// A quick answer eases this peer's patience; a timeout while sending
    /// or waiting for the answer (not while connecting) stretches it.
    fn note_patience<T>(&self, allowance: &Allowance, took: Duration, answer: &Result<T, PeerError>) {
        match answer {
            Ok(_) => self.patience.answered(allowance, took),
            Err(PeerError::Transport(e)) if e.is_timeout() && !e.is_connect() => self.patience.timed_out(allowance),
            Err(_) => {}
        }
    }

    /// One append-entries request; whether the peer gates its stream.
    /// `ahead`: requests of this stream in flight before it, which the peer
    /// takes first (taken to be as large).
    pub(super) async fn send_append(
        &self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
        position: Option<Position>,
        ahead: usize,
    ) -> Result<(AppendEntriesResponse<TypeConfig>, bool), RPCError<TypeConfig>> {
        let body = encode_append(&rpc);
        let waited_for = body.len().saturating_mul(ahead.saturating_add(1));
        let allowance = self.patience.allow(option.soft_ttl(), waited_for);
        // Heartbeats (no entries) are not traced; entries continue the
        // trace of the write that made them (see `telemetry`).
        let span = match rpc.entries.is_empty() {
            true => Span::none(),
            false => {
                let span = self.rpc_span(APPEND_PATH);
                span.record("raft.entries", rpc.entries.len());
                telemetry::continue_entries(
                    &span,
                    rpc.entries.iter().filter_map(|e| match &e.payload {
                        EntryPayload::Normal(record) => record.trace.as_ref(),
                        _ => None,
                    }),
                );
                span
            }
        };
        let started = std::time::Instant::now();
        let carries_entries = !rpc.entries.is_empty();
        super::stages::reached(super::stages::SENT, &rpc.entries);
        let answer = self
            .post(
                APPEND_PATH,
                body.into(),
                "application/octet-stream",
                allowance.timeout,
                span,
                position,
            )
            .await;
        self.note_patience(&allowance, started.elapsed(), &answer);
        let answer = answer.map_err(PeerError::rpc);
        metrics::histogram!(
            super::metrics::APPEND_DURATION,
            "peer" => self.target.to_string(),
            "peer_url" => self.url.clone()
        )
        .record(started.elapsed().as_secs_f64());
        if carries_entries {
            super::stages::record(super::stages::APPEND_RPC, started);
            if answer.is_ok() {
                super::stages::reached(super::stages::ACKNOWLEDGED, &rpc.entries);
            }
        }
        answer
    }

    /// A named group's heartbeat, sent in its target's next batch (`pulse`).
    async fn send_heartbeat(
        &self,
        rpc: &AppendEntriesRequest<TypeConfig>,
        option: &RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let network = |why: String| RPCError::Network(NetworkError::new(&std::io::Error::other(why)));
        let (answer, waited) = tokio::sync::oneshot::channel();
        let queue = self.pulses.queue(self.target, |receive| {
            tokio::spawn(self.batcher().run(receive));
        });
        let base = self.book.get(self.target).unwrap_or_else(|| self.base.clone());
        let wait = option.soft_ttl() + pulse::WINDOW;
        let pending = Pending {
            group: self.group,
            body: encode_append(rpc),
            url: format!("{}{HEARTBEATS_PATH}", self.routes.resolve(&base)),
            deadline: std::time::Instant::now() + wait,
            answer,
        };
        if queue.send(pending).is_err() {
            return Err(network("the heartbeat batcher stopped".into()));
        }
        let answer = tokio::time::timeout(wait, waited)
            .await
            .map_err(|_| network(format!("no answer to a batched heartbeat within {wait:?}")))?
            .map_err(|_| network("the heartbeat batcher dropped the heartbeat".into()))?;
        match answer {
            Ok(PulseAnswer { ok: Some(answer), .. }) => Ok(answer),
            Ok(PulseAnswer { status, body, .. }) => Err(PeerError::Refused {
                url: format!("{}{}", self.base, group_path(self.group, APPEND_PATH)),
                status: reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::BAD_GATEWAY),
                body,
            }
            .rpc()),
            Err(failure) if failure.unreachable => Err(RPCError::Unreachable(Unreachable::new(
                &std::io::Error::other(failure.why),
            ))),
            Err(failure) => Err(network(failure.why)),
        }
    }

    /// What sends this peer's heartbeat batches: its address and identity, not its streams.
    fn batcher(&self) -> Batcher {
        Batcher {
            sender: self.sender,
            client: self.client.clone(),
            url: self.url.clone(),
            target: self.target,
            health: self.health.clone(),
            pulses: self.pulses.clone(),
        }
    }

    /// The client span of an RPC to this peer (the disabled span when
    /// traces are off).
    fn rpc_span(&self, path: &'static str) -> Span {
        telemetry::span(|| {
            tracing::info_span!(
                "raft.rpc",
                otel.name = path,
                otel.kind = "client",
                raft.target = self.target,
                raft.entries = tracing::field::Empty,
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                error.message = tracing::field::Empty,
            )
        })
    }
}

/// Sends the batches of named groups' heartbeats to one node (`pulse`), one at a time.
struct Batcher {
    sender: NodeId,
    client: reqwest::Client,
    /// The peer's advertised URL, as logs and metrics name it.
    url: String,
    target: NodeId,
    health: PeerHealth,
    pulses: Pulses,
}

impl Batcher {
    async fn run(self, mut receive: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
        while let Some(batch) = pulse::next_batch(&mut receive).await {
            if !batch.is_empty() {
                self.send(batch).await;
            }
        }
    }

    /// One batch, each heartbeat answered with its item's answer, or all with why it failed.
    async fn send(&self, batch: Vec<Pending>) {
        let mut body = Vec::with_capacity(batch.iter().map(|p| p.body.len() + 12).sum());
        for pending in &batch {
            pulse::encode_item(&mut body, pending.group, &pending.body);
        }
        let now = std::time::Instant::now();
        let wait = batch
            .iter()
            .map(|p| p.deadline.saturating_duration_since(now))
            .min()
            .unwrap_or(pulse::WINDOW);
        // The newest word on where the target is: the last heartbeat's group's.
        let url = batch.last().map(|p| p.url.clone()).unwrap_or_default();
        let answers = self.post(&url, body, wait).await;
        let refused_all =
            matches!(&answers, Ok(answers) if !answers.is_empty() && answers.iter().all(|a| a.ok.is_none()));
        match &answers {
            Ok(_) if !refused_all => self.health.answered(self.target, &self.url),
            Ok(_) => self.health.failed(
                self.target,
                &self.url,
                &PeerError::Refused {
                    url: url.clone(),
                    status: reqwest::StatusCode::CONFLICT,
                    body: "every batched heartbeat refused".into(),
                },
            ),
            Err(e) => self.health.failed(self.target, &self.url, e),
        }
        let failure = match answers {
            Ok(answers) if answers.len() == batch.len() => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    let _ = pending.answer.send(Ok(answer));
                }
                return;
            }
            Ok(answers) => pulse::BatchFailure {
                unreachable: false,
                why: format!("{} answers to {} heartbeats", answers.len(), batch.len()),
            },
            Err(e) => {
                if matches!(&e, PeerError::Refused { status, body, .. }
                    if *status == reqwest::StatusCode::NOT_FOUND && error_code(body).as_deref() == Some("not_found"))
                {
                    tracing::info!(peer = self.target, url = %self.url, "this peer has no heartbeat batches (an older version): sending it heartbeats one at a time");
                    self.pulses.send_directly_to(self.target);
                }
                pulse::BatchFailure {
                    unreachable: matches!(&e, PeerError::Refused { .. })
                        || matches!(&e, PeerError::Transport(t) if t.is_connect()),
                    why: e.to_string(),
                }
            }
        };
        for pending in batch {
            let _ = pending.answer.send(Err(failure.clone()));
        }
    }

    async fn post(&self, url: &str, body: Vec<u8>, wait: Duration) -> Result<Vec<PulseAnswer>, PeerError> {
        let response = self
            .client
            .post(url)
            .header(TARGET_HEADER, self.target.to_string())
            .header(SENDER_HEADER, self.sender.to_string())
            .header(pulse::WAIT_HEADER, wait.as_millis().to_string())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .timeout(wait)
            .body(body)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
            return Err(PeerError::Refused {
                url: url.to_string(),
                status,
                body,
            });
        }
        Ok(response.json().await?)
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = Tables;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        if self.batches && rpc.entries.is_empty() && self.pulses.batches_to(self.target) {
            return self.send_heartbeat(&rpc, &option).await;
        }
        let (answer, _) = self.send_append(rpc, &option, None, 0).await?;
        Ok(answer)
    }

    /// Up to `--append-window` requests in flight, once the peer shows it
    /// hands them to its Raft core in order (`gate`); one at a time before.
    fn stream_append<'s, S>(
        &'s mut self,
        input: S,
        option: RPCOption,
    ) -> BoxFuture<
        's,
        Result<BoxStream<'s, Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>>, RPCError<TypeConfig>>,
    >
    where
        S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
    {
        if self.stream.window <= 1 || self.batches {
            // Not pipelining (the default): openraft's own one at a time,
            // each request plain (no stream position), as before the gate.
            return openraft::network::stream_append_sequential(self, input, option);
        }
        Box::pin(async move { Ok(super::pipeline::responses(self, input, option)) })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.post_json(VOTE_PATH, &rpc, &option).await.map_err(PeerError::rpc)
    }

    /// Would the peer vote for this candidate (nothing is changed there)?
    /// A peer whose router does not know the route (404 `not_found`: a
    /// distlog from before pre-vote, during a rolling upgrade) is counted as
    /// granting, so that a mixed cluster still elects; an unreachable one
    /// is not (a cut-off node must not win its own pre-vote and then raise
    /// its term), nor any other 404 (a node without `--peers`, a proxy).
    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.post_json(PRE_VOTE_PATH, &rpc, &option).await {
            Err(PeerError::Refused { status, body, .. })
                if status == reqwest::StatusCode::NOT_FOUND && error_code(&body).as_deref() == Some("not_found") =>
            {
                Ok(VoteResponse::new(rpc.vote, None, true))
            }
            answer => answer.map_err(PeerError::rpc),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: openraft::type_config::alias::SnapshotOf<TypeConfig, Tables>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let body = SnapshotBody {
            vote,
            meta: snapshot.meta,
            tables: snapshot.snapshot,
        };
        let body = serde_json::to_vec(&body).map_err(|e| StreamingError::Network(NetworkError::new(&e)))?;
        let allowance = self.patience.allow(option.soft_ttl(), body.len());
        let sent = async {
            let started = std::time::Instant::now();
            let answer = self.post_json_bytes(SNAPSHOT_PATH, body, allowance.timeout).await;
            self.note_patience(&allowance, started.elapsed(), &answer);
            answer
        };
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = sent => answer.map_err(PeerError::streaming),
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.post_json(TRANSFER_PATH, &req, &option)
            .await
            .map_err(PeerError::rpc)
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::Vote as RaftVote;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The head of the one request a peer sends to a listener that answers
    /// it `403 peer_identity_mismatch`, and what the peer made of that.
    async fn one_vote(
        sender: NodeId,
        target: NodeId,
    ) -> (String, Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                assert!(n > 0, "the request ended early");
                head.extend_from_slice(&buf[..n]);
            }
            let body = r#"{"code":"peer_identity_mismatch","error":"no"}"#;
            let answer = format!(
                "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&head).to_ascii_lowercase()
        });
        let mut network = Network {
            id: sender,
            client: reqwest::Client::new(),
            routes: Routes::default(),
            health: PeerHealth::default(),
            book: PeerBook::default(),
            window: 1,
            group: 0,
            pulses: Default::default(),
            commit: Default::default(),
        };
        let member = Member {
            url,
            max_record_bytes: None,
            peer_url: None,
        };
        let mut peer = network.new_client(target, &member).await;
        let rpc = VoteRequest::new(RaftVote::new(3, sender), None);
        let answer = peer.vote(rpc, RPCOption::new(Duration::from_secs(5))).await;
        (server.await.unwrap(), answer)
    }

    #[tokio::test]
    async fn every_request_names_its_target_and_its_sender_and_a_refusal_is_a_failed_rpc() {
        let (head, answer) = one_vote(5, 9).await;
        assert!(head.contains("x-distlog-raft-target: 9\r\n"), "{head}");
        assert!(head.contains("x-distlog-raft-sender: 5\r\n"), "{head}");
        assert!(
            matches!(answer, Err(RPCError::Unreachable(_))),
            "a refused sender is an unreachable peer, never a vote: {answer:?}"
        );
    }
}
