//! The floor distlog's HTTP numbers are measured against: a minimal axum
//! server on the same runtime doing no storage work.
//!
//! `cargo run --release --example baseline_server -- 127.0.0.1:8090`
//!
//! - `POST /` reads the body and answers 201 `{"offset":N}` from a counter.
//! - `GET /{offset}` answers a fixed record of about 1 KiB of JSON.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};

#[derive(Clone)]
struct Baseline {
    next: Arc<AtomicU64>,
    record: Bytes,
}

async fn append(State(state): State<Baseline>, body: Bytes) -> impl IntoResponse {
    let offset = state.next.fetch_add(1, Ordering::Relaxed);
    let json = format!("{{\"offset\":{offset}}}");
    let _ = body.len();
    (StatusCode::CREATED, [(header::CONTENT_TYPE, "application/json")], json)
}

async fn read(State(state): State<Baseline>, Path(_offset): Path<u64>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], state.record.clone())
}

/// A record as distlog renders one: offset, timestamp and a ~1 KiB value.
fn fixed_record() -> Bytes {
    let pad = "x".repeat(1000);
    let json = format!(r#"{{"offset":0,"timestamp":1795537813536,"value":{{"event":"bench","pad":"{pad}"}}}}"#);
    Bytes::from(json)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("listen address: {e}")))?;
    let state = Baseline {
        next: Arc::new(AtomicU64::new(0)),
        record: fixed_record(),
    };
    let app = Router::new()
        .route("/", post(append))
        .route("/{offset}", get(read))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!("baseline_server listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await
}
