//! The accept loop: takes connections off the listening socket, does the
//! TLS handshake (in each connection's task), and serves each (see
//! `connection`) until the server stops.
//!
//! - At most `max_connections` are served at once. Beyond that a client is
//!   still accepted (so it is not left hanging in the kernel's backlog) and
//!   answered `503 too_many_connections` with `Retry-After` and closed; at
//!   most `MAX_REFUSING` such answers are under way, past that a connection
//!   is closed at once.
//! - Accept errors that come from running out of descriptors or memory
//!   (EMFILE, ENFILE, ENOBUFS, ENOMEM) pause accepting, 10 ms doubling to
//!   1 s, and are logged once per `ACCEPT_ERROR_LOG_EVERY` with a count;
//!   errors of one connection (it was reset before we took it) are skipped.
//! - On stop: no more accepts; each connection ends after its request in
//!   flight; the loop returns once all have. Aborting it (the grace period
//!   ran out) drops every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::conn_io::{raw_answer, write_and_linger};
use super::connection::{self, ConnSettings};
use super::send_queue::SendQueue;
use crate::api::ApiError;
use crate::auth::{PeerInfo, ReloadableTls};

/// Connections being refused at once, beyond `max_connections`.
pub(super) const MAX_REFUSING: usize = 64;
/// How long a refused client gets to read its 503.
const REFUSE_TIME: Duration = Duration::from_secs(2);
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(60);

pub(super) struct Acceptor {
    pub listener: TcpListener,
    pub tls: Option<Arc<ReloadableTls>>,
    pub settings: Arc<ConnSettings>,
    pub max_connections: usize,
    pub stopping: watch::Receiver<bool>,
    /// The gauge that counts this listener's connections.
    pub gauge: &'static str,
}

impl Acceptor {
    pub async fn run(self) -> std::io::Result<()> {
        let Acceptor {
            listener,
            tls,
            settings,
            max_connections,
            stopping,
            gauge,
        } = self;
        let mut serving = JoinSet::new();
        let mut refusing = JoinSet::new();
        let mut errors = AcceptErrors::default();
        let mut stop = stopping.clone();
        loop {
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                Some(_) = serving.join_next(), if !serving.is_empty() => {}
                Some(_) = refusing.join_next(), if !refusing.is_empty() => {}
                _ = tokio::time::sleep_until(errors.resume_at), if errors.paused() => errors.resume(),
                accepted = listener.accept(), if !errors.paused() => {
                    let (tcp, remote) = match accepted {
                        Ok(pair) => pair,
                        Err(e) => {
                            errors.failed(e);
                            continue;
                        }
                    };
                    errors.succeeded();
                    if serving.len() >= max_connections {
                        if refusing.len() < MAX_REFUSING {
                            refusing.spawn(refuse(tcp, remote, tls.clone(), max_connections));
                        }
                        continue;
                    }
                    let counted = Counted::new(gauge);
                    serving.spawn(serve(tcp, remote, tls.clone(), settings.clone(), stopping.clone(), counted));
                }
            }
        }
        drop(listener);
        refusing.abort_all();
        while serving.join_next().await.is_some() {}
        Ok(())
    }
}

/// Counts a connection in its listener's gauge (`distlog_http_open_connections`,
/// or the peer listener's) while its task lives (dropped when it ends or is
/// aborted).
struct Counted(&'static str);

impl Counted {
    fn new(gauge: &'static str) -> Counted {
        metrics::gauge!(gauge).increment(1.0);
        Counted(gauge)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

async fn serve(
    tcp: TcpStream,
    remote: SocketAddr,
    tls: Option<Arc<ReloadableTls>>,
    settings: Arc<ConnSettings>,
    stopping: watch::Receiver<bool>,
    _counted: Counted,
) {
    let send_queue = SendQueue::of(&tcp);
    match tls {
        None => {
            let peer = PeerInfo {
                remote,
                client_cn: None,
                client_cert: None,
            };
            connection::serve(tcp, send_queue, peer, settings, stopping).await
        }
        Some(tls) => {
            // A slow handshake is a slow request head.
            if let Some((stream, peer)) = tls.handshake(tcp, remote, settings.timeouts.header).await {
                connection::serve(stream, send_queue, peer, settings, stopping).await
            }
        }
    }
}

/// Answers 503 on a connection beyond the limit, then closes it.
async fn refuse(tcp: TcpStream, remote: SocketAddr, tls: Option<Arc<ReloadableTls>>, max: usize) {
    tracing::debug!(%remote, max, "too many connections; answering 503");
    let answer = raw_answer(&ApiError::TooManyConnections { max });
    let _ = tokio::time::timeout(REFUSE_TIME, async {
        match tls {
            None => {
                let mut tcp = tcp;
                write_and_linger(&mut tcp, &answer).await
            }
            Some(tls) => match tls.handshake(tcp, remote, REFUSE_TIME).await {
                Some((mut stream, _)) => write_and_linger(&mut stream, &answer).await,
                None => Ok(()),
            },
        }
    })
    .await;
}

/// Accept failures: when to try again and when to say so.
struct AcceptErrors {
    resume_at: Instant,
    pause: Option<Duration>,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Default for AcceptErrors {
    fn default() -> Self {
        AcceptErrors {
            resume_at: Instant::now(),
            pause: None,
            last_logged: None,
            unlogged: 0,
        }
    }
}

impl AcceptErrors {
    const FIRST_PAUSE: Duration = Duration::from_millis(10);
    const MAX_PAUSE: Duration = Duration::from_secs(1);

    fn paused(&self) -> bool {
        self.pause.is_some() && Instant::now() < self.resume_at
    }

    fn resume(&mut self) {
        self.resume_at = Instant::now();
    }

    fn succeeded(&mut self) {
        self.pause = None;
    }

    fn failed(&mut self, error: std::io::Error) {
        if !is_resource_exhaustion(&error) {
            tracing::debug!(%error, "accept failed for one connection");
            return;
        }
        let pause = self.pause.map_or(Self::FIRST_PAUSE, |p| (p * 2).min(Self::MAX_PAUSE));
        self.pause = Some(pause);
        self.resume_at = Instant::now() + pause;
        self.unlogged += 1;
        let due = self.last_logged.is_none_or(|at| at.elapsed() >= ACCEPT_ERROR_LOG_EVERY);
        if due {
            tracing::warn!(%error, failures = self.unlogged, pause = ?pause,
                "cannot accept connections; pausing accepts (lower --max-connections or raise the open-files limit)");
            self.last_logged = Some(Instant::now());
            self.unlogged = 0;
        }
    }
}

fn is_resource_exhaustion(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emfile() -> std::io::Error {
        std::io::Error::from_raw_os_error(libc::EMFILE)
    }

    #[tokio::test]
    async fn running_out_of_descriptors_pauses_accepts_longer_each_time() {
        let mut errors = AcceptErrors::default();
        assert!(!errors.paused());
        errors.failed(emfile());
        assert!(errors.paused());
        assert_eq!(errors.pause, Some(AcceptErrors::FIRST_PAUSE));
        for _ in 0..20 {
            errors.failed(emfile());
        }
        assert_eq!(errors.pause, Some(AcceptErrors::MAX_PAUSE));
        // Logged once, the rest counted for the next line.
        assert_eq!(errors.unlogged, 20);
        errors.succeeded();
        assert!(!errors.paused());
    }

    #[tokio::test]
    async fn a_reset_connection_does_not_pause_accepts() {
        let mut errors = AcceptErrors::default();
        errors.failed(std::io::Error::from_raw_os_error(libc::ECONNABORTED));
        assert!(!errors.paused());
    }
}
