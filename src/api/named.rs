//! How a request under `/logs/{name}/` reaches its log: the dispatcher
//! finds the log in the catalogue, strips the prefix (`/logs/orders/42`
//! becomes `/42`) and hands the request to a router of the log's routes
//! built with that log's state, so that every handler serves a named log
//! as it serves the default one. A `Location` the log's routes answer
//! (`/42` after an append) gets the prefix back.
//!
//! Routers are built on a log's first request and kept while the log lives
//! (keyed by the open log itself: a log deleted and created again gets a
//! new one). `default` names the default log here too.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use axum::Router;
use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use tower_service::Service;

use super::error::{ApiError, Echo};
use super::state::AppState;
use crate::logs::{CatalogError, DEFAULT_LOG, Found, NamedLog, Requested, check_name};

/// The prefix every named log's routes share.
pub(super) const PREFIX: &str = "/logs/";

/// See the module doc.
pub(super) struct NamedRouters {
    /// The routes of one log, given the state to serve them with.
    routes: fn() -> Router<AppState>,
    /// The default log's, built with the node's state.
    default: Router,
    built: RwLock<HashMap<String, (Arc<NamedLog>, Router)>>,
}

impl NamedRouters {
    pub(super) fn new(routes: fn() -> Router<AppState>, state: &AppState) -> Self {
        NamedRouters {
            routes,
            default: finish(routes()).with_state(state.clone()),
            built: RwLock::new(HashMap::new()),
        }
    }

    fn router_for(&self, state: &AppState, named: Arc<NamedLog>) -> Router {
        {
            let built = self.built.read().unwrap_or_else(PoisonError::into_inner);
            if let Some((log, router)) = built.get(named.name.as_str())
                && Arc::ptr_eq(log, &named)
            {
                return router.clone();
            }
        }
        let mut built = self.built.write().unwrap_or_else(PoisonError::into_inner);
        let router = finish((self.routes)()).with_state(state.for_log(&named));
        built.insert(named.name.to_string(), (named, router.clone()));
        router
    }

    pub(super) fn forget(&self, name: &str) {
        // Unknown names are common (404s): the write lock only when there is something to drop.
        if !self
            .built
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
        {
            return;
        }
        self.built.write().unwrap_or_else(PoisonError::into_inner).remove(name);
    }
}

/// A log's routes with the node's answers for a path or method they lack.
fn finish(routes: Router<AppState>) -> Router<AppState> {
    routes
        .fallback(super::route_not_found)
        .method_not_allowed_fallback(super::method_not_allowed)
}

/// `/logs/{name}` and what follows it in `path`, if it is under `PREFIX`.
pub(super) fn split(path: &str) -> Option<(&str, &str)> {
    let tail = path.strip_prefix(PREFIX)?;
    Some(tail.split_once('/').unwrap_or((tail, "")))
}

/// Serves `request`, a path under `/logs/{name}/`, from its log.
pub(super) async fn dispatch(state: AppState, routers: Arc<NamedRouters>, request: Request) -> Response {
    match route(&state, &routers, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn route(state: &AppState, routers: &NamedRouters, mut request: Request) -> Result<Response, ApiError> {
    let (name, rest) = split(request.uri().path()).unwrap_or_default();
    let (name, rest) = (name.to_string(), format!("/{rest}"));
    check_name(&name).map_err(|e| ApiError::InvalidLogName {
        name: Echo::of(&name),
        reason: e.reason,
    })?;
    let mut router = match name.as_str() {
        DEFAULT_LOG => routers.default.clone(),
        _ => {
            let named = find(state, &name, request.method(), &rest, request.uri()).await;
            if named.is_err() {
                routers.forget(&name);
            }
            routers.router_for(state, named?)
        }
    };
    *request.uri_mut() = strip(request.uri(), &rest)?;
    let Ok(mut response) = router.call(request).await;
    prefix_location(&mut response, &name, &rest);
    Ok(response)
}

/// The log `name`, created first when `--auto-create-logs` allows it and
/// this is an append.
async fn find(state: &AppState, name: &str, method: &Method, rest: &str, uri: &Uri) -> Result<Arc<NamedLog>, ApiError> {
    if let Some(found) = state.catalog.find(name) {
        return here(state, name, found, uri);
    }
    if let Some(why) = state.catalog.unavailable_reason() {
        return Err(ApiError::NamedLogsUnavailable(why));
    }
    if let Some(why) = state.catalog.failure(name) {
        return Err(super::logs::set_aside(name, why));
    }
    if let Some(ask) = state.catalog.not_final() {
        // The cluster group's leader knows every log there is.
        return Err(super::error::cluster_error(
            ask,
            uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        ));
    }
    if !(state.catalog.auto_creates() && method == Method::POST && rest == "/") {
        return Err(ApiError::LogNotFound { name: name.to_string() });
    }
    let log_name = super::logs::parse_name(name)?;
    match state.catalog.create(log_name, &Requested::default()).await {
        Ok((_, found)) => here(state, name, found, uri),
        // Created meanwhile with other settings: that one is the log.
        Err(CatalogError::Exists { .. }) => match state.catalog.find(name) {
            Some(found) => here(state, name, found, uri),
            None => Err(ApiError::LogNotFound { name: name.to_string() }),
        },
        // A cluster creates logs on its leader: the append goes there, to be created and taken.
        Err(CatalogError::Cluster { error, .. }) => Err(super::error::cluster_error(
            error,
            uri.path_and_query().map_or(uri.path(), |p| p.as_str()),
        )),
        Err(e) => Err(e.into()),
    }
}

/// The log `found` if it is open here; else where it is served (a
/// cluster's log with no replica here), or why not yet.
fn here(state: &AppState, name: &str, found: Found, uri: &Uri) -> Result<Arc<NamedLog>, ApiError> {
    match found {
        Found::Here(named) => Ok(named),
        Found::Elsewhere(remote) => {
            let node = remote.next_node().ok_or(ApiError::NoLeader)?;
            let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
            Err(ApiError::LogElsewhere {
                name: name.to_string(),
                location: format!("{}{path}", node.trim_end_matches('/')),
                node,
            })
        }
        Found::Opening(_) => Err(match state.catalog.failure(name) {
            Some(why) => super::logs::set_aside(name, why),
            None => ApiError::Busy("this node's replica of the log is opening; retry shortly"),
        }),
    }
}

/// `uri` with the path `rest` and the same query.
fn strip(uri: &Uri, rest: &str) -> Result<Uri, ApiError> {
    let path_and_query = match uri.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_string(),
    };
    let path_and_query = PathAndQuery::try_from(path_and_query).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(Uri::from(path_and_query))
}

fn prefix_location(response: &mut Response, name: &str, rest: &str) {
    let Some(location) = response.headers().get(header::LOCATION).and_then(|v| v.to_str().ok()) else {
        return;
    };
    if let Ok(value) = HeaderValue::from_str(&prefixed(location, name, rest)) {
        response.headers_mut().insert(header::LOCATION, value);
    }
}

/// `location` with the log's prefix put back in its path: a relative one
/// (`/42` after an append) or an absolute one (a cluster's redirect to the
/// log's leader on another node, `http://b:8080/?from=3`, whose URL may
/// have a path of its own: the prefix goes before `rest`, the path the
/// log's routes were asked).
fn prefixed(location: &str, name: &str, rest: &str) -> String {
    let Some((scheme, after)) = location.split_once("://") else {
        return match location.starts_with('/') {
            true => format!("{PREFIX}{name}{location}"),
            false => location.to_string(),
        };
    };
    let authority = scheme.len() + 3 + after.find('/').unwrap_or(after.len());
    let (path, query) = match location[authority..].split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (&location[authority..], None),
    };
    let base = path
        .strip_suffix(rest)
        .unwrap_or(path.strip_suffix('/').unwrap_or(path));
    let tail = match path.strip_suffix(rest) {
        Some(_) => rest,
        None => &path[base.len()..],
    };
    let mut out = format!("{}{base}{PREFIX}{name}{tail}", &location[..authority]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_get_the_logs_prefix_back_relative_or_absolute() {
        assert_eq!(prefixed("/42", "orders", "/"), "/logs/orders/42");
        assert_eq!(
            prefixed("http://b:8080/?from=3", "orders", "/"),
            "http://b:8080/logs/orders/?from=3"
        );
        assert_eq!(prefixed("https://b/42", "a", "/42"), "https://b/logs/a/42");
        assert_eq!(prefixed("http://b:8080", "a", "/"), "http://b:8080/logs/a");
        assert_eq!(
            prefixed("https://gw/node-b/?from=3", "x", "/"),
            "https://gw/node-b/logs/x/?from=3",
            "a member URL with a path keeps it before the log's prefix"
        );
        assert_eq!(prefixed("https://gw/node-b/7", "x", "/7"), "https://gw/node-b/logs/x/7");
    }

    #[test]
    fn paths_split_into_a_name_and_the_rest() {
        assert_eq!(split("/logs/orders/42"), Some(("orders", "42")));
        assert_eq!(split("/logs/orders/"), Some(("orders", "")));
        assert_eq!(split("/logs/orders/consumers/a"), Some(("orders", "consumers/a")));
        assert_eq!(split("/logs/orders"), Some(("orders", "")));
        assert_eq!(split("/log/orders/1"), None);
    }

    #[test]
    fn the_query_stays_with_the_stripped_path() {
        let uri: Uri = "/logs/orders/?from=3&limit=2".parse().unwrap();
        assert_eq!(strip(&uri, "/").unwrap().to_string(), "/?from=3&limit=2");
        let uri: Uri = "/logs/orders/7".parse().unwrap();
        assert_eq!(strip(&uri, "/7").unwrap().to_string(), "/7");
    }
}
