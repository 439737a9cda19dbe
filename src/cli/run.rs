//! Running `distlog serve`: bind `--listen` (and `--peer-listen`), start the node, and serve
//! until SIGINT or SIGTERM (SIGHUP reloads the TLS certificate).

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use super::node_config::name_the_flag;
use crate::log::LogError;
use crate::node::{Node, NodeConfig, NodeError};

/// Why `--listen` could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    source: std::io::Error,
}

/// Binds `--listen` before anything else, so that a node that cannot
/// listen leaves no new data directory behind.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
        .with_context(|| format!("cannot start distlog on {addr}"))
}

/// Starts the node on `listener` (and `peers`, `--peer-listen`'s); errors
/// say what to change.
pub async fn start_node(config: NodeConfig, listener: TcpListener, peers: Option<TcpListener>) -> anyhow::Result<Node> {
    let addr = listener.local_addr()?;
    match Node::start_with_peers(config, listener, peers).await {
        Ok(node) => Ok(node),
        // A setting the data directory cannot take (a segment larger than
        // the free space) is a flag to change.
        Err(NodeError::Log(error @ LogError::Config { .. })) => Err(name_the_flag(error)),
        Err(error) => Err(error).with_context(|| format!("cannot start distlog on {addr}")),
    }
}

/// Why serving ended.
pub enum Stop {
    /// SIGINT or SIGTERM.
    Asked,
    /// The node asked to be started again (a repair planned for its next
    /// start): the process stops with an error, for its supervisor.
    Restart(String),
}

/// Serves until SIGINT or SIGTERM, or until the node asks to be started
/// again; on SIGHUP reloads the TLS certificate, key and client CA.
pub async fn run_until_signal(node: &Node) -> anyhow::Result<Stop> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup())?;
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let restart = node.restart_needed();
    tokio::pin!(restart);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(Stop::Asked),
            why = &mut restart => return Ok(Stop::Restart(why)),
            _ = hangups.recv() => {
                tracing::info!("SIGHUP: reloading TLS certificates");
                if let Err(e) = node.reload_tls() {
                    tracing::error!(error = %e, "reload failed; the previous certificate stays in use");
                }
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only SIGINT stops the server");
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
