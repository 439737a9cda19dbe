//! The follower's reorder gate for pipelined append-entries.
//!
//! A leader keeps up to `--append-window` append-entries requests in flight
//! to a follower, each its own HTTP request, so they may arrive in any
//! order. Raft stays safe under reordering, but a request that arrives
//! before the one it follows conflicts and restarts the leader's stream,
//! so the gate hands them to the Raft core in the order they were sent,
//! as soon as each one's predecessors were handed over (not answered:
//! the follower's group commit covers all the requests in flight with one
//! fsync).
//!
//! Wire: each request of a pipelined stream carries
//! `x-distlog-append-stream: <stream>/<seq>/<low>` (`Position`): the
//! sender's stream id (one per sender `Peer`), the request's number in it,
//! and the lowest number the sender has not had an answer to yet. Every
//! request below `low` was answered, so handed over: a lane that was
//! dropped (idle, evicted, a new node) starts again at `low`, and requests
//! the sender gave up on are skipped. A follower that gates answers with
//! `x-distlog-append-gated: 1`; a sender keeps one request in flight until
//! it sees that (an older follower answers requests as they come).
//!
//! Bounds: a request more than `Limits::max_ahead` past the next one is
//! refused; one that waits for a predecessor longer than
//! `Limits::gap_timeout` fails, and with it every later one of its lane
//! (the sender's stream ends at the first failure and starts a new one),
//! as does one whose handler is dropped while it waits (its sender hung up);
//! each sender has at most `Limits::lanes_per_sender` lanes and the gate
//! `Limits::max_lanes` (least recently used dropped first), and a lane
//! idle for `Limits::idle` goes. At most `Limits::max_handed_over`
//! requests handed over wait for their answers, across lanes: a Raft core
//! whose flush stalls takes a stream's requests ahead of their answers
//! only up to a point, and the rest would wait in the lanes' feeds, each up
//! to a batch, however many a leader's timed-out retries send. Past the
//! bound a request is refused (`Busy`) and its lane ends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use tokio::sync::{mpsc, oneshot};

use super::types::NodeId;

pub const STREAM_HEADER: &str = "x-distlog-append-stream";
pub const GATED_HEADER: &str = "x-distlog-append-gated";

/// Where one request stands in its sender's stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub stream: u64,
    pub seq: u64,
    /// Every request of the stream below this one was answered.
    pub low: u64,
}

impl Position {
    /// `<stream>/<seq>/<low>`, with `low <= seq`.
    pub fn parse(text: &str) -> Option<Position> {
        let mut parts = text.split('/').map(|p| p.parse::<u64>().ok());
        let (stream, seq, low) = (parts.next()??, parts.next()??, parts.next()??);
        (parts.next().is_none() && low <= seq).then_some(Position { stream, seq, low })
    }

    pub fn header_value(&self) -> String {
        format!("{}/{}/{}", self.stream, self.seq, self.low)
    }
}

/// The highest request number a gate takes (see `Gate::pass`).
const MAX_SEQ: u64 = 1 << 62;

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub gap_timeout: Duration,
    pub max_ahead: u64,
    pub lanes_per_sender: usize,
    pub max_lanes: usize,
    pub idle: Duration,
    pub max_handed_over: usize,
}

impl Limits {
    /// A gap is given up after `gap_timeout` (about a heartbeat interval).
    /// The leader waits for a request carrying entries longer than that
    /// (`patience`: time for its bytes and those ahead of it), so a request
    /// that arrives behind a large one still uploading may be refused as a
    /// gap and its stream opened again: known, and left while pipelining
    /// is off by default.
    pub fn new(gap_timeout: Duration) -> Limits {
        Limits {
            gap_timeout,
            max_ahead: 64,
            lanes_per_sender: 4,
            max_lanes: 64,
            idle: Duration::from_secs(60),
            // Four of the largest windows (`--append-window` is at most 32):
            // one stream never has more than a window in flight, so this is
            // reached only by streams restarted behind a stalled core.
            max_handed_over: 128,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GateError {
    #[error("append {seq} of stream {stream} comes after the stream moved past it")]
    Stale { stream: u64, seq: u64 },
    #[error("append {seq} of stream {stream} is more than {ahead} past the next one")]
    TooFarAhead { stream: u64, seq: u64, ahead: u64 },
    #[error("append {seq} of stream {stream} waited {waited:?} for an earlier one")]
    Gap { stream: u64, seq: u64, waited: Duration },
    #[error("append {seq} of stream {stream}: the stream ended before it was answered")]
    Ended { stream: u64, seq: u64 },
    #[error("append {seq} of stream {stream}: {waiting} appends handed to the Raft core wait for their answers")]
    Busy { stream: u64, seq: u64, waiting: usize },
}

/// What a lane feeds its requests into: given the requests in order, the
/// answers in the same order, ending at the first failure (openraft's
/// `Raft::stream_append`, or a stand-in in tests).
pub trait Submit<Q, A>: Send + Sync + 'static {
    fn open(&self, requests: BoxStream<'static, Q>) -> BoxStream<'static, A>;
}

type Answer<A> = oneshot::Sender<A>;

/// Who waits for each request handed over, in order; `ended` once the
/// lane's stream ended (nothing more will be answered).
struct Waiting<A> {
    answers: Mutex<VecDeque<Answer<A>>>,
    ended: std::sync::atomic::AtomicBool,
    /// The gate's count of requests handed over and not answered.
    handed_over: Arc<AtomicUsize>,
}

impl<A> Waiting<A> {
    fn ended(&self) -> bool {
        self.ended.load(std::sync::atomic::Ordering::Acquire)
    }
}

struct Lane<Q, A> {
    /// The next request to hand over.
    next: u64,
    /// Requests that came before their predecessors.
    early: BTreeMap<u64, (Q, Answer<A>)>,
    feed: mpsc::UnboundedSender<Q>,
    waiting: Arc<Waiting<A>>,
    used: Instant,
    /// Tells lanes apart across a drop and a new lane of the same stream.
    generation: u64,
}

impl<Q, A> Lane<Q, A> {
    fn hand_over(&mut self, request: Q, answer: Answer<A>) {
        self.next += 1;
        let mut answers = locked(&self.waiting.answers);
        // Once the stream ended, the answer is dropped: the request fails.
        if !self.waiting.ended() && self.feed.send(request).is_ok() {
            answers.push_back(answer);
            self.waiting.handed_over.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn release_early(&mut self) {
        while let Some((request, answer)) = self.early.remove(&self.next) {
            self.hand_over(request, answer);
        }
    }

    fn ended(&self) -> bool {
        self.waiting.ended()
    }
}

type Key = (NodeId, u64);

pub struct Gate<Q, A> {
    lanes: Mutex<HashMap<Key, Lane<Q, A>>>,
    submit: Arc<dyn Submit<Q, A>>,
    limits: Limits,
    generations: std::sync::atomic::AtomicU64,
    handed_over: Arc<AtomicUsize>,
}

/// What `Gate::arrive` made of a request.
enum Arrival<A> {
    HandedOver(oneshot::Receiver<A>),
    Early(oneshot::Receiver<A>, u64),
}

impl<Q: Send + 'static, A: Send + 'static> Gate<Q, A> {
    pub fn new(submit: Arc<dyn Submit<Q, A>>, limits: Limits) -> Gate<Q, A> {
        Gate {
            lanes: Mutex::new(HashMap::new()),
            submit,
            limits,
            generations: Default::default(),
            handed_over: Default::default(),
        }
    }

    /// Hands `request` to the Raft core once its predecessors were, and
    /// waits for its answer.
    pub async fn pass(&self, sender: NodeId, at: Position, request: Q) -> Result<A, GateError> {
        let (stream, seq) = (at.stream, at.seq);
        // A sender numbers from 0, one a request: numbers this high are not
        // one's, and the lane's arithmetic must not overflow on them.
        if seq > MAX_SEQ {
            return Err(GateError::TooFarAhead {
                stream,
                seq,
                ahead: self.limits.max_ahead,
            });
        }
        let ended = GateError::Ended { stream, seq };
        match self.arrive(sender, at, request)? {
            Arrival::HandedOver(answer) => answer.await.map_err(|_| ended),
            Arrival::Early(mut answer, generation) => {
                // Dropped while it waits (its sender hung up), it is given
                // up at once rather than handed over however late.
                let waiting = GiveUpOnDrop {
                    gate: self,
                    key: (sender, stream),
                    seq,
                    generation,
                };
                let answer = match tokio::time::timeout(self.limits.gap_timeout, &mut answer).await {
                    Ok(answer) => answer.map_err(|_| ended),
                    Err(_) if self.give_up((sender, stream), seq, generation) => Err(GateError::Gap {
                        stream,
                        seq,
                        waited: self.limits.gap_timeout,
                    }),
                    // Handed over just now.
                    Err(_) => answer.await.map_err(|_| ended),
                };
                std::mem::forget(waiting);
                answer
            }
        }
    }

    fn arrive(&self, sender: NodeId, at: Position, request: Q) -> Result<Arrival<A>, GateError> {
        let mut lanes = locked(&self.lanes);
        let key = (sender, at.stream);
        let waiting = self.handed_over.load(Ordering::Acquire);
        if waiting >= self.limits.max_handed_over {
            // Its lane cannot go on past it in order: the sender's stream
            // ends here and starts again once the core answers.
            lanes.remove(&key);
            return Err(GateError::Busy {
                stream: at.stream,
                seq: at.seq,
                waiting,
            });
        }
        let lane = self.lane(&mut lanes, key, at.low);
        lane.used = Instant::now();
        if at.low > lane.next {
            // The sender has answers to everything below `low`: what still
            // waits here below it, it gave up on.
            lane.early = lane.early.split_off(&at.low);
            lane.next = at.low;
            lane.release_early();
        }
        let (tx, rx) = oneshot::channel();
        if at.seq < lane.next {
            return Err(GateError::Stale {
                stream: at.stream,
                seq: at.seq,
            });
        }
        if at.seq > lane.next + self.limits.max_ahead {
            return Err(GateError::TooFarAhead {
                stream: at.stream,
                seq: at.seq,
                ahead: self.limits.max_ahead,
            });
        }
        if at.seq > lane.next {
            // A sender never sends one number twice; a second would take the
            // first's place (and its dropped handler would end the lane).
            if lane.early.contains_key(&at.seq) {
                return Err(GateError::Stale {
                    stream: at.stream,
                    seq: at.seq,
                });
            }
            lane.early.insert(at.seq, (request, tx));
            return Ok(Arrival::Early(rx, lane.generation));
        }
        lane.hand_over(request, tx);
        lane.release_early();
        Ok(Arrival::HandedOver(rx))
    }

    /// The lane of `key`, made (starting at `low`) if there is none or
    /// its stream ended.
    fn lane<'a>(&self, lanes: &'a mut HashMap<Key, Lane<Q, A>>, key: Key, low: u64) -> &'a mut Lane<Q, A> {
        let next = match lanes.get(&key) {
            Some(lane) if !lane.ended() => None,
            Some(lane) => Some(lane.next.max(low)),
            None => Some(low),
        };
        if let Some(next) = next {
            lanes.remove(&key);
            self.make_room(lanes, key.0);
            let lane = self.open(next);
            lanes.insert(key, lane);
        }
        lanes.get_mut(&key).expect("the lane was just made")
    }

    fn open(&self, next: u64) -> Lane<Q, A> {
        let (feed, requests) = mpsc::unbounded_channel();
        let requests = futures_util::stream::unfold(requests, |mut rx| async move { rx.recv().await.map(|q| (q, rx)) });
        let waiting = Arc::new(Waiting {
            answers: Mutex::new(VecDeque::new()),
            ended: Default::default(),
            handed_over: self.handed_over.clone(),
        });
        tokio::spawn(drive(self.submit.open(requests.boxed()), waiting.clone()));
        Lane {
            next,
            early: BTreeMap::new(),
            feed,
            waiting,
            used: Instant::now(),
            generation: self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// Drops idle lanes, then the least recently used ones past the bounds.
    fn make_room(&self, lanes: &mut HashMap<Key, Lane<Q, A>>, sender: NodeId) {
        let now = Instant::now();
        lanes.retain(|_, lane| now.duration_since(lane.used) < self.limits.idle && !lane.ended());
        let oldest = |lanes: &HashMap<Key, Lane<Q, A>>, of: Option<NodeId>| {
            lanes
                .iter()
                .filter(|(key, _)| of.is_none_or(|s| key.0 == s))
                .min_by_key(|(_, lane)| lane.used)
                .map(|(key, _)| *key)
        };
        while lanes.keys().filter(|k| k.0 == sender).count() >= self.limits.lanes_per_sender {
            let Some(key) = oldest(lanes, Some(sender)) else { break };
            lanes.remove(&key);
        }
        while lanes.len() >= self.limits.max_lanes {
            let Some(key) = oldest(lanes, None) else { break };
            lanes.remove(&key);
        }
    }

    /// After a gap timed out for `seq`: if it still waits, its lane goes
    /// (every request waiting in it fails; those handed over are answered).
    fn give_up(&self, key: Key, seq: u64, generation: u64) -> bool {
        let mut lanes = locked(&self.lanes);
        let waiting = lanes
            .get(&key)
            .is_some_and(|lane| lane.generation == generation && lane.early.contains_key(&seq));
        if waiting {
            lanes.remove(&key);
        }
        waiting
    }

    #[cfg(test)]
    fn lane_count(&self) -> usize {
        locked(&self.lanes).len()
    }
}

/// A request waiting in its lane's `early` while this lives; dropped with
/// it (its handler dropped: the sender closed the connection), the request
/// is given up and its lane with it, as after a gap timeout. Forgotten once
/// the wait is over.
struct GiveUpOnDrop<'a, Q: Send + 'static, A: Send + 'static> {
    gate: &'a Gate<Q, A>,
    key: Key,
    seq: u64,
    generation: u64,
}

impl<Q: Send + 'static, A: Send + 'static> Drop for GiveUpOnDrop<'_, Q, A> {
    fn drop(&mut self) {
        self.gate.give_up(self.key, self.seq, self.generation);
    }
}

/// Answers the requests of one lane in order, until its stream ends; then
/// every request still waiting fails (its answer dropped).
async fn drive<A>(mut answers: BoxStream<'static, A>, waiting: Arc<Waiting<A>>) {
    // However the task ends (a panic polling the stream, a runtime shutting
    // down), the lane ends and stops counting against the bound.
    let _end = EndLane(waiting.clone());
    while let Some(answer) = answers.next().await {
        let Some(tx) = locked(&waiting.answers).pop_front() else {
            debug_assert!(false, "an answer to a request never handed over");
            break;
        };
        waiting.handed_over.fetch_sub(1, Ordering::AcqRel);
        let _ = tx.send(answer);
    }
}

/// Ends a lane when its `drive` ends: every request still waiting fails
/// (its answer dropped) and leaves the count of requests handed over.
struct EndLane<A>(Arc<Waiting<A>>);

impl<A> Drop for EndLane<A> {
    fn drop(&mut self) {
        let waiting = &self.0;
        let mut answers = locked(&waiting.answers);
        waiting.ended.store(true, Ordering::Release);
        waiting.handed_over.fetch_sub(answers.len(), Ordering::AcqRel);
        answers.clear();
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers each request with itself, in order, recording the order it
    /// was handed over in; a request of `FAIL` is answered and ends the
    /// stream (a conflict in openraft).
    #[derive(Default)]
    struct Echo {
        order: Arc<Mutex<Vec<u64>>>,
    }

    const FAIL: u64 = 1000;

    impl Submit<u64, u64> for Echo {
        fn open(&self, requests: BoxStream<'static, u64>) -> BoxStream<'static, u64> {
            let order = self.order.clone();
            requests
                .map(move |q| {
                    locked(&order).push(q);
                    q
                })
                .scan(false, |failed, q| {
                    let answer = (!*failed).then_some(q);
                    *failed = q == FAIL;
                    std::future::ready(answer)
                })
                .boxed()
        }
    }

    type Order = Arc<Mutex<Vec<u64>>>;

    fn gate(limits: Limits) -> (Arc<Gate<u64, u64>>, Order) {
        let echo = Echo::default();
        let order = echo.order.clone();
        (Arc::new(Gate::new(Arc::new(echo), limits)), order)
    }

    fn limits() -> Limits {
        Limits::new(Duration::from_millis(200))
    }

    fn at(stream: u64, seq: u64, low: u64) -> Position {
        Position { stream, seq, low }
    }

    /// Starts `pass` and lets it reach the gate before returning.
    async fn arrive(
        gate: &Arc<Gate<u64, u64>>,
        sender: NodeId,
        at: Position,
        q: u64,
    ) -> tokio::task::JoinHandle<Result<u64, GateError>> {
        let g = gate.clone();
        let task = tokio::spawn(async move { g.pass(sender, at, q).await });
        // `pass` takes its place synchronously in its first poll.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        task
    }

    #[test]
    fn a_position_reads_back_and_refuses_nonsense() {
        let p = at(7, 9, 3);
        assert_eq!(Position::parse(&p.header_value()), Some(p));
        for bad in ["", "1/2", "1/2/3/4", "1/2/3", "a/2/1", "1//1", "-1/2/1"] {
            assert_eq!(Position::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn requests_arriving_out_of_order_are_handed_over_in_order() {
        let (gate, order) = gate(limits());
        let third = arrive(&gate, 1, at(5, 2, 0), 12).await;
        let second = arrive(&gate, 1, at(5, 1, 0), 11).await;
        assert!(locked(&order).is_empty(), "nothing before the first");
        let first = arrive(&gate, 1, at(5, 0, 0), 10).await;
        assert_eq!(first.await.unwrap(), Ok(10));
        assert_eq!(second.await.unwrap(), Ok(11));
        assert_eq!(third.await.unwrap(), Ok(12));
        assert_eq!(*locked(&order), vec![10, 11, 12]);
        // The stream goes on where it was.
        assert_eq!(gate.pass(1, at(5, 3, 3), 13).await, Ok(13));
    }

    #[tokio::test]
    async fn a_gap_times_out_and_fails_the_requests_waiting_behind_it() {
        let (gate, order) = gate(limits());
        assert_eq!(gate.pass(1, at(5, 0, 0), 10).await, Ok(10));
        let after = arrive(&gate, 1, at(5, 3, 1), 13).await;
        let started = Instant::now();
        let waited = gate.pass(1, at(5, 2, 1), 12).await;
        assert!(matches!(waited, Err(GateError::Gap { seq: 2, .. })), "{waited:?}");
        assert!(started.elapsed() >= limits().gap_timeout);
        let after = after.await.unwrap();
        assert!(
            matches!(
                after,
                Err(GateError::Ended { seq: 3, .. }) | Err(GateError::Gap { seq: 3, .. })
            ),
            "{after:?}"
        );
        assert_eq!(*locked(&order), vec![10], "nothing was handed over past the gap");
        // The sender's next stream starts where its answers end.
        assert_eq!(gate.pass(1, at(5, 4, 4), 14).await, Ok(14));
        assert_eq!(*locked(&order), vec![10, 14]);
    }

    #[tokio::test]
    async fn low_skips_what_the_sender_gave_up_on_and_older_requests_are_stale() {
        let (gate, order) = gate(limits());
        assert_eq!(gate.pass(1, at(5, 0, 0), 10).await, Ok(10));
        let waiting = arrive(&gate, 1, at(5, 2, 1), 12).await;
        // Seq 1 was given up on: the sender's new stream starts at 5.
        assert_eq!(gate.pass(1, at(5, 5, 5), 15).await, Ok(15));
        assert!(waiting.await.unwrap().is_err(), "a request below low is dropped");
        assert_eq!(
            gate.pass(1, at(5, 1, 1), 11).await,
            Err(GateError::Stale { stream: 5, seq: 1 })
        );
        assert_eq!(*locked(&order), vec![10, 15]);
    }

    #[tokio::test]
    async fn a_request_too_far_ahead_is_refused() {
        let (gate, _) = gate(limits());
        let far = limits().max_ahead + 1;
        assert!(matches!(
            gate.pass(1, at(5, far, 0), 1).await,
            Err(GateError::TooFarAhead { .. })
        ));
    }

    #[tokio::test]
    async fn a_failed_answer_ends_the_stream_and_the_next_request_opens_a_new_one() {
        let (gate, order) = gate(limits());
        assert_eq!(gate.pass(1, at(5, 0, 0), FAIL).await, Ok(FAIL));
        // Handed over after the failure: never answered.
        let after = gate.pass(1, at(5, 1, 0), 11).await;
        assert!(matches!(after, Err(GateError::Ended { seq: 1, .. })), "{after:?}");
        assert_eq!(gate.pass(1, at(5, 2, 2), 12).await, Ok(12));
        assert_eq!(locked(&order).last(), Some(&12));
        // Answered, or dropped with their ended stream: none counts against
        // the bound on requests handed over (`Busy` would refuse forever).
        assert_eq!(gate.handed_over.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_new_leaders_stream_replaces_old_ones_within_the_bounds() {
        let limits = Limits {
            lanes_per_sender: 2,
            max_lanes: 3,
            ..limits()
        };
        let (gate, _) = gate(limits);
        // An old leader's stream with a request waiting for a predecessor.
        let stuck = arrive(&gate, 1, at(5, 1, 0), 11).await;
        for stream in 6..10 {
            assert_eq!(gate.pass(1, at(stream, 0, 0), stream).await, Ok(stream));
        }
        assert!(gate.lane_count() <= 2, "one sender's lanes are bounded");
        // A new leader's streams.
        for stream in 20..24 {
            assert_eq!(gate.pass(2, at(stream, 0, 0), stream).await, Ok(stream));
        }
        assert!(gate.lane_count() <= 3, "the gate's lanes are bounded");
        assert!(
            stuck.await.unwrap().is_err(),
            "the old leader's waiting request fails with its lane"
        );
    }

    /// Review finding F1: a leader that gives up on a request closes its
    /// connection; hyper then drops the handler (`pass`) of a request that
    /// waits in `early`, and its gap timeout never ran: the request (a body
    /// of up to a few MiB) stayed in the lane, and was handed over when its
    /// predecessor came, however late. Now it is given up with its handler.
    #[tokio::test]
    async fn a_request_whose_handler_was_dropped_while_waiting_is_given_up() {
        let (gate, order) = gate(limits());
        let waiting = arrive(&gate, 1, at(5, 1, 0), 11).await;
        waiting.abort();
        let _ = waiting.await;
        tokio::time::sleep(limits().gap_timeout * 2).await;
        assert_eq!(gate.pass(1, at(5, 0, 0), 10).await, Ok(10));
        assert_eq!(
            *locked(&order),
            vec![10],
            "a request whose handler was dropped was handed over after all"
        );
    }

    /// A number sent twice while the first waits is refused; the first
    /// keeps its place and is handed over in order.
    #[tokio::test]
    async fn a_number_sent_twice_while_the_first_waits_is_refused() {
        let (gate, order) = gate(limits());
        let first = arrive(&gate, 1, at(5, 1, 0), 11).await;
        let second = gate.pass(1, at(5, 1, 0), 12).await;
        assert!(matches!(second, Err(GateError::Stale { .. })), "{second:?}");
        assert_eq!(gate.pass(1, at(5, 0, 0), 10).await, Ok(10));
        assert_eq!(first.await.unwrap(), Ok(11));
        assert_eq!(*locked(&order), vec![10, 11]);
    }

    /// Review: a peer's header may say any u64; the lane's arithmetic
    /// (`next + max_ahead`, `next += 1`) must not overflow (a panic in a
    /// debug build, a wrapped lane in release).
    #[tokio::test]
    async fn positions_at_the_end_of_u64_are_refused_without_a_panic() {
        let (gate, _) = gate(limits());
        let g = gate.clone();
        let near_end = tokio::spawn(async move { g.pass(1, at(5, u64::MAX, u64::MAX - 10), 1).await });
        let answer = near_end.await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "a position at the end of u64 is refused: {answer:?}"
        );
        let g = gate.clone();
        let at_end = tokio::spawn(async move { g.pass(1, at(6, u64::MAX, u64::MAX), 1).await });
        let answer = at_end.await;
        assert!(
            matches!(answer, Ok(Err(_))),
            "a position at the end of u64 is refused: {answer:?}"
        );
    }

    /// A request body that counts itself while it is held.
    struct Held(Arc<std::sync::atomic::AtomicUsize>);

    impl Drop for Held {
        fn drop(&mut self) {
            self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// A Raft core whose flush stalls: like openraft's `stream_append`, it
    /// takes up to 64 requests ahead of their answers, then no more.
    struct Stalled;

    impl Submit<Held, u64> for Stalled {
        fn open(&self, requests: BoxStream<'static, Held>) -> BoxStream<'static, u64> {
            requests
                .map(|held| async move {
                    let _held = held;
                    std::future::pending::<u64>().await
                })
                .buffered(64)
                .boxed()
        }
    }

    /// Review: while the follower's flush stalls, the leader's requests time
    /// out (75 ms) and its next sessions send the same entries again, in the
    /// same lane (the stream id is the `Peer`'s) with a higher `low`: each is
    /// handed over into the lane's unbounded channel, where it stays (up to
    /// a few MiB each) however many came before: openraft's `stream_append`
    /// stops reading once 64 answers are outstanding. Without the gate each
    /// request went into the core, which took its entries at once and kept
    /// only the answer slot until the flush.
    #[tokio::test]
    async fn requests_handed_over_to_a_stalled_core_are_bounded() {
        let gate: Arc<Gate<Held, u64>> = Arc::new(Gate::new(Arc::new(Stalled), limits()));
        let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for seq in 0..300 {
            live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (g, held) = (gate.clone(), Held(live.clone()));
            let handler = tokio::spawn(async move { g.pass(1, at(5, seq, seq), held).await });
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
            // The leader timed out and closed the connection.
            handler.abort();
            let _ = handler.await;
        }
        let live = live.load(std::sync::atomic::Ordering::SeqCst);
        assert!(live <= 128, "{live} request bodies held for a stalled core");
        let refused = gate.pass(1, at(5, 300, 300), Held(Arc::new(1.into()))).await;
        assert!(matches!(refused, Err(GateError::Busy { .. })), "{refused:?}");
    }

    #[tokio::test]
    async fn an_idle_lane_is_dropped_and_its_stream_restarts_at_low() {
        let limits = Limits {
            idle: Duration::from_millis(20),
            ..limits()
        };
        let (gate, order) = gate(limits);
        assert_eq!(gate.pass(1, at(5, 0, 0), 10).await, Ok(10));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(gate.pass(2, at(9, 0, 0), 90).await, Ok(90));
        assert_eq!(gate.lane_count(), 1, "the idle lane went");
        assert_eq!(gate.pass(1, at(5, 7, 7), 17).await, Ok(17));
        assert_eq!(*locked(&order), vec![10, 90, 17]);
    }
}
