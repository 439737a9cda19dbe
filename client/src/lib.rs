//! A client for distlog: finds the leader by
//! itself, spreads reads over the cluster, rides out failovers, and with a
//! [`Producer`] never writes a record twice.
//!
//! - [`Client::builder`] takes seed URLs (any member, a standalone node or
//!   a `--follow` replica), a token, a CA and a client certificate. The
//!   client asks a seed for `GET /cluster` and keeps the members and the
//!   leader, asking again on a `307`, a `503 no_leader`, a connection
//!   error or a timeout, and every few seconds in the background.
//! - Appends ([`Client::append`], [`Client::append_json`], ...) go to the
//!   leader; reads ([`Client::read`], [`Client::read_range`],
//!   [`Client::tail`], [`Client::stream`]) go round-robin over the
//!   members, skipping one that failed for a back-off (exponential with
//!   jitter, capped) and one that lags behind what is known committed.
//! - Errors say what the caller can do: [`Error::is_retryable`] (the same
//!   request may succeed later) and [`Error::has_no_side_effects`] (it
//!   provably wrote nothing). Without a producer an append is retried only
//!   when it provably never reached a server; a [`Producer`] retries any
//!   failure, as the log drops its duplicates.
//!
//! ```no_run
//! use distlog_client::{Append, Client};
//!
//! # async fn run() -> Result<(), distlog_client::Error> {
//! let client = Client::builder()
//!     .seeds(["http://node1:8080", "http://node2:8080", "http://node3:8080"])
//!     .build()?;
//! let producer = client.producer("checkout-1")?;
//! let appended = producer.append(&Append::batch(&[1, 2, 3])?).await?;
//!
//! let mut stream = client.stream(appended.first_offset);
//! while let Some(record) = stream.next().await? {
//!     println!("{}: {}", record.offset, String::from_utf8_lossy(&record.bytes()));
//! }
//! # Ok(()) }
//! ```

mod admin;
mod append;
mod backoff;
mod builder;
mod client;
mod error;
mod logs;
mod producer;
pub mod proto;
mod read;
mod record;
mod sse;
mod stream;
mod topology;

pub use admin::{ClusterInfo, MemberInfo, Position};
pub use append::Append;
pub use builder::ClientBuilder;
pub use client::Client;
pub use error::{Error, Result};
pub use logs::{LogInfo, LogSettings};
pub use producer::{MAX_IN_FLIGHT, PendingAppend, Producer, random_producer_id};
pub use read::Start;
pub use record::{Appended, Page, Payload, Record};
pub use stream::Stream;
