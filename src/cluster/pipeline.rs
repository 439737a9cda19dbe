//! Pipelined append-entries, the sender's side: openraft's replication
//! task hands a `Peer` a stream of requests (`RaftNetworkV2::stream_append`)
//! and produces the next one as soon as there are new entries (or a new
//! commit index), without waiting for the previous answer. Up to
//! `--append-window` of them (off by default: 1) are in flight at once, each its own `POST /raft/append`
//! carrying its `gate::Position`; the answers are yielded in the order of
//! the requests. The stream ends at the first failure, conflict, higher
//! vote or partial success, as openraft's sequential default does: the
//! requests still in flight are dropped, and openraft starts a new stream
//! from the follower's matching point.
//!
//! Until a peer answers with `gate::GATED_HEADER` (a node from before the
//! gate hands concurrent requests to its core in any order) one request
//! at a time is in flight, as before.

use std::collections::VecDeque;

use futures_util::stream::{FuturesOrdered, StreamExt};
use openraft::OptionalSend;
use openraft::base::{BoxFuture, BoxStream};
use openraft::errors::RPCError;
use openraft::network::RPCOption;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, StreamAppendResult};

use super::gate::Position;
use super::network::Peer;
use super::types::{LogId, TypeConfig};

/// The window these tests pipeline with (`--append-window 8`; the
/// default, 1, is openraft's sequential path).
#[cfg(test)]
const WINDOW: usize = 8;

/// A `Peer`'s stream of requests, kept across openraft's streams: the
/// numbering goes on, so a follower's lane never sees a number twice.
#[derive(Clone, Debug)]
pub struct StreamState {
    pub id: u64,
    /// Requests in flight at most, once the peer gates.
    pub window: usize,
    /// The number of the next request.
    pub next: u64,
    /// Whether the peer showed that it gates (`gate`).
    pub gated: bool,
}

impl StreamState {
    pub fn new(window: usize) -> StreamState {
        StreamState {
            id: stream_id(),
            window,
            next: 0,
            gated: false,
        }
    }
}

/// A random stream id: a restarted sender must not continue a lane a
/// follower still holds for its previous life.
fn stream_id() -> u64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    match ring::rand::SystemRandom::new().fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

type Answer = Result<StreamAppendResult<TypeConfig>, RPCError<TypeConfig>>;

/// One request's answer, with the range it covered.
struct Sent {
    prev: Option<LogId>,
    last: Option<LogId>,
    answer: Result<(AppendEntriesResponse<TypeConfig>, bool), RPCError<TypeConfig>>,
}

struct Window<'s, S> {
    peer: &'s mut Peer,
    input: S,
    input_ended: bool,
    in_flight: FuturesOrdered<BoxFuture<'static, Sent>>,
    /// The numbers of the requests in flight, oldest first.
    numbers: VecDeque<u64>,
    option: RPCOption,
    ended: bool,
}

/// The answers to `input`'s requests, in order.
pub fn responses<'s, S>(peer: &'s mut Peer, input: S, option: RPCOption) -> BoxStream<'s, Answer>
where
    S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
{
    let window = Window {
        peer,
        input,
        input_ended: false,
        in_flight: FuturesOrdered::new(),
        numbers: VecDeque::new(),
        option,
        ended: false,
    };
    futures_util::stream::unfold(window, Window::next_answer).boxed()
}

impl<'s, S> Window<'s, S>
where
    S: futures_util::Stream<Item = AppendEntriesRequest<TypeConfig>> + OptionalSend + Unpin + 'static,
{
    fn width(&self) -> usize {
        if self.peer.stream.gated {
            self.peer.stream.window
        } else {
            1
        }
    }

    /// Sends requests while there is room, and yields the next answer.
    async fn next_answer(mut self) -> Option<(Answer, Self)> {
        if self.ended {
            return None;
        }
        loop {
            if self.in_flight.is_empty() {
                if self.input_ended {
                    return None;
                }
                match self.input.next().await {
                    Some(request) => self.send(request),
                    None => self.input_ended = true,
                }
                continue;
            }
            if self.input_ended || self.in_flight.len() >= self.width() {
                let sent = self.in_flight.next().await?;
                return Some(self.answered(sent));
            }
            let Window { input, in_flight, .. } = &mut self;
            tokio::select! {
                biased;
                sent = in_flight.next() => {
                    let sent = sent?;
                    return Some(self.answered(sent));
                }
                request = input.next() => match request {
                    Some(request) => self.send(request),
                    None => self.input_ended = true,
                },
            }
        }
    }

    fn send(&mut self, request: AppendEntriesRequest<TypeConfig>) {
        let seq = self.peer.stream.next;
        self.peer.stream.next += 1;
        let position = Position {
            stream: self.peer.stream.id,
            seq,
            low: self.numbers.front().copied().unwrap_or(seq),
        };
        self.numbers.push_back(seq);
        let prev = request.prev_log_id;
        let last = request.entries.last().map(|e| e.log_id).or(prev);
        let (peer, option) = (self.peer.clone(), self.option.clone());
        // The peer takes those in flight first: this one's wait counts them.
        let ahead = self.in_flight.len();
        self.in_flight.push_back(Box::pin(async move {
            let answer = peer.send_append(request, &option, Some(position), ahead).await;
            Sent { prev, last, answer }
        }));
    }

    fn answered(mut self, sent: Sent) -> (Answer, Self) {
        self.numbers.pop_front();
        let (answer, gated) = match sent.answer {
            Ok(answer) => answer,
            Err(e) => {
                self.ended = true;
                return (Err(e), self);
            }
        };
        self.peer.stream.gated = gated;
        let partial = match &answer {
            AppendEntriesResponse::PartialSuccess(matching) => Some(*matching),
            _ => None,
        };
        let result = answer.into_stream_result(sent.prev, sent.last);
        if result.is_err() || partial.is_some_and(|p| p != sent.last) {
            self.ended = true;
        }
        (Ok(result), self)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use axum::Router;
    use axum::routing::post;
    use openraft::impls::Vote;
    use openraft::network::{RaftNetworkFactory, v2::RaftNetworkV2};

    use super::*;
    use crate::cluster::gate::GATED_HEADER;
    use crate::cluster::network::{Network, PeerBook, Routes};
    use crate::cluster::peer_health::PeerHealth;
    use crate::cluster::types::Member;

    /// A peer that answers every append after a while, counting how many it
    /// holds at once; `gates`: whether it says it gates (a node from
    /// before the gate does not).
    async fn peer_answering(gates: bool) -> (String, Arc<AtomicUsize>) {
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let seen = most.clone();
        let app = Router::new().route(
            "/raft/append",
            post(move || {
                let (now, most) = (now.clone(), most.clone());
                async move {
                    let held = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(held, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    let body = serde_json::to_vec(&AppendEntriesResponse::<TypeConfig>::Success).unwrap();
                    let mut answer = axum::response::Response::new(axum::body::Body::from(body));
                    if gates {
                        answer.headers_mut().insert(GATED_HEADER, "1".parse().unwrap());
                    }
                    answer
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, seen)
    }

    /// Sends `n` entry-less appends as one stream; the answers.
    async fn stream_of(url: String, n: usize) -> Vec<Answer> {
        let mut network = Network {
            id: 1,
            client: reqwest::Client::new(),
            routes: Routes::default(),
            health: PeerHealth::default(),
            book: PeerBook::default(),
            window: WINDOW,
            group: 0,
            pulses: Default::default(),
            commit: Default::default(),
        };
        let member = Member {
            url,
            max_record_bytes: None,
            peer_url: None,
        };
        let mut peer = network.new_client(2, &member).await;
        let requests = (0..n).map(|_| AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![],
        });
        let input = futures_util::stream::iter(requests.collect::<Vec<_>>());
        let option = RPCOption::new(Duration::from_secs(5));
        let answers = peer.stream_append(input, option).await.unwrap();
        answers.collect().await
    }

    #[tokio::test]
    async fn a_gating_peer_gets_several_requests_at_once_and_answers_come_in_order() {
        let (url, most) = peer_answering(true).await;
        let answers = stream_of(url, 24).await;
        assert_eq!(answers.len(), 24);
        assert!(answers.iter().all(|a| matches!(a, Ok(Ok(None)))), "{answers:?}");
        let most = most.load(Ordering::SeqCst);
        assert!(most > 1 && most <= WINDOW, "{most} in flight at most");
    }

    #[tokio::test]
    async fn a_peer_from_before_the_gate_gets_one_request_at_a_time() {
        let (url, most) = peer_answering(false).await;
        let answers = stream_of(url, 12).await;
        assert_eq!(answers.len(), 12);
        assert_eq!(most.load(Ordering::SeqCst), 1);
    }

    /// A peer behind a link of `bytes_per_ms`, shared fairly by the
    /// requests crossing it at once (TCP connections sharing a link, or a
    /// follower's disk): each answer comes once its body went through.
    async fn peer_behind_a_link(bytes_per_ms: f64) -> String {
        let active = Arc::new(AtomicUsize::new(0));
        let app = Router::new()
            .route(
                "/raft/append",
                post(move |body: bytes::Bytes| {
                    let active = active.clone();
                    async move {
                        active.fetch_add(1, Ordering::SeqCst);
                        let mut left = body.len() as f64;
                        let mut last = std::time::Instant::now();
                        while left > 0.0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                            let now = std::time::Instant::now();
                            let share = bytes_per_ms / active.load(Ordering::SeqCst) as f64;
                            left -= share * now.duration_since(last).as_secs_f64() * 1000.0;
                            last = now;
                        }
                        active.fetch_sub(1, Ordering::SeqCst);
                        let body = serde_json::to_vec(&AppendEntriesResponse::<TypeConfig>::Success).unwrap();
                        let mut answer = axum::response::Response::new(axum::body::Body::from(body));
                        answer.headers_mut().insert(GATED_HEADER, "1".parse().unwrap());
                        answer
                    }
                }),
            )
            .layer(axum::extract::DefaultBodyLimit::disable());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    const BATCH: usize = crate::cluster::APPEND_BUDGET_BYTES as usize;

    /// Eight full batches as one stream over the link; the answers.
    async fn full_batches(window: usize) -> Vec<Answer> {
        let url = peer_behind_a_link(BATCH as f64 / 300.0).await;
        let mut network = Network {
            id: 1,
            client: reqwest::Client::new(),
            routes: Routes::default(),
            health: PeerHealth::default(),
            book: PeerBook::default(),
            window,
            group: 0,
            pulses: Default::default(),
            commit: Default::default(),
        };
        let member = Member {
            url,
            max_record_bytes: None,
            peer_url: None,
        };
        let mut peer = network.new_client(2, &member).await;
        // The peer showed it gates (an earlier stream's answer).
        peer.stream.gated = true;
        let requests: Vec<_> = (0..8u64)
            .map(|i| AppendEntriesRequest {
                vote: Vote::new_committed(1, 1),
                prev_log_id: (i > 0).then(|| crate::cluster::types::log_id(1, i)),
                leader_commit: None,
                entries: vec![crate::cluster::types::Entry {
                    log_id: crate::cluster::types::log_id(1, i + 1),
                    payload: openraft::EntryPayload::Normal(crate::cluster::types::UserRecord::new(
                        1,
                        1,
                        bytes::Bytes::from(vec![b'x'; BATCH - 1024]),
                    )),
                }],
            })
            .collect();
        // A heartbeat of 1 s: each request may take 750 ms.
        let option = RPCOption::new(Duration::from_millis(1000));
        peer.stream_append(futures_util::stream::iter(requests), option)
            .await
            .unwrap()
            .collect()
            .await
    }

    fn all_succeeded(answers: &[Answer]) {
        let failed: Vec<_> = answers.iter().filter(|a| !matches!(a, Ok(Ok(_)))).collect();
        assert!(
            failed.is_empty() && answers.len() == 8,
            "{} of 8 answered; failures: {failed:?}",
            answers.len()
        );
    }

    /// The control (`--append-window 1`): one at a time, every full batch
    /// crosses the link in time.
    #[tokio::test]
    async fn full_batches_one_at_a_time_cross_the_link_in_time() {
        all_succeeded(&full_batches(1).await);
    }

    /// Review finding F2: a lagging follower is sent full batches
    /// (`APPEND_BUDGET_BYTES` each) back to back. One at a time, each
    /// crosses the link in ~300 ms; eight at once share the link and each
    /// takes ~2.4 s. Each used to be waited for 3/4 of the heartbeat (750 ms
    /// here): all timed out, the stream restarted from the same matching
    /// point and sent the same eight again. A request's wait now counts the
    /// requests in flight ahead of it (`patience`).
    #[tokio::test]
    async fn full_batches_to_a_gating_peer_do_not_time_out_where_one_at_a_time_would_not() {
        all_succeeded(&full_batches(WINDOW).await);
    }
}
