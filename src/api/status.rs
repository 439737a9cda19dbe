//! `/status`, `/healthz` (the process answers) and `/readyz` (the log is
//! open, takes appends, and the server is not shutting down; a cluster
//! node also knows a leader and serves committed reads).

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
    if let Some(cluster) = &state.cluster {
        let view = cluster.status();
        let leading = view.leader_id == Some(view.node_id);
        body["role"] = json!(if leading { "leader" } else { "cluster_follower" });
        body["writable"] = json!(leading && body["writable"] == json!(true));
        body["leader"] = json!(view.leader_url);
        body["cluster"] = json!({
            "node_id": view.node_id,
            "term": view.term,
            "leader_id": view.leader_id,
            "commit_offset": view.commit_offset,
            "members": view.members.len(),
        });
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
    if let Some(cluster) = &state.cluster
        && !cluster.ready()
    {
        let body = json!({
            "status": "no_leader",
            "error": "this cluster node knows no leader or has applied nothing yet",
            "code": "no_leader",
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    Json(json!({ "status": "ready" })).into_response()
}
