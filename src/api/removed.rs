//! The client routes of a member the cluster removed: `503 removed`. Its
//! log stopped where the cluster left it, so its reads would be stale and
//! its writes would go nowhere (see `cluster::removal`).

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;

pub async fn refuse_when_removed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.mode.cluster().and_then(|cluster| cluster.removed()) {
        Some(why) => ApiError::Removed(why).into_response(),
        None => next.run(request).await,
    }
}
