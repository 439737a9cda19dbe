//! A concurrent load generator that records a history for the checker.
//!
//! Each of K writer tasks posts distinct JSON records `{"w":task,"n":seq}`
//! to the node it believes leads, follows `307`s by hand, and on anything
//! but a definite answer moves on with a NEW value (`seq` never repeats),
//! so a value that shows up twice in a log is a duplicate the cluster made.
//! Every attempt is recorded with its outcome and its real-time interval.
//! Everything runs on the harness runtime.
//!
//! In producer mode (`LoadConfig::producer`) each writer is an idempotent
//! producer (`Producer-Id: w<writer>`, epoch 0, `Producer-Seq` = its
//! `seq`) and retries the SAME record on any error or timeout until it is
//! answered (`201`, or `200` with `"duplicate": true` and the original
//! offset): one attempt per record, with how many posts it took. The
//! checker then holds the log to exactly once, in sequence order per
//! producer (`checker::check_producers`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;

use super::rt;

/// What came of one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 201 with this offset: the record is committed there.
    Ack(u64),
    /// A definite refusal (4xx other than a redirect): never appended.
    Failed(u16),
    /// Timeout, dropped connection, 5xx, or too many redirects: it may or
    /// may not be in the log (at most once).
    Unknown(String),
}

/// One record's attempt: posted once (plus the redirects it was sent along).
#[derive(Clone, Debug)]
pub struct Attempt {
    pub writer: u64,
    pub seq: u64,
    /// The exact body posted.
    pub body: String,
    /// The node it was first sent to, and the one that answered last.
    pub first_node: String,
    pub last_node: String,
    /// Before the first byte was sent / when the final answer (or failure) came.
    pub sent: Instant,
    pub done: Instant,
    pub outcome: Outcome,
    /// Answered `200` duplicate (producer mode): the offset is the original one.
    pub duplicate: bool,
}

impl Attempt {
    /// The value as JSON (what a read returns as `"value"`).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }

    pub fn acked_offset(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ack(offset) => Some(offset),
            _ => None,
        }
    }
}

/// The body a writer posts: distinct per (writer, seq).
pub fn record_body(writer: u64, seq: u64) -> String {
    format!("{{\"w\":{writer},\"n\":{seq}}}")
}

/// (writer, seq) of a value this generator wrote, None for anything else.
pub fn value_key(value: &Value) -> Option<(u64, u64)> {
    let object = value.as_object()?;
    if object.len() != 2 {
        return None;
    }
    Some((object.get("w")?.as_u64()?, object.get("n")?.as_u64()?))
}

/// Every attempt of a run, in no particular order.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub attempts: Vec<Attempt>,
    /// What producer-mode writers did (empty without them).
    pub producers: ProducerRuns,
}

/// Producer-mode writers' ids and retries.
#[derive(Clone, Debug, Default)]
pub struct ProducerRuns {
    pub writers: std::collections::BTreeSet<u64>,
    /// Posts after a record's first (each after an error or a timeout).
    pub retries: u64,
    /// Retries answered `200` duplicate: the cluster had the record already.
    pub deduplicated: u64,
}

/// What one writer task hands back.
struct WriterRun {
    attempts: Vec<Attempt>,
    retries: u64,
    deduplicated: u64,
}

impl History {
    pub fn acked(&self) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(|a| matches!(a.outcome, Outcome::Ack(_)))
    }

    pub fn count(&self) -> (usize, usize, usize) {
        let mut counts = (0, 0, 0);
        for attempt in &self.attempts {
            match attempt.outcome {
                Outcome::Ack(_) => counts.0 += 1,
                Outcome::Failed(_) => counts.1 += 1,
                Outcome::Unknown(_) => counts.2 += 1,
            }
        }
        counts
    }

    /// "N attempts: A acked, F failed, U unknown" (and the producers' retries).
    pub fn summary(&self) -> String {
        let (acked, failed, unknown) = self.count();
        let mut summary = format!(
            "{} attempts: {acked} acked, {failed} failed, {unknown} unknown",
            self.attempts.len()
        );
        let p = &self.producers;
        if !p.writers.is_empty() {
            summary.push_str(&format!(
                "; {} producers: {} retries, {} answered as duplicates",
                p.writers.len(),
                p.retries,
                p.deduplicated
            ));
        }
        summary
    }

    /// Adds another load's history to this one.
    pub fn merge(&mut self, other: History) {
        self.attempts.extend(other.attempts);
        self.producers.writers.extend(other.producers.writers);
        self.producers.retries += other.producers.retries;
        self.producers.deduplicated += other.producers.deduplicated;
    }

    fn add(&mut self, run: WriterRun, writer: u64, producer: bool) {
        self.attempts.extend(run.attempts);
        if producer {
            self.producers.writers.insert(writer);
            self.producers.retries += run.retries;
            self.producers.deduplicated += run.deduplicated;
        }
    }
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Concurrent writer tasks.
    pub writers: u64,
    /// Per-request timeout: past it the outcome is Unknown.
    pub request_timeout: Duration,
    /// Pause after an Unknown or Failed outcome before the next attempt.
    pub retry_pause: Duration,
    /// Redirects followed within one attempt before giving up (Unknown).
    pub max_redirects: u32,
    /// Stop each writer after this many attempts (None: until stopped).
    pub attempts_per_writer: Option<u64>,
    /// The first writer's id (writers are `first_writer..first_writer +
    /// writers`): two loads on one cluster need ids of their own, or the
    /// checker takes their equal records for duplicates.
    pub first_writer: u64,
    /// Idempotent producers retrying each record until answered (see the module doc).
    pub producer: bool,
    /// The log written, as a path on every node: "" the default log,
    /// "/logs/NAME" a named one (redirects name a node; the path is kept).
    pub log_path: String,
}

impl Default for LoadConfig {
    fn default() -> LoadConfig {
        LoadConfig {
            writers: 4,
            request_timeout: Duration::from_secs(3),
            retry_pause: Duration::from_millis(20),
            max_redirects: 4,
            attempts_per_writer: None,
            first_writer: 0,
            producer: false,
            log_path: String::new(),
        }
    }
}

/// A running load; `stop` (or the attempt limit) ends it.
pub struct Load {
    stop: watch::Sender<bool>,
    writers: Vec<(u64, tokio::task::JoinHandle<WriterRun>)>,
    acked: Arc<AtomicU64>,
    producer: bool,
}

impl Load {
    /// Starts `config.writers` writers against `urls` (any node; they find
    /// the leader by redirects). Each starts at a different node.
    pub fn start(urls: Vec<String>, config: LoadConfig) -> Load {
        assert!(!urls.is_empty(), "a load needs at least one node");
        let (stop, stopped) = watch::channel(false);
        let acked = Arc::new(AtomicU64::new(0));
        let urls = Arc::new(urls);
        let writers = (config.first_writer..config.first_writer + config.writers)
            .map(|writer| {
                let task = Writer {
                    id: writer,
                    urls: urls.clone(),
                    target: (writer as usize) % urls.len(),
                    config: config.clone(),
                    acked: acked.clone(),
                };
                (writer, rt::runtime().spawn(task.run(stopped.clone())))
            })
            .collect();
        Load {
            stop,
            writers,
            acked,
            producer: config.producer,
        }
    }

    /// Acknowledged writes so far (to wait for progress without sleeping).
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Panics unless `n` more writes are acknowledged within `timeout`.
    pub async fn assert_progress(&self, n: u64, timeout: Duration, what: &str) {
        assert!(
            self.wait_for_more_acks(n, timeout).await,
            "{what}: fewer than {n} more writes acknowledged within {timeout:?} (acked so far {})",
            self.acked()
        );
    }

    /// Waits until at least `n` more writes are acknowledged than now, or
    /// `timeout` passes; whether they were.
    pub async fn wait_for_more_acks(&self, n: u64, timeout: Duration) -> bool {
        let target = self.acked() + n;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.acked() >= target {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.acked() >= target
    }

    /// Waits for every writer to reach its attempt limit
    /// (`attempts_per_writer`; without one this never returns) and returns
    /// the whole history.
    pub async fn stop_when_done(self) -> History {
        assert!(
            self.writers.is_empty() || !self.stop.is_closed(),
            "the writers are gone"
        );
        self.join().await
    }

    /// Signals every writer to stop after its attempt in flight (which ends
    /// within the request timeout; a producer's retries go on a while) and
    /// returns the whole history.
    pub async fn stop(self) -> History {
        self.stop.send_replace(true);
        self.join().await
    }

    async fn join(self) -> History {
        let mut history = History::default();
        for (id, writer) in self.writers {
            match writer.await {
                Ok(run) => history.add(run, id, self.producer),
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(error) => panic!("a writer task was cancelled: {error}"),
            }
        }
        history
    }
}

struct Writer {
    id: u64,
    urls: Arc<Vec<String>>,
    /// Index into `urls` of the node it believes leads.
    target: usize,
    config: LoadConfig,
    acked: Arc<AtomicU64>,
}

impl Writer {
    async fn run(mut self, stop: watch::Receiver<bool>) -> WriterRun {
        let mut run = WriterRun {
            attempts: Vec::new(),
            retries: 0,
            deduplicated: 0,
        };
        let mut seq = 0;
        while !*stop.borrow() && self.config.attempts_per_writer.is_none_or(|max| seq < max) {
            let attempt = match self.config.producer {
                true => self.produce(seq, &stop, &mut run).await,
                false => self.attempt(seq).await,
            };
            seq += 1;
            match attempt.outcome {
                Outcome::Ack(_) => {
                    self.acked.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Failed(_) | Outcome::Unknown(_) => {
                    // Someone else may lead now: try the next node.
                    self.target = (self.target + 1) % self.urls.len();
                    tokio::time::sleep(self.config.retry_pause).await;
                }
            }
            run.attempts.push(attempt);
        }
        run
    }

    /// Record `seq` as a producer: posted again (to the next node) after
    /// every error or timeout until it is answered, for at most
    /// `PRODUCER_GRACE` after the load is stopped. One attempt, its
    /// interval from the first post to the answer.
    async fn produce(&mut self, seq: u64, stop: &watch::Receiver<bool>, run: &mut WriterRun) -> Attempt {
        let sent = Instant::now();
        let mut stopped_at: Option<Instant> = None;
        let mut tries = 0;
        loop {
            let mut attempt = self.attempt(seq).await;
            tries += 1;
            let answered = matches!(attempt.outcome, Outcome::Ack(_) | Outcome::Failed(_));
            // A load dropped without `stop` stops too.
            if *stop.borrow() || stop.has_changed().is_err() {
                stopped_at.get_or_insert_with(Instant::now);
            }
            let given_up = stopped_at.is_some_and(|at| at.elapsed() > PRODUCER_GRACE);
            if answered || given_up {
                run.retries += tries - 1;
                if tries > 1 && attempt.duplicate {
                    run.deduplicated += 1;
                }
                attempt.sent = sent;
                return attempt;
            }
            self.target = (self.target + 1) % self.urls.len();
            tokio::time::sleep(self.config.retry_pause).await;
        }
    }

    async fn attempt(&mut self, seq: u64) -> Attempt {
        let body = record_body(self.id, seq);
        let first_node = self.urls[self.target].clone();
        let mut node = first_node.clone();
        let sent = Instant::now();
        let mut redirects = 0;
        let producer = self.config.producer.then(|| (format!("w{}", self.id), seq));
        let mut duplicate = false;
        let outcome = loop {
            match post_once(
                &node,
                &self.config.log_path,
                &body,
                producer.as_ref(),
                self.config.request_timeout,
            )
            .await
            {
                Answer::Created(offset) => break Outcome::Ack(offset),
                Answer::Duplicate(offset) => {
                    duplicate = true;
                    break Outcome::Ack(offset);
                }
                Answer::Redirect(location) if redirects < self.config.max_redirects => {
                    redirects += 1;
                    node = base_url(&location);
                }
                Answer::Redirect(location) => {
                    break Outcome::Unknown(format!("too many redirects, last to {location}"));
                }
                Answer::Definite(status) => break Outcome::Failed(status),
                Answer::Unsure(why) => break Outcome::Unknown(why),
            }
        };
        if let Some(i) = self.urls.iter().position(|u| same_node(u, &node)) {
            // Redirected to a node we know: remember it as the leader.
            if matches!(outcome, Outcome::Ack(_)) || redirects > 0 {
                self.target = i;
            }
        }
        Attempt {
            writer: self.id,
            seq,
            body,
            first_node,
            last_node: node,
            sent,
            done: Instant::now(),
            outcome,
            duplicate,
        }
    }
}

/// How long a producer goes on retrying its record after the load stopped.
const PRODUCER_GRACE: Duration = Duration::from_secs(20);

enum Answer {
    Created(u64),
    /// `200` `"duplicate": true`: the record was appended before, at this offset.
    Duplicate(u64),
    Redirect(String),
    Definite(u16),
    Unsure(String),
}

async fn post_once(
    node: &str,
    log_path: &str,
    body: &str,
    producer: Option<&(String, u64)>,
    timeout: Duration,
) -> Answer {
    let mut request = rt::http()
        .post(format!("{node}{log_path}/"))
        .header("content-type", "application/json")
        .timeout(timeout)
        .body(body.to_string());
    if let Some((id, seq)) = producer {
        request = request
            .header("producer-id", id)
            .header("producer-seq", seq.to_string());
    }
    let request = request.send();
    let response = match request.await {
        Ok(response) => response,
        Err(error) => return Answer::Unsure(format!("{node}: {error}")),
    };
    let status = response.status().as_u16();
    match status {
        201 => match response.json::<Value>().await {
            Ok(answer) => match answer["offset"].as_u64() {
                Some(offset) => Answer::Created(offset),
                None => Answer::Unsure(format!("{node}: 201 without an offset: {answer}")),
            },
            // The commit happened; only its offset got lost on the way.
            Err(error) => Answer::Unsure(format!("{node}: 201 with an unreadable body: {error}")),
        },
        200 => match response.json::<Value>().await {
            Ok(answer) if answer["duplicate"] == true => match answer["offset"].as_u64() {
                Some(offset) => Answer::Duplicate(offset),
                None => Answer::Unsure(format!("{node}: a duplicate without an offset: {answer}")),
            },
            Ok(answer) => Answer::Unsure(format!("{node}: 200 that is not a duplicate: {answer}")),
            Err(error) => Answer::Unsure(format!("{node}: 200 with an unreadable body: {error}")),
        },
        301 | 302 | 303 | 307 | 308 => match response.headers().get("location").and_then(|l| l.to_str().ok()) {
            Some(location) => Answer::Redirect(location.to_string()),
            None => Answer::Unsure(format!("{node}: {status} without a Location")),
        },
        400..=499 => Answer::Definite(status),
        _ => {
            let text = response.text().await.unwrap_or_default();
            Answer::Unsure(format!("{node}: {status} {text}"))
        }
    }
}

/// `http://host:port` of a URL (a Location names the path too).
pub fn base_url(url: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[scheme_end..].find('/') {
        Some(slash) => url[..scheme_end + slash].to_string(),
        None => url.to_string(),
    }
}

pub fn same_node(a: &str, b: &str) -> bool {
    base_url(a).trim_end_matches('/') == base_url(b).trim_end_matches('/')
}
