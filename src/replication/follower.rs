//! The follower's background task (see the module doc of `replication`).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::answer::{Bounds, FramesHeaders, ProtocolError, Pulled, check_frames};
use super::config::FollowConfig;
use super::metrics::{export_series_at_zero, metric};
use super::status::{FollowerStatus, ReplicationState};
use crate::log::{Log, LogError, finished_batches_len};
use crate::telemetry;
use crate::wire::FramesRequest;

#[derive(Debug, thiserror::Error)]
enum ReplicationError {
    #[error("cannot reach the leader: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the leader answered {status}: {body}")]
    Leader { status: StatusCode, body: String },
    #[error("histories diverged: {0}")]
    Diverged(String),
    #[error("the local log failed: {0}")]
    Log(#[from] LogError),
    #[error("unusable answer from the leader: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the leader deleted records [{from}, {lowest}) before they were copied")]
    RetentionGap { from: u64, lowest: u64 },
    #[error(
        "the leader reports a retention gap up to {lowest} but does not serve offset {lowest} ({why}); the local log is kept"
    )]
    UnconfirmedGap { lowest: u64, why: String },
    #[error("an unfinished batch from offset {from} grew past {cap} bytes without its last record; pulling it again")]
    UnfinishedBatchTooLong { from: u64, cap: u64 },
    #[error("a background task failed: {0}")]
    Task(String),
    #[error("the leader's answer runs past {cap} bytes; pulling again")]
    AnswerTooLarge { cap: u64 },
}

/// Error bodies are read up to this much: they are a few hundred bytes.
const ERROR_BODY_CAP: u64 = 64 * 1024;

/// The body of `response`, refused once it runs past `cap` bytes: a leader
/// (or whatever answers in its place) decides how much it sends.
async fn body_capped(mut response: reqwest::Response, cap: u64) -> Result<Bytes, ReplicationError> {
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() as u64 + chunk.len() as u64 > cap {
            return Err(ReplicationError::AnswerTooLarge { cap });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn task_failed(error: tokio::task::JoinError) -> ReplicationError {
    ReplicationError::Task(error.to_string())
}

pub fn spawn_follower(
    log: Log,
    client: reqwest::Client,
    config: FollowConfig,
    status: Arc<FollowerStatus>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    export_series_at_zero();
    tokio::spawn(follow(log, client, config, status, shutdown))
}

async fn follow(
    log: Log,
    client: reqwest::Client,
    config: FollowConfig,
    status: Arc<FollowerStatus>,
    mut shutdown: watch::Receiver<bool>,
) {
    let follower = Follower {
        client,
        log,
        config,
        status,
    };
    tracing::info!(leader = %follower.config.leader, "following the leader");
    let mut delay = follower.config.backoff.0;
    let mut next_at_last_failure = None;
    loop {
        let outcome = tokio::select! {
            outcome = follower.replicate() => outcome,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Err(error) = outcome else { return };
        metrics::counter!(metric::ERRORS).increment(1);
        if let ReplicationError::Diverged(why) = &error {
            tracing::error!(leader = %follower.config.leader, reason = %why,
                "replication stopped: this follower's log is not a prefix of the leader's; restart with --follow-reset to discard it and copy the leader's");
            metrics::gauge!(metric::DIVERGED).set(1.0);
            follower
                .status
                .set_state(ReplicationState::Diverged, Some(error.to_string()));
            return;
        }
        if follower
            .status
            .set_state(ReplicationState::Retrying, Some(error.to_string()))
        {
            tracing::warn!(leader = %follower.config.leader, error = %error, "replication interrupted; retrying with backoff");
        }
        // Progress since the last failure means a new outage: start the backoff over.
        let next = follower.log.next_offset();
        if next_at_last_failure.is_some_and(|before| next > before) {
            delay = follower.config.backoff.0;
        }
        next_at_last_failure = Some(next);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        delay = (delay * 2).min(follower.config.backoff.1);
    }
}

struct Follower {
    client: reqwest::Client,
    log: Log,
    config: FollowConfig,
    status: Arc<FollowerStatus>,
}

impl Follower {
    /// Checks the shared history, then streams until an error.
    async fn replicate(&self) -> Result<(), ReplicationError> {
        loop {
            self.check_history().await?;
            if self.status.set_state(ReplicationState::Streaming, None) {
                tracing::info!(leader = %self.config.leader, from = self.log.next_offset(), "replicating");
            }
            let (tx, rx) = mpsc::channel(4);
            let streamed = tokio::select! {
                fetched = self.fetch_loop(tx) => fetched,
                appended = self.append_loop(rx) => appended,
            };
            match streamed {
                Err(ReplicationError::RetentionGap { from, lowest }) => self.restart_at(from, lowest).await?,
                other => return other,
            }
        }
    }

    fn frames_url(&self, from: u64, max_records: Option<u32>, wait: Option<Duration>) -> String {
        let request = FramesRequest {
            from,
            max_bytes: self.config.pull_bytes,
            max_records,
            wait,
        };
        format!("{}{}", self.config.leader, request.path_and_query())
    }

    /// One pull of frames from `from` on, checked (see `answer`).
    /// `Ok(Err(bounds))` is the leader saying `from` is outside its log.
    async fn pull(
        &self,
        from: u64,
        max_records: Option<u32>,
        wait: Option<Duration>,
    ) -> Result<Result<Pulled, Bounds>, ReplicationError> {
        let timeout = wait.unwrap_or_default() + Duration::from_secs(30);
        let span = telemetry::span(|| {
            tracing::info_span!(
                "replication.pull",
                otel.kind = "client",
                from,
                http.response.status_code = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                error.message = tracing::field::Empty,
            )
        });
        let request = self
            .client
            .get(self.frames_url(from, max_records, wait))
            .timeout(timeout);
        let response = telemetry::send_traced(request, &span).await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let body = body_capped(response, ERROR_BODY_CAP).await?;
            return match Bounds::from_body(&body) {
                Some(bounds) => {
                    let bounds = bounds?.check_excludes(from)?;
                    self.status.saw_leader_next(bounds.next);
                    Ok(Err(bounds))
                }
                None => Err(ReplicationError::Leader {
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
            };
        }
        if !status.is_success() {
            let body = body_capped(response, ERROR_BODY_CAP).await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body).into_owned();
            return Err(ReplicationError::Leader { status, body });
        }
        let headers = FramesHeaders::read(response.headers())?;
        self.status.saw_leader_next(headers.log_next);
        // A pull answers about `pull_bytes`, or one record more than that;
        // an unfinished batch may not grow past the same cap either.
        let frames = body_capped(response, self.config.max_unfinished_batch_bytes).await?;
        Ok(Ok(check_frames(frames, from, headers)?))
    }

    /// Our newest record must be the leader's record at that offset.
    async fn check_history(&self) -> Result<(), ReplicationError> {
        let next = self.log.next_offset();
        if next == self.log.lowest_offset() {
            return Ok(());
        }
        let last = next - 1;
        match self.pull(last, Some(1), None).await? {
            Ok(pulled) if pulled.next == last => Err(ReplicationError::Diverged(format!(
                "the leader's log ends at {last}, this follower's at {next}"
            ))),
            Ok(pulled) => {
                let log = self.log.clone();
                let (ours, _) = tokio::task::spawn_blocking(move || log.read_frames(last, 1, 0))
                    .await
                    .map_err(task_failed)??;
                if !pulled.frames.starts_with(&ours) {
                    return Err(ReplicationError::Diverged(format!(
                        "record {last} differs from the leader's record {last}"
                    )));
                }
                Ok(())
            }
            Err(bounds) if bounds.next <= last => Err(ReplicationError::Diverged(format!(
                "the leader's log ends at {}, this follower's at {next}",
                bounds.next
            ))),
            Err(bounds) => {
                tracing::warn!(
                    offset = last,
                    leader_lowest = bounds.lowest,
                    "the leader no longer holds our newest record; cannot compare histories"
                );
                Ok(())
            }
        }
    }

    /// Pulls from our next offset on, advancing by the checked frames of
    /// each answer, and hands them to `append_loop`.
    async fn fetch_loop(&self, tx: mpsc::Sender<Pulled>) -> Result<(), ReplicationError> {
        let mut from = self.log.next_offset();
        loop {
            match self.pull(from, None, Some(self.config.poll_wait)).await? {
                Ok(pulled) => {
                    let advanced = pulled.next;
                    if advanced > from && tx.send(pulled).await.is_err() {
                        return Ok(());
                    }
                    from = advanced;
                }
                Err(bounds) if from < bounds.lowest => {
                    return Err(ReplicationError::RetentionGap {
                        from,
                        lowest: bounds.lowest,
                    });
                }
                Err(bounds) => {
                    return Err(ReplicationError::Diverged(format!(
                        "the leader's log ends at {}, before this follower's next offset {from}",
                        bounds.next
                    )));
                }
            }
        }
    }

    /// The leader deleted records we never copied: restart our log, empty,
    /// at the leader's lowest offset, and say so loudly. Discarding the
    /// local log is not undone, so the leader must first show that it
    /// really serves from `lowest`.
    async fn restart_at(&self, from: u64, lowest: u64) -> Result<(), ReplicationError> {
        let why = match self.pull(lowest, Some(1), None).await {
            Ok(Ok(pulled)) if pulled.next > lowest => None,
            Ok(Ok(_)) => Some("no record there".to_string()),
            Ok(Err(bounds)) => Some(format!("now its bounds are [{}, {})", bounds.lowest, bounds.next)),
            Err(ReplicationError::Protocol(e)) => Some(e.to_string()),
            Err(other) => return Err(other),
        };
        if let Some(why) = why {
            return Err(ReplicationError::UnconfirmedGap { lowest, why });
        }
        tracing::error!(
            missing_from = from,
            missing_to = lowest,
            "GAP: the leader deleted records [{from}, {lowest}) by retention before this follower copied them; \
             restarting the local log empty at offset {lowest}"
        );
        metrics::counter!(metric::GAPS).increment(1);
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.reset(lowest))
            .await
            .map_err(task_failed)??;
        Ok(())
    }

    /// Appends pulled frames in whole batches only: a pull may end inside a
    /// batch, and the unfinished tail waits for the next pull, so that this
    /// log (and any follower of it) never publishes half a batch that its
    /// recovery would later cut. The tail is capped
    /// (`max_unfinished_batch_bytes`): a batch that never ends is the
    /// leader's fault, and the pull starts over rather than hold it all.
    async fn append_loop(&self, mut rx: mpsc::Receiver<Pulled>) -> Result<(), ReplicationError> {
        let cap = self.config.max_unfinished_batch_bytes;
        let mut unfinished = BytesMut::new();
        while let Some(pulled) = rx.recv().await {
            let frames = if unfinished.is_empty() {
                pulled.frames
            } else {
                unfinished.extend_from_slice(&pulled.frames);
                unfinished.split().freeze()
            };
            let finished = finished_batches_len(&frames);
            unfinished.extend_from_slice(&frames[finished..]);
            if finished > 0 {
                self.append_whole_batches(frames.slice(..finished)).await?;
            }
            if unfinished.len() as u64 > cap {
                let from = self.log.next_offset();
                return Err(ReplicationError::UnfinishedBatchTooLong { from, cap });
            }
        }
        Ok(())
    }

    async fn append_whole_batches(&self, frames: Bytes) -> Result<(), ReplicationError> {
        let log = self.log.clone();
        let appended = tokio::task::spawn_blocking(move || log.append_frames(&frames))
            .await
            .map_err(task_failed)??;
        metrics::counter!(metric::RECORDS).increment(u64::from(appended));
        if let Some(leader_next) = self.status.leader_next() {
            let lag = leader_next.saturating_sub(self.log.next_offset());
            metrics::gauge!(metric::LAG).set(lag as f64);
        }
        Ok(())
    }
}
