//! What a cluster member's listeners answer while it starts: they serve
//! from the first moment, because checking a log no earlier start checked
//! can outlast a start-up probe (issue 19 item 4), and a `Gate` answers
//! until the node is built:
//! - `/healthz` 200: the process is alive;
//! - `/readyz` 503 `starting`, saying the step the start is at (e.g.
//!   `checking the log: 3 of 12 segments`, see `cluster::StartProgress`);
//! - every other route 503 `starting`, peers' `/raft/*` included: openraft
//!   must not see a message before its core exists (a peer takes the 503
//!   for an unreachable node).
//!
//! The probes keep their guard (`--protect-metrics`). Once the node is
//! built, `Gate::open` hands the gate the listener's routes, and every
//! request goes to them.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tower_layer::Layer;
use tower_service::Service;

use super::cors::CrossOriginLayer;
use super::error::ApiError;
use super::guard::authorize;
use super::json_body::Json;
use super::observe::ObserveLayer;
use super::{AllowedOrigins, App, routes, status};
use crate::auth::Policy;
use crate::mode::StartProgress;

/// One listener's answers, before and after the node is built (see the
/// module doc). Clones share the switch.
#[derive(Clone)]
pub struct Gate {
    open: Arc<OnceLock<Router>>,
    starting: Router,
}

impl Gate {
    /// A closed gate: it answers as a starting node at `progress`'s step,
    /// the probes behind `policy` as they are once open.
    pub fn new(progress: StartProgress, policy: Option<Arc<Policy>>) -> Gate {
        let starting = Router::new()
            .route(routes::HEALTHZ, get(status::healthz))
            .route(routes::READYZ, get(readyz))
            .fallback(refuse)
            .with_state(progress);
        let starting = match policy {
            Some(policy) => starting.layer(axum::middleware::from_fn_with_state(policy, authorize)),
            None => starting,
        };
        Gate {
            open: Arc::default(),
            starting,
        }
    }

    /// The service the listener serves, now and once the gate is open,
    /// inside the same browser rules and observation as `app_on`'s.
    pub fn app(&self, origins: AllowedOrigins) -> App {
        let gate = self.clone();
        let router = Router::new().fallback(move |request: Request| {
            let gate = gate.clone();
            async move { gate.answer(request).await }
        });
        ObserveLayer.layer(CrossOriginLayer(origins).layer(router))
    }

    /// From now on every request goes to `routes` (`super::routes_on`).
    pub fn open(&self, routes: Router) {
        if self.open.set(routes).is_err() {
            debug_assert!(false, "a gate is opened once");
        }
    }

    async fn answer(&self, request: Request) -> Response {
        let mut router = self.open.get().unwrap_or(&self.starting).clone();
        let Ok(response) = router.call(request).await;
        response
    }
}

async fn readyz(State(progress): State<StartProgress>) -> Response {
    let body = json!({ "status": "starting", "error": progress.describe(), "code": "starting" });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}

async fn refuse(State(progress): State<StartProgress>) -> ApiError {
    ApiError::Starting(progress.describe())
}
