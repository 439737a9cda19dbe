//! A fault-injecting TCP proxy for one directed link between two nodes.
//!
//! It listens on `127.0.0.1:0` and forwards every accepted connection to
//! its target. Its `Mode` can be switched at any time:
//!
//! - `Pass`: bytes flow both ways.
//! - `Drop`: bytes are read and thrown away in both directions (counted as
//!   swallowed), like a network that loses every packet: peers see
//!   timeouts, not errors. New connections are accepted and swallowed too.
//!   When the mode leaves `Drop`, every connection that lost bytes, and
//!   every one accepted during the drop, is closed (its stream is corrupt
//!   or was never connected); connections that lost nothing carry on.
//! - `Stall`: nothing is read, so bytes wait (in the sockets' buffers, then
//!   in the senders') and are delivered in order once the mode is `Pass`.
//!   New connections are accepted and connected, and wait the same way.
//! - `Sever`: every connection is closed at once; new ones are accepted and
//!   closed immediately.
//!
//! In `Pass`, `set_rate` can slow each connection's bytes to the target
//! (a slow link). Back in `Pass`, new connections work again. Everything runs on the
//! harness runtime (`rt::runtime`); dropping the proxy stops its listener
//! and closes its connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::rt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Drop,
    Stall,
    Sever,
}

/// Byte and connection counts since the proxy started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Bytes written to the target (client -> target).
    pub to_target: u64,
    /// Bytes written back to the client (target -> client).
    pub to_client: u64,
    /// Bytes read and thrown away in `Drop`, both directions.
    pub swallowed: u64,
    /// Connections accepted.
    pub accepted: u64,
    /// Accepted connections whose connection to the target failed.
    pub connect_failures: u64,
}

#[derive(Default)]
struct Counters {
    to_target: AtomicU64,
    to_client: AtomicU64,
    swallowed: AtomicU64,
    accepted: AtomicU64,
    connect_failures: AtomicU64,
    /// Bytes a second each connection passes to the target; 0: no limit.
    rate: AtomicU64,
}

pub struct FaultProxy {
    addr: SocketAddr,
    target: SocketAddr,
    /// Dropping it ends the listener and every connection.
    mode: watch::Sender<Mode>,
    counters: Arc<Counters>,
}

impl FaultProxy {
    /// Binds `127.0.0.1:0` and starts forwarding to `target` in `Pass`.
    pub fn start(target: SocketAddr) -> std::io::Result<FaultProxy> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let listener = {
            let _entered = rt::runtime().enter();
            TcpListener::from_std(listener)?
        };
        let (mode, receiver) = watch::channel(Mode::Pass);
        let counters = Arc::new(Counters::default());
        rt::runtime().spawn(accept_loop(listener, target, receiver, counters.clone()));
        Ok(FaultProxy {
            addr,
            target,
            mode,
            counters,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` plus the proxy's address.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn target(&self) -> SocketAddr {
        self.target
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }

    /// Slows every connection's bytes to the target to `bytes_per_sec`
    /// (None: as fast as they come), from the next chunk on.
    pub fn set_rate(&self, bytes_per_sec: Option<u64>) {
        self.counters.rate.store(bytes_per_sec.unwrap_or(0), Ordering::Relaxed);
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            to_target: c.to_target.load(Ordering::Relaxed),
            to_client: c.to_client.load(Ordering::Relaxed),
            swallowed: c.swallowed.load(Ordering::Relaxed),
            accepted: c.accepted.load(Ordering::Relaxed),
            connect_failures: c.connect_failures.load(Ordering::Relaxed),
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            changed = mode.changed() => {
                if changed.is_err() {
                    return; // the proxy was dropped
                }
                continue;
            }
        };
        let Ok((client, _)) = accepted else {
            continue; // e.g. out of descriptors; the client sees a reset
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let _ = client.set_nodelay(true);
        let now = *mode.borrow();
        match now {
            Mode::Sever => drop(client),
            Mode::Drop => {
                tokio::spawn(swallow_until_mode_changes(client, mode.clone(), counters.clone()));
            }
            Mode::Pass | Mode::Stall => {
                tokio::spawn(connect_and_forward(client, target, mode.clone(), counters.clone()));
            }
        }
    }
}

/// A connection accepted during `Drop`: never connected to the target,
/// read and thrown away until the mode changes, then closed.
async fn swallow_until_mode_changes(mut client: TcpStream, mut mode: watch::Receiver<Mode>, counters: Arc<Counters>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *mode.borrow_and_update() != Mode::Drop {
            return;
        }
        tokio::select! {
            read = client.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => { counters.swallowed.fetch_add(n as u64, Ordering::Relaxed); }
            },
            changed = mode.changed() => if changed.is_err() { return },
        }
    }
}

async fn connect_and_forward(
    client: TcpStream,
    target: SocketAddr,
    mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
) {
    let upstream = match TcpStream::connect(target).await {
        Ok(upstream) => upstream,
        Err(_) => {
            counters.connect_failures.fetch_add(1, Ordering::Relaxed);
            return; // dropping the client closes it: the peer sees the target as down
        }
    };
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let poisoned = Arc::new(AtomicBool::new(false));
    let link = |from, to, forwarded| Pump {
        from,
        to,
        mode: mode.clone(),
        counters: counters.clone(),
        forwarded,
        poisoned: poisoned.clone(),
    };
    let outbound = link(client_read, upstream_write, Direction::ToTarget).run();
    let inbound = link(upstream_read, client_write, Direction::ToClient).run();
    tokio::pin!(outbound, inbound);
    // A half that ends cleanly (EOF passed on) lets the other finish; an
    // abort on either side closes both sockets by dropping both halves.
    let (mut outbound_done, mut inbound_done) = (false, false);
    while !(outbound_done && inbound_done) {
        let end = tokio::select! {
            end = &mut outbound, if !outbound_done => { outbound_done = true; end }
            end = &mut inbound, if !inbound_done => { inbound_done = true; end }
        };
        if end == PumpEnd::Abort {
            return;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    ToTarget,
    ToClient,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PumpEnd {
    /// The source closed and the close was passed on.
    Eof,
    /// The connection must be torn down.
    Abort,
}

struct Pump {
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    mode: watch::Receiver<Mode>,
    counters: Arc<Counters>,
    forwarded: Direction,
    /// Set once this connection lost bytes in `Drop`: it is closed when the
    /// mode leaves `Drop`, since its byte stream has a hole.
    poisoned: Arc<AtomicBool>,
}

impl Pump {
    async fn run(mut self) -> PumpEnd {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            // Wait for a mode in which this side reads.
            match self.current() {
                Mode::Sever => return PumpEnd::Abort,
                Mode::Pass if self.poisoned.load(Ordering::Relaxed) => return PumpEnd::Abort,
                Mode::Stall => {
                    if self.mode.changed().await.is_err() {
                        return PumpEnd::Abort;
                    }
                    continue;
                }
                Mode::Pass | Mode::Drop => {}
            }
            let n = tokio::select! {
                read = self.from.read(&mut buf) => match read {
                    Ok(0) => {
                        let _ = self.to.shutdown().await;
                        return PumpEnd::Eof;
                    }
                    Ok(n) => n,
                    Err(_) => return PumpEnd::Abort,
                },
                changed = self.mode.changed() => {
                    if changed.is_err() {
                        return PumpEnd::Abort;
                    }
                    continue;
                }
            };
            if !self.deliver(&buf[..n]).await {
                return PumpEnd::Abort;
            }
        }
    }

    fn current(&mut self) -> Mode {
        *self.mode.borrow_and_update()
    }

    /// Passes on (or, in `Drop`, throws away) bytes already read, by the
    /// mode now: held while `Stall`. False when the connection must close.
    async fn deliver(&mut self, bytes: &[u8]) -> bool {
        loop {
            match self.current() {
                Mode::Sever => return false,
                Mode::Drop => {
                    self.poisoned.store(true, Ordering::Relaxed);
                    self.counters.swallowed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    return true;
                }
                Mode::Stall => {
                    if self.mode.changed().await.is_err() {
                        return false;
                    }
                }
                Mode::Pass => {
                    // A write the far side does not read must still yield to a Sever.
                    let mut sever = self.mode.clone();
                    let written = tokio::select! {
                        written = self.to.write_all(bytes) => written.is_ok(),
                        _ = sever.wait_for(|m| *m == Mode::Sever) => false,
                    };
                    if !written {
                        return false;
                    }
                    let counter = match self.forwarded {
                        Direction::ToTarget => &self.counters.to_target,
                        Direction::ToClient => &self.counters.to_client,
                    };
                    counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    let rate = self.counters.rate.load(Ordering::Relaxed);
                    if self.forwarded == Direction::ToTarget && rate > 0 {
                        let nanos = (bytes.len() as u64).saturating_mul(1_000_000_000) / rate;
                        tokio::time::sleep(std::time::Duration::from_nanos(nanos)).await;
                    }
                    return true;
                }
            }
        }
    }
}
