//! `/status`, `/healthz` (the process answers) and `/readyz` (the log is
//! open, takes appends, and the server is not shutting down).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::{AppState, Role};

pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let stats = state.log.stats();
    let mut body = json!({
        "lowest_offset": stats.lowest_offset,
        "next_offset": stats.next_offset,
        "segments": stats.segments,
        "size_bytes": stats.size_bytes,
        "role": "leader",
        "writable": true,
        "leader": null,
    });
    if let Some(why) = state.log.failure() {
        body["writable"] = json!(false);
        body["storage_error"] = json!(why);
    }
    if let Role::Follower(follower) = &state.role {
        let seen = follower.snapshot(stats.next_offset);
        body["role"] = json!("follower");
        body["leader"] = json!(follower.leader);
        body["leader_next_offset"] = json!(seen.leader_next_offset);
        body["lag"] = json!(seen.lag);
        body["replication_state"] = json!(seen.state);
        if let Some(error) = seen.error {
            body["replication_error"] = json!(error);
        }
    }
    Json(body)
}

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutting_down() {
        let body =
            json!({ "status": "shutting_down", "error": "the server is shutting down", "code": "shutting_down" });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if let Some(why) = state.log.failure() {
        let body = json!({ "status": "storage_failed", "error": why, "code": "storage_unavailable" });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({ "status": "ready" })).into_response()
}
