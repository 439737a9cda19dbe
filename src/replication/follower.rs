//! The follower's background task (see the module doc of `replication`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::StatusCode;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::status::{FollowerStatus, ReplicationState};
use crate::log::{Log, LogError, finished_batches_len};
use crate::wire::{FramesRequest, LOG_NEXT_OFFSET, LOWEST_OFFSET, NEXT_OFFSET, bounds_field};

#[derive(Clone, Debug)]
pub struct FollowConfig {
    /// The leader's base URL, e.g. `http://leader:8080`.
    pub leader: String,
    /// Discard the local log at start and copy the leader's from scratch.
    pub reset: bool,
    /// Bytes of frames asked for per pull.
    pub pull_bytes: u64,
    /// How long one pull waits on the leader for new records.
    pub poll_wait: Duration,
    /// Retry delays grow from the first to the second.
    pub backoff: (Duration, Duration),
    /// CA certificates (PEM) that sign an `https://` leader's certificate.
    pub ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for a leader that requires mutual TLS.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// A bearer token for a leader that requires one.
    pub token: Option<String>,
}

impl FollowConfig {
    pub fn new(leader: impl Into<String>) -> Self {
        FollowConfig {
            leader: leader.into().trim_end_matches('/').to_string(),
            reset: false,
            pull_bytes: 8 * 1024 * 1024,
            poll_wait: Duration::from_secs(10),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            ca: None,
            identity: None,
            token: None,
        }
    }

    /// The HTTP client the follower pulls with, carrying its identity.
    pub fn client(&self) -> Result<reqwest::Client, String> {
        let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
        if let Some(ca) = &self.ca {
            let certs = reqwest::Certificate::from_pem_bundle(&read(ca)?)
                .map_err(|e| format!("{}: not a PEM certificate bundle: {e}", ca.display()))?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                format!(
                    "{} and {}: not a usable certificate and key: {e}",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(identity);
        }
        if let Some(token) = &self.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the follow token holds characters a header cannot carry".to_string())?;
            value.set_sensitive(true);
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))
    }
}

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
    #[error("unexpected answer from the leader: {0}")]
    Protocol(String),
    #[error("the leader deleted records [{from}, {lowest}) before they were copied")]
    RetentionGap { from: u64, lowest: u64 },
}

/// A pull's frames and where the next pull starts.
struct Pulled {
    frames: Bytes,
    leader_next: u64,
}

pub fn spawn_follower(
    log: Log,
    client: reqwest::Client,
    config: FollowConfig,
    status: Arc<FollowerStatus>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
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
        metrics::counter!("distlog_replication_errors_total").increment(1);
        if let ReplicationError::Diverged(why) = &error {
            tracing::error!(leader = %follower.config.leader, reason = %why,
                "replication stopped: this follower's log is not a prefix of the leader's; restart with --follow-reset to discard it and copy the leader's");
            metrics::gauge!("distlog_replication_diverged").set(1.0);
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

    /// One pull. `Ok(Err(bounds))` is the leader saying `from` is outside
    /// its log, with its (lowest, next).
    async fn pull(
        &self,
        from: u64,
        max_records: Option<u32>,
        wait: Option<Duration>,
    ) -> Result<Result<Pulled, (u64, u64)>, ReplicationError> {
        let timeout = wait.unwrap_or_default() + Duration::from_secs(30);
        let response = self
            .client
            .get(self.frames_url(from, max_records, wait))
            .timeout(timeout)
            .send()
            .await?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            let body = response.bytes().await?;
            let bounds: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            return match (
                bounds[bounds_field::LOWEST_OFFSET].as_u64(),
                bounds[bounds_field::NEXT_OFFSET].as_u64(),
            ) {
                (Some(lowest), Some(next)) => {
                    self.status.saw_leader_next(next);
                    Ok(Err((lowest, next)))
                }
                _ => Err(ReplicationError::Leader {
                    status,
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
            };
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(ReplicationError::Leader { status, body });
        }
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ReplicationError::Protocol(format!("missing header {name}")))
        };
        let next = header(NEXT_OFFSET)?;
        let log_next = header(LOG_NEXT_OFFSET)?;
        let _lowest = header(LOWEST_OFFSET)?;
        self.status.saw_leader_next(log_next);
        let frames = response.bytes().await?;
        Ok(Ok(Pulled {
            frames,
            leader_next: next,
        }))
    }

    /// Our newest record must be the leader's record at that offset.
    async fn check_history(&self) -> Result<(), ReplicationError> {
        let next = self.log.next_offset();
        if next == self.log.lowest_offset() {
            return Ok(());
        }
        let last = next - 1;
        match self.pull(last, Some(1), None).await? {
            Ok(pulled) => {
                let log = self.log.clone();
                let (ours, _) = tokio::task::spawn_blocking(move || log.read_frames(last, 1, 0))
                    .await
                    .map_err(|e| ReplicationError::Protocol(e.to_string()))??;
                if ours != pulled.frames {
                    return Err(ReplicationError::Diverged(format!(
                        "record {last} differs from the leader's record {last}"
                    )));
                }
                Ok(())
            }
            Err((_, leader_next)) if leader_next <= last => Err(ReplicationError::Diverged(format!(
                "the leader holds records up to {leader_next} only, this follower up to {next}"
            ))),
            Err((lowest, _)) => {
                tracing::warn!(
                    offset = last,
                    leader_lowest = lowest,
                    "the leader no longer holds our newest record; cannot compare histories"
                );
                Ok(())
            }
        }
    }

    async fn fetch_loop(&self, tx: mpsc::Sender<Pulled>) -> Result<(), ReplicationError> {
        let mut from = self.log.next_offset();
        loop {
            match self.pull(from, None, Some(self.config.poll_wait)).await? {
                Ok(pulled) => {
                    if pulled.leader_next < from {
                        return Err(ReplicationError::Protocol("the leader went backwards".into()));
                    }
                    let advanced = pulled.leader_next;
                    if advanced > from && tx.send(pulled).await.is_err() {
                        return Ok(());
                    }
                    from = advanced;
                }
                Err((lowest, _)) if from < lowest => {
                    return Err(ReplicationError::RetentionGap { from, lowest });
                }
                Err((_, next)) => {
                    return Err(ReplicationError::Diverged(format!(
                        "the leader's log ends at {next}, before this follower's next offset {from}"
                    )));
                }
            }
        }
    }

    /// The leader deleted records we never copied: restart our log, empty,
    /// at the leader's lowest offset, and say so loudly.
    async fn restart_at(&self, from: u64, lowest: u64) -> Result<(), ReplicationError> {
        tracing::error!(
            missing_from = from,
            missing_to = lowest,
            "GAP: the leader deleted records [{from}, {lowest}) by retention before this follower copied them; \
             restarting the local log empty at offset {lowest}"
        );
        metrics::counter!("distlog_replication_gaps_total").increment(1);
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || log.reset(lowest))
            .await
            .map_err(|e| ReplicationError::Protocol(e.to_string()))??;
        Ok(())
    }

    /// Appends pulled frames in whole batches only: a pull may end inside a
    /// batch, and the unfinished tail waits for the next pull, so that this
    /// log (and any follower of it) never publishes half a batch that its
    /// recovery would later cut.
    async fn append_loop(&self, mut rx: mpsc::Receiver<Pulled>) -> Result<(), ReplicationError> {
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
            if finished == 0 {
                continue;
            }
            let log = self.log.clone();
            let whole = frames.slice(..finished);
            let appended = tokio::task::spawn_blocking(move || log.append_frames(&whole))
                .await
                .map_err(|e| ReplicationError::Protocol(e.to_string()))??;
            metrics::counter!("distlog_replication_records_total").increment(u64::from(appended));
            if let Some(leader_next) = self.status.leader_next() {
                let lag = leader_next.saturating_sub(self.log.next_offset());
                metrics::gauge!("distlog_replication_lag_records").set(lag as f64);
            }
        }
        Ok(())
    }
}
