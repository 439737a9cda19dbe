//! The JSON-over-HTTP API (axum): routes, handlers, errors and observation.
//! `openapi.yaml` at the top of the repository documents the contract.

mod append;
mod error;
mod frames;
mod media;
mod metrics;
mod observe;
mod query;
mod read;
mod render;
mod request_metrics;
mod sse;
mod state;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::routing::get;

use crate::auth::{Guard, authorize};

pub use append::ATTR_BINARY;
pub use error::{ApiError, ApiResult};
pub use frames::{LOG_NEXT_OFFSET, LOWEST_OFFSET, NEXT_OFFSET};
pub use metrics::recorder;
pub use state::{AppState, Limits, Role};

/// The API's routes. With a guard, every route is authenticated and
/// authorized first (see `auth::guard`).
pub fn router(state: AppState, guard: Option<Arc<Guard>>) -> Router {
    recorder();
    let routes = Router::new()
        .route("/", get(read::read_range).post(append::append))
        .route("/{offset}", get(read::read_one))
        .route("/status", get(status::status))
        .route("/healthz", get(status::healthz))
        .route("/readyz", get(status::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/replication/frames", get(frames::frames));
    let routes = match guard {
        Some(guard) => routes.route_layer(axum::middleware::from_fn_with_state(guard, authorize)),
        None => routes,
    };
    routes
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(observe::ObserveLayer)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panic_response))
        .with_state(state)
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: request.method().to_string(),
        path: request.uri().path().to_string(),
    }
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    use axum::response::IntoResponse;
    tracing::error!("a request handler panicked");
    ApiError::Internal("the request failed unexpectedly".into()).into_response()
}
