//! The HTTP connection layer, ours rather than `axum::serve`, which has no
//! timeouts and no connection cap: `accept` (the accept loop, the cap,
//! accept errors), `connection` (one connection under hyper), `timeouts`
//! (each connection's header, idle, body and send timeouts), `bodies`
//! (request bodies that report waiting, answers in flight), `conn_io`
//! (JSON for protocol errors hyper answers itself), `send_queue` (bytes the
//! socket has not taken), `fd_limit` (the open-files limit).
//!
//! It serves whatever `api::App` it is given on a listener it is handed;
//! it knows nothing of logs or modes.

mod accept;
mod bodies;
mod conn_io;
mod connection;
mod fd_limit;
mod send_queue;
mod timeouts;

pub use bodies::BodyTimedOut;
pub use fd_limit::{OpenFilesLimit, raise_open_files_limit};

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::App;
use crate::auth::ReloadableTls;

/// Limits on HTTP connections.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// A request head (and a TLS handshake) must arrive within this, from its first byte.
    pub header_timeout: Duration,
    /// A keep-alive connection with no request in flight is closed after this.
    pub idle_timeout: Duration,
    /// A request body that sends nothing for this long is answered 408 and its connection closed.
    pub body_timeout: Duration,
    /// An answer whose queued bytes the socket accepts none of for this long
    /// (the client does not read) has its connection closed.
    pub send_timeout: Duration,
    /// Connections served at once; more are answered 503. Lowered at start
    /// to what the open-files limit allows.
    pub max_connections: usize,
    /// Connections another listener of this process may serve at once (the
    /// peer listener's cap, beside the client listener): the open-files
    /// limit is shared, and the other listener's share is kept from this one.
    pub beside: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            beside: 0,
        }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until
/// `stopping` turns true and every connection's request in flight is
/// answered. `with_peer` attaches the peer (its client certificate) to
/// every request, which costs when nothing reads it.
pub fn serve(
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    app: App,
    config: &HttpConfig,
    with_peer: bool,
    stopping: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    serve_counted(
        listener,
        tls,
        app,
        config,
        with_peer,
        stopping,
        crate::api::OPEN_CONNECTIONS,
    )
}

/// As `serve`, for the peer listener (`--peer-listen`): its connections
/// have their own cap (in `config`) and their own gauge, so that clients
/// holding every client connection leave the peers theirs.
pub fn serve_peers(
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    app: App,
    config: &HttpConfig,
    with_peer: bool,
    stopping: watch::Receiver<bool>,
) -> JoinHandle<std::io::Result<()>> {
    let gauge = crate::api::OPEN_PEER_CONNECTIONS;
    metrics::gauge!(gauge).increment(0.0);
    serve_counted(listener, tls, app, config, with_peer, stopping, gauge)
}

fn serve_counted(
    listener: TcpListener,
    tls: Option<Arc<ReloadableTls>>,
    app: App,
    config: &HttpConfig,
    with_peer: bool,
    stopping: watch::Receiver<bool>,
    gauge: &'static str,
) -> JoinHandle<std::io::Result<()>> {
    let acceptor = accept::Acceptor {
        listener,
        tls,
        settings: Arc::new(connection::ConnSettings {
            app,
            timeouts: timeouts::Timeouts {
                header: config.header_timeout,
                idle: config.idle_timeout,
                body: config.body_timeout,
                send: config.send_timeout,
            },
            with_peer,
        }),
        max_connections: max_connections(config.max_connections, config.beside),
        stopping,
        gauge,
    };
    tokio::spawn(acceptor.run())
}

/// `wanted`, or fewer if the open-files limit (raised to its hard limit
/// here) would run out first, `beside` connections of another listener (and
/// its refusals) kept from it.
fn max_connections(wanted: usize, beside: usize) -> usize {
    match raise_open_files_limit() {
        Ok(limit) => {
            if limit.now > limit.before {
                tracing::info!(from = limit.before, to = limit.now, "raised the open-files limit");
            }
            let others = match beside {
                0 => 0,
                n => n + accept::MAX_REFUSING,
            };
            let allowed = limit
                .connections_allowed(accept::MAX_REFUSING)
                .saturating_sub(others)
                .max(1);
            if wanted > allowed {
                tracing::warn!(
                    max_connections = wanted,
                    open_files_limit = limit.now,
                    using = allowed,
                    beside,
                    "--max-connections (or --max-peer-connections) is more than the open-files limit allows; using fewer"
                );
            }
            wanted.min(allowed).max(1)
        }
        Err(error) => {
            tracing::warn!(%error, "cannot read or raise the open-files limit");
            wanted.max(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_listeners_share_of_the_open_files_limit_is_kept_from_this_one() {
        let alone = max_connections(usize::MAX, 0);
        let beside = max_connections(usize::MAX, 100);
        // Unless the limit is too low to keep that much (then one at least).
        let kept = (100 + accept::MAX_REFUSING).min(alone - 1);
        assert_eq!(alone - beside, kept, "{alone} vs {beside}");
        assert_eq!(max_connections(10, 100), 10, "a cap well below the limit stays");
    }
}
