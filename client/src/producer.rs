//! [`Producer`]: appends that can be retried after any failure without
//! writing a record twice. Every `POST /` carries `Producer-Id`,
//! `Producer-Epoch` and `Producer-Seq` (the sequence number of its first
//! record; a batch of k records takes k numbers), and the log appends each
//! sequence number once: a retry of a request it already appended answers
//! `200` with the original offsets and `"duplicate": true` (issue 21).
//!
//! Up to 5 requests are in flight at once (the log remembers its last 5
//! per producer). They reach the log in sequence order: one that arrives
//! ahead of an earlier one is refused (`409 producer_sequence_gap`) and
//! sent again. That order is the server's doing: requests in flight travel
//! on separate connections and may arrive in any order, so against a
//! server without producer ids use [`Producer::max_in_flight`]`(1)` where
//! order matters. A request that fails for good (a refusal other than a gap,
//! or `retry_for` running out) stops the producer: what the log holds
//! after it is unknown, so later appends would only be refused.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use reqwest::header::{HeaderMap, HeaderValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::append::Append;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::record::{Appended, parse_appended};

/// Requests a producer keeps in flight at most.
pub const MAX_IN_FLIGHT: usize = 5;

/// An idempotent producer; see [`Client::producer`].
#[derive(Clone)]
pub struct Producer {
    client: Client,
    id: String,
    epoch: u32,
    state: Arc<Mutex<State>>,
    slots: Arc<Semaphore>,
}

struct State {
    next_seq: u64,
    stopped: Option<String>,
}

/// Stops the producer if dropped armed: an append given up half-way.
struct Unanswered<'a>(Option<&'a Producer>);

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if let Some(producer) = self.0 {
            producer
                .lock()
                .stopped
                .get_or_insert_with(|| "an append was dropped before its answer".into());
        }
    }
}

/// An append on its way; [`PendingAppend::wait`] for its offsets.
pub struct PendingAppend {
    task: JoinHandle<Result<Appended>>,
}

impl PendingAppend {
    pub async fn wait(self) -> Result<Appended> {
        self.task.await.unwrap_or_else(|e| {
            Err(Error::ProducerStopped {
                id: String::new(),
                reason: format!("the append's task ended: {e}"),
            })
        })
    }
}

impl Client {
    /// A producer with this id (1-64 characters of `[A-Za-z0-9._-]`) at
    /// epoch 0, its first request at sequence 0.
    ///
    /// ```no_run
    /// # async fn run(client: distlog_client::Client) -> Result<(), distlog_client::Error> {
    /// let producer = client.producer("orders-1")?;
    /// let appended = producer.append(&distlog_client::Append::json(&"paid")?).await?;
    /// # Ok(()) }
    /// ```
    pub fn producer(&self, id: &str) -> Result<Producer> {
        self.producer_at(id, 0, 0)
    }

    /// A producer at `epoch` whose next request takes sequence `next_seq`
    /// (a restarted producer: a higher epoch fences every older copy).
    pub fn producer_at(&self, id: &str, epoch: u32, next_seq: u64) -> Result<Producer> {
        let valid = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !valid {
            return Err(Error::Config(format!(
                "producer id {id:?}: 1-64 characters of [A-Za-z0-9._-]"
            )));
        }
        Ok(Producer {
            client: self.clone(),
            id: id.to_string(),
            epoch,
            state: Arc::new(Mutex::new(State {
                next_seq,
                stopped: None,
            })),
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }
}

/// A producer id for one run: `p-` and 16 random hex digits.
pub fn random_producer_id() -> String {
    format!("p-{:016x}", crate::backoff::random_u64())
}

impl Producer {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Keeps at most `n` requests in flight (1 to 5; 5 by default). Call
    /// before the first append.
    pub fn max_in_flight(mut self, n: usize) -> Producer {
        self.slots = Arc::new(Semaphore::new(n.clamp(1, MAX_IN_FLIGHT)));
        self
    }

    /// Appends and waits for the offsets. The request is sent from the
    /// caller's task (no task of its own, unlike [`Producer::send`]), so
    /// dropping this future before it is done stops the producer: its
    /// sequence number may or may not be in the log, and later ones would
    /// only be refused as a gap.
    pub async fn append(&self, append: &Append) -> Result<Appended> {
        let (seq, permit) = self.take_turn(append).await?;
        let mut unanswered = Unanswered(Some(self));
        let result = self.deliver(append, seq, permit).await;
        unanswered.0 = None;
        result
    }

    /// Sends an append once one of the 5 slots is free, and returns at
    /// once: appends sent one after another are written in that order.
    pub async fn send(&self, append: &Append) -> Result<PendingAppend> {
        let (seq, permit) = self.take_turn(append).await?;
        let producer = self.clone();
        let append = append.clone();
        let task = tokio::spawn(async move { producer.deliver(&append, seq, permit).await });
        Ok(PendingAppend { task })
    }

    /// Waits for a free slot, then takes the append's sequence numbers.
    async fn take_turn(&self, append: &Append) -> Result<(u64, OwnedSemaphorePermit)> {
        let permit = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|_| self.stopped_error("closed"))?;
        let mut state = self.lock();
        if let Some(reason) = &state.stopped {
            return Err(self.stopped_error(reason));
        }
        let seq = state.next_seq;
        state.next_seq += append.records();
        Ok((seq, permit))
    }

    async fn deliver(&self, append: &Append, seq: u64, _slot: OwnedSemaphorePermit) -> Result<Appended> {
        let mut headers = HeaderMap::new();
        let id = HeaderValue::from_str(&self.id).map_err(|_| Error::Config("producer id".into()))?;
        headers.insert("producer-id", id);
        headers.insert("producer-epoch", HeaderValue::from(self.epoch));
        headers.insert("producer-seq", HeaderValue::from(seq));
        let request = append.request(self.client.inner.log_path("/"), headers);
        let started = Instant::now();
        let result = self.client.inner.to_leader(&request, Error::is_retryable).await;
        match result {
            Ok(answer) => {
                let appended = parse_appended(&answer.url, &answer.body)?;
                self.client.inner.note_next(appended.last_offset + 1);
                Ok(appended)
            }
            Err(error) => {
                let reason = format!("sequence {seq} after {:?}: {error}", started.elapsed());
                let mut state = self.lock();
                state.stopped.get_or_insert(reason);
                Err(error)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stopped_error(&self, reason: &str) -> Error {
        Error::ProducerStopped {
            id: self.id.clone(),
            reason: reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn producer_ids_are_checked_as_the_server_does() {
        let client = Client::builder().seeds(["http://127.0.0.1:1"]).build().unwrap();
        assert!(client.producer("orders-1.a_b").is_ok());
        assert!(client.producer("").is_err());
        assert!(client.producer("has space").is_err());
        assert!(client.producer(&"x".repeat(65)).is_err());
        assert!(client.producer(&random_producer_id()).is_ok());
    }
}
