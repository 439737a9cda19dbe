//! The JSON-over-HTTP API (axum): routes, handlers, errors and observation.
//! `openapi.yaml` at the top of the repository documents the contract.

mod append;
mod catch_up;
mod cluster;
mod conditions;
mod console;
mod consumers;
mod cors;
mod error;
mod forward;
mod frames;
mod guard;
mod json_body;
mod json_check;
mod json_limits;
mod logs;
mod media;
mod metrics;
mod named;
mod observe;
mod position;
mod process_metrics;
mod protobuf;
mod query;
mod read;
mod removed;
mod render;
mod request_metrics;
mod sse;
mod start;
mod starting;
mod state;
mod status;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::routing::{any, delete, get, post};
use tower_layer::Layer;

use cors::{CrossOrigin, CrossOriginLayer};
use observe::{Observe, ObserveLayer};

use crate::auth::Policy;
use guard::authorize;

pub use console::{CONTENT_SECURITY_POLICY, embedded_bytes as console_bytes};
pub use cors::{AllowedOrigins, InvalidOrigin};
use error::Echo;
pub use error::{ApiError, ApiResult};
pub use metrics::{OPEN_CONNECTIONS, OPEN_PEER_CONNECTIONS, recorder};
pub use observe::ACCESS_LOG;
pub use render::push_decimal;
pub use starting::Gate;
pub use state::{AppState, DEFAULT_MAX_FORWARDED_WRITES, Limits};

/// Route templates: the router is built from them, and metrics and logs
/// label requests with them (see `route_template`).
mod routes {
    pub const ROOT: &str = "/";
    pub const RECORD: &str = "/{offset}";
    pub const STATUS: &str = "/status";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
    pub const FRAMES: &str = crate::wire::FRAMES_PATH;
    pub const CLUSTER: &str = "/cluster";
    pub const CLUSTER_JOIN: &str = "/cluster/join";
    pub const CLUSTER_MEMBER: &str = "/cluster/members/{id}";
    pub const CLUSTER_LEADER: &str = "/cluster/leader";
    pub const CONSUMERS: &str = "/consumers";
    pub const CONSUMER: &str = "/consumers/{name}";
    pub const LOGS: &str = "/logs";
    pub const LOG: &str = "/logs/{name}";
    /// A named log's routes: `/logs/{name}` and one of the routes above
    /// (see `named`); a route template names them so, e.g.
    /// `/logs/{name}/{offset}`.
    pub const NAMED_ROOT: &str = "/logs/{name}/";
    pub const NAMED_ANY: &str = "/logs/{name}/{*rest}";
    pub const NAMED_RECORD: &str = "/logs/{name}/{offset}";
    pub const NAMED_FRAMES: &str = "/logs/{name}/replication/frames";
    pub const NAMED_CONSUMERS: &str = "/logs/{name}/consumers";
    pub const NAMED_CONSUMER: &str = "/logs/{name}/consumers/{consumer}";
    pub const RAFT_APPEND: &str = crate::cluster::APPEND_PATH;
    pub const RAFT_VOTE: &str = crate::cluster::VOTE_PATH;
    pub const RAFT_PRE_VOTE: &str = crate::cluster::PRE_VOTE_PATH;
    pub const RAFT_SNAPSHOT: &str = crate::cluster::SNAPSHOT_PATH;
    pub const RAFT_TRANSFER: &str = crate::cluster::TRANSFER_PATH;
    /// Named logs' groups' heartbeats to this node, batched (`cluster::pulse`).
    pub const RAFT_HEARTBEATS: &str = crate::cluster::HEARTBEATS_PATH;
    /// A peer's pulse for the named groups it leads quietly (`cluster::quiet`).
    pub const RAFT_QUIET: &str = crate::cluster::QUIET_PATH;
    /// A named log's Raft group's messages (`cluster::group_path`).
    pub const RAFT_GROUP_APPEND: &str = "/raft/{group}/append";
    pub const RAFT_GROUP_VOTE: &str = "/raft/{group}/vote";
    pub const RAFT_GROUP_PRE_VOTE: &str = "/raft/{group}/pre-vote";
    pub const RAFT_GROUP_SNAPSHOT: &str = "/raft/{group}/snapshot";
    pub const RAFT_GROUP_TRANSFER: &str = "/raft/{group}/transfer-leader";
    pub const RAFT_GROUP_MEMBERSHIP: &str = "/raft/{group}/membership";
    /// Any other path under `/raft/`: no route, and still only a peer's to ask.
    pub const RAFT_OTHER: &str = "/raft/{*rest}";
    /// The web console's page (see `console`), also at `/ui/`.
    pub const UI: &str = "/ui";
    pub const UI_SLASH: &str = "/ui/";
    pub const UI_ASSET: &str = "/ui/{asset}";
    /// No route has this path (a JSON 404).
    pub const UNMATCHED: &str = "unmatched";
}

/// The whole HTTP service: the routes behind the browser rules (`cors`,
/// before the auth guard: preflights carry no credentials) inside request
/// observation (which also turns a panicking handler into a 500). They
/// wrap the router once rather than every route (`Router::layer`), which
/// would box and clone each per request.
pub type App = Observe<CrossOrigin<Router>>;

/// Which routes a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// Every route: the only listener (no `--peer-listen`).
    All,
    /// The client listener beside a peer listener: the peer-only routes
    /// (`/raft/*` and the membership changes under `/cluster/`) answer 404
    /// `peer_port_only`, so that a network policy can keep them to peers by
    /// port.
    Client,
    /// The peer listener (`--peer-listen`): the peer-only routes, and what
    /// formation and probes read (`GET /cluster`, `/status`, `/healthz`,
    /// `/readyz`); anything else is 404.
    Peer,
}

/// The API. With a policy, every route is authenticated and authorized
/// first (see `guard`); `origins` may write from a browser (see `cors`).
/// With `console`, the web console is served under `/ui` (its files need
/// no credentials; what it reads through the API does).
pub fn app(state: AppState, policy: Option<Arc<Policy>>, origins: AllowedOrigins, console: bool) -> App {
    app_on(Listener::All, state, policy, origins, console)
}

/// The API as `listener` serves it (see `Listener`; `app` is `All`).
pub fn app_on(
    listener: Listener,
    state: AppState,
    policy: Option<Arc<Policy>>,
    origins: AllowedOrigins,
    console: bool,
) -> App {
    let router = routes_on(listener, state, policy, console);
    ObserveLayer.layer(CrossOriginLayer(origins).layer(router))
}

/// The routes `app_on` serves, without the browser rules and observation
/// around them (a `Gate` puts its own around).
pub fn routes_on(listener: Listener, state: AppState, policy: Option<Arc<Policy>>, console: bool) -> Router {
    recorder();
    let routes = match listener {
        Listener::All => client_routes(&state).merge(peer_routes()),
        Listener::Client => client_routes(&state),
        Listener::Peer => peer_routes()
            .route(routes::CLUSTER, get(cluster::status))
            .merge(probe_routes()),
    };
    let routes = match policy {
        Some(policy) => routes.route_layer(axum::middleware::from_fn_with_state(policy, authorize)),
        None => routes,
    };
    let routes = match listener {
        // Before the guard: where a route is served is no secret.
        Listener::Client => routes.merge(peer_routes_elsewhere()),
        Listener::All | Listener::Peer => routes,
    };
    routes
        .merge(console::routes(console && listener != Listener::Peer))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Every route but the peer-only ones.
fn client_routes(state: &AppState) -> Router<AppState> {
    let named = Arc::new(named::NamedRouters::new(log_routes, state));
    let routers = named.clone();
    let delete_log = move |State(state): State<AppState>, Path(name): Path<String>| {
        let routers = routers.clone();
        async move { logs::delete(state, name, routers).await }
    };
    let dispatch = move |State(state): State<AppState>, request: Request| {
        let named = named.clone();
        async move { named::dispatch(state, named, request).await }
    };
    // The default log's routes: a removed member serves none (see `removed`).
    let default_log = log_routes().route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        removed::refuse_when_removed,
    ));
    default_log
        .merge(probe_routes())
        .route(routes::METRICS, get(metrics::metrics))
        .route(routes::CLUSTER, get(cluster::status))
        .route(routes::LOGS, get(logs::list))
        .route(
            routes::LOG,
            get(logs::get_one).put(logs::put).patch(logs::patch).delete(delete_log),
        )
        .route(routes::NAMED_ROOT, any(dispatch.clone()))
        .route(routes::NAMED_ANY, any(dispatch))
}

/// What a node says of itself, on every listener.
fn probe_routes() -> Router<AppState> {
    Router::new()
        .route(routes::STATUS, get(status::status))
        .route(routes::HEALTHZ, get(status::healthz))
        .route(routes::READYZ, get(status::readyz))
}

/// The routes only peers (and operators changing the membership) call:
/// Raft's messages and the membership changes.
fn peer_routes() -> Router<AppState> {
    Router::new()
        .route(routes::CLUSTER_JOIN, post(cluster::join))
        .route(routes::CLUSTER_MEMBER, delete(cluster::remove_member))
        .route(routes::CLUSTER_LEADER, post(cluster::transfer_leader))
        .route(routes::RAFT_APPEND, post(cluster::raft_append))
        .route(routes::RAFT_VOTE, post(cluster::raft_vote))
        .route(routes::RAFT_PRE_VOTE, post(cluster::raft_pre_vote))
        .route(routes::RAFT_SNAPSHOT, post(cluster::raft_snapshot))
        .route(routes::RAFT_TRANSFER, post(cluster::raft_transfer))
        .route(routes::RAFT_HEARTBEATS, post(cluster::raft_heartbeats))
        .route(routes::RAFT_QUIET, post(cluster::raft_quiet))
        .route(routes::RAFT_GROUP_APPEND, post(cluster::raft_append))
        .route(routes::RAFT_GROUP_VOTE, post(cluster::raft_vote))
        .route(routes::RAFT_GROUP_PRE_VOTE, post(cluster::raft_pre_vote))
        .route(routes::RAFT_GROUP_SNAPSHOT, post(cluster::raft_snapshot))
        .route(routes::RAFT_GROUP_TRANSFER, post(cluster::raft_transfer))
        .route(routes::RAFT_GROUP_MEMBERSHIP, get(cluster::raft_membership))
}

/// The peer-only routes on the client listener beside a peer listener:
/// 404 `peer_port_only` (not `not_found`, which a peer's pre-vote takes for
/// a node that predates the route, see `cluster::network`).
fn peer_routes_elsewhere() -> Router<AppState> {
    let elsewhere = any(cluster::peer_port_only);
    [
        routes::CLUSTER_JOIN,
        routes::CLUSTER_MEMBER,
        routes::CLUSTER_LEADER,
        routes::RAFT_APPEND,
        routes::RAFT_VOTE,
        routes::RAFT_PRE_VOTE,
        routes::RAFT_SNAPSHOT,
        routes::RAFT_TRANSFER,
        routes::RAFT_HEARTBEATS,
        routes::RAFT_QUIET,
        routes::RAFT_GROUP_APPEND,
        routes::RAFT_GROUP_VOTE,
        routes::RAFT_GROUP_PRE_VOTE,
        routes::RAFT_GROUP_SNAPSHOT,
        routes::RAFT_GROUP_TRANSFER,
        routes::RAFT_GROUP_MEMBERSHIP,
    ]
    .into_iter()
    .fold(Router::new(), |router, path| router.route(path, elsewhere.clone()))
}

/// The routes every log has, the default log at `/` and each named log
/// under `/logs/{name}/` (see `named`).
fn log_routes() -> Router<AppState> {
    Router::new()
        .route(routes::ROOT, get(read::read_range).post(append::append))
        .route(routes::RECORD, get(read::read_one))
        .route(routes::FRAMES, get(frames::frames))
        .route(routes::CONSUMERS, get(consumers::list))
        .route(
            routes::CONSUMER,
            get(consumers::get_one).put(consumers::put).delete(consumers::delete),
        )
}

/// The template of the route that serves `path`, as the router matches it:
/// the named paths, any other single non-empty segment is a record.
pub fn route_template(path: &str) -> &'static str {
    if let Some((name, rest)) = named::split(path) {
        return named_template(name, rest, path);
    }
    match path {
        routes::ROOT => routes::ROOT,
        routes::STATUS => routes::STATUS,
        routes::HEALTHZ => routes::HEALTHZ,
        routes::READYZ => routes::READYZ,
        routes::METRICS => routes::METRICS,
        routes::FRAMES => routes::FRAMES,
        routes::CLUSTER => routes::CLUSTER,
        routes::CLUSTER_JOIN => routes::CLUSTER_JOIN,
        routes::CLUSTER_LEADER => routes::CLUSTER_LEADER,
        routes::CONSUMERS => routes::CONSUMERS,
        routes::LOGS => routes::LOGS,
        routes::RAFT_APPEND => routes::RAFT_APPEND,
        routes::RAFT_VOTE => routes::RAFT_VOTE,
        routes::RAFT_PRE_VOTE => routes::RAFT_PRE_VOTE,
        routes::RAFT_SNAPSHOT => routes::RAFT_SNAPSHOT,
        routes::RAFT_TRANSFER => routes::RAFT_TRANSFER,
        routes::RAFT_HEARTBEATS => routes::RAFT_HEARTBEATS,
        routes::RAFT_QUIET => routes::RAFT_QUIET,
        p if p.starts_with("/raft/") => raft_group_template(p),
        routes::UI => routes::UI,
        routes::UI_SLASH => routes::UI_SLASH,
        p if p.starts_with(routes::UI_SLASH) && !p[routes::UI_SLASH.len()..].contains('/') => routes::UI_ASSET,
        p if p.starts_with("/cluster/members/") && !p["/cluster/members/".len()..].contains('/') => {
            routes::CLUSTER_MEMBER
        }
        p if p.len() > "/consumers/".len()
            && p.starts_with("/consumers/")
            && !p["/consumers/".len()..].contains('/') =>
        {
            routes::CONSUMER
        }
        _ => match path.strip_prefix('/') {
            Some(segment) if !segment.is_empty() && !segment.contains('/') => routes::RECORD,
            _ => routes::UNMATCHED,
        },
    }
}

/// The template of `/raft/{group}/...` (a group id of digits).
fn raft_group_template(path: &str) -> &'static str {
    let rest = path.trim_start_matches("/raft/");
    let Some((group, message)) = rest.split_once('/') else {
        return routes::RAFT_OTHER;
    };
    if group.is_empty() || !group.bytes().all(|b| b.is_ascii_digit()) {
        return routes::RAFT_OTHER;
    }
    match message {
        "append" => routes::RAFT_GROUP_APPEND,
        "vote" => routes::RAFT_GROUP_VOTE,
        "pre-vote" => routes::RAFT_GROUP_PRE_VOTE,
        "snapshot" => routes::RAFT_GROUP_SNAPSHOT,
        "transfer-leader" => routes::RAFT_GROUP_TRANSFER,
        "membership" => routes::RAFT_GROUP_MEMBERSHIP,
        _ => routes::RAFT_OTHER,
    }
}

/// The template of a path under `/logs/`: `name` and what follows it,
/// matched against the routes a log has without going back through
/// `route_template` (a path of many `/logs/x/` must cost one pass).
fn named_template(name: &str, rest: &str, path: &str) -> &'static str {
    if name.is_empty() {
        return routes::UNMATCHED;
    }
    if !path[named::PREFIX.len() + name.len()..].starts_with('/') {
        return routes::LOG;
    }
    match rest {
        "" => routes::NAMED_ROOT,
        "replication/frames" => routes::NAMED_FRAMES,
        "consumers" => routes::NAMED_CONSUMERS,
        _ => match rest.strip_prefix("consumers/") {
            Some(consumer) if !consumer.is_empty() && !consumer.contains('/') => routes::NAMED_CONSUMER,
            Some(_) => routes::UNMATCHED,
            // Any other single segment is an offset there, as at `/`.
            None if !rest.contains('/') => routes::NAMED_RECORD,
            None => routes::UNMATCHED,
        },
    }
}

/// The name of the log a request to `path` is for (`default` for the
/// default log's routes); `None` for routes of the node (status, metrics,
/// the cluster, the list of logs).
pub fn log_of(path: &str) -> Option<&str> {
    match route_template(path) {
        routes::ROOT | routes::RECORD | routes::FRAMES | routes::CONSUMERS | routes::CONSUMER => {
            Some(crate::logs::DEFAULT_LOG)
        }
        routes::LOG
        | routes::NAMED_ROOT
        | routes::NAMED_RECORD
        | routes::NAMED_FRAMES
        | routes::NAMED_CONSUMERS
        | routes::NAMED_CONSUMER => named::split(path).map(|(name, _)| name),
        _ => None,
    }
}

async fn route_not_found(request: Request) -> ApiError {
    ApiError::RouteNotFound {
        method: Echo::of(request.method().as_str()),
        path: Echo::of(request.uri().path()),
    }
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::MethodNotAllowed {
        method: Echo::of(request.method().as_str()),
        path: Echo::of(request.uri().path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_the_template_of_the_route_that_serves_them() {
        for (path, template) in [
            ("/", "/"),
            ("/status", "/status"),
            ("/metrics", "/metrics"),
            ("/replication/frames", "/replication/frames"),
            ("/42", "/{offset}"),
            ("/not-a-number", "/{offset}"),
            ("/status/", "unmatched"),
            ("/replication", "/{offset}"),
            ("/a/b", "unmatched"),
            ("/ui", "/ui"),
            ("/ui/", "/ui/"),
            ("/ui/main.js", "/ui/{asset}"),
            ("/ui/a/b", "unmatched"),
            ("/consumers", "/consumers"),
            ("/consumers/billing", "/consumers/{name}"),
            ("/consumers/a/b", "unmatched"),
            ("/consumers/", "unmatched"),
            ("//", "unmatched"),
            ("/logs", "/logs"),
            ("/logs/orders", "/logs/{name}"),
            ("/logs/orders/", "/logs/{name}/"),
            ("/logs/orders/42", "/logs/{name}/{offset}"),
            ("/logs/orders/replication/frames", "/logs/{name}/replication/frames"),
            ("/logs/orders/consumers", "/logs/{name}/consumers"),
            ("/logs/orders/consumers/billing", "/logs/{name}/consumers/{consumer}"),
            ("/logs/orders/a/b", "unmatched"),
            ("/logs/", "unmatched"),
            ("/logs//1", "unmatched"),
            ("/logs/orders/consumers/", "unmatched"),
            ("/logs/orders/replication", "/logs/{name}/{offset}"),
            ("/logs/a/logs/a/0", "unmatched"),
            ("/raft/append", "/raft/append"),
            ("/raft/pre-vote", "/raft/pre-vote"),
            ("/raft/7/append", "/raft/{group}/append"),
            ("/raft/12/pre-vote", "/raft/{group}/pre-vote"),
            ("/raft/7/snapshot", "/raft/{group}/snapshot"),
            // Anything else under /raft/ is still a peer's route to ask, never a reader's.
            ("/raft/+0/append", "/raft/{*rest}"),
            ("/raft/-1/vote", "/raft/{*rest}"),
            ("/raft/7/other", "/raft/{*rest}"),
            ("/raft/x", "/raft/{*rest}"),
        ] {
            assert_eq!(route_template(path), template, "{path}");
        }
        let nested = "/logs/a".repeat(10_000) + "/0";
        assert_eq!(
            route_template(&nested),
            "unmatched",
            "one pass, however many /logs/ a path repeats"
        );
    }
}
