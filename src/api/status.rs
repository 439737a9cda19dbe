//! `/status`, `/healthz` (the process answers) and `/readyz` (the log is
//! open, takes appends, and the server is not shutting down; a cluster
//! node also knows a leader and serves committed reads).

use super::json_body::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::state::AppState;
use crate::mode::{NodeStatus, NotReady};

pub async fn status(State(state): State<AppState>) -> Json<NodeStatus> {
    Json(state.mode.status(&state.log))
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
    match state.mode.readiness(&state.log) {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(NotReady { status, code, error }) => {
            let body = json!({ "status": status, "error": error, "code": code });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}
