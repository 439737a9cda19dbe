//! The HTTP guard: works out the action a route needs, reads the caller's
//! credentials from the request (`Authorization: Bearer <token>`, else the
//! client certificate of the TLS connection) and asks `auth::Policy`.
//!
//! Routes and actions: `POST /` needs `produce`; reads, tailing, `/status`
//! and `/replication/frames` need `consume`; `/metrics`, `/healthz` and
//! `/readyz` are open unless `--protect-metrics`, then they need `admin`.
//! A cluster's peer RPCs (`/raft/*`) and membership changes (`POST` and
//! `DELETE` under `/cluster/`) need `cluster`; `GET /cluster` needs
//! `consume`. Consumer positions (`/consumers`, `/consumers/{name}`, every
//! method) need `consume`: a consumer keeps its own place.
//! A named log's routes (`/logs/{name}/...`) need what the default log's
//! do, scoped to that log; creating, changing and deleting a log
//! (`PUT`/`PATCH`/`DELETE /logs/{name}`) need `manage` on it; `GET /logs`
//! needs an unscoped `consume`. A scoped grant (`produce:orders`) covers
//! only the logs it names; the default log's name there is `default`.
//! A write a follower forwarded for a client (`forward`: `POST /`,
//! `PUT`/`DELETE /consumers/{name}`) is authorised as that client, named in
//! `x-distlog-forwarded-for`, when a peer sent it: a caller the ACL grants
//! `cluster` by name (not through `admin` or `*`; with no ACL, any caller).
//! A peer never acts for a principal the ACL grants `admin` (`403`: an
//! admin writes to the leader itself). From anyone else, and on any other
//! route, that header and `x-distlog-deadline-ms` are dropped before the
//! handler sees them: the caller acts for itself, on its own time.
//! A refused caller gets the JSON error of `ApiError::Unauthorized` (401,
//! with `WWW-Authenticate: Bearer`) or `ApiError::Forbidden` (403).

use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{route_template, routes};
use crate::auth::{Action, PeerInfo, Policy, Principal};

fn required_action(policy: &Policy, method: &Method, route: &str) -> Option<Action> {
    match (method, route) {
        (&Method::POST, routes::ROOT | routes::NAMED_ROOT) => Some(Action::Produce),
        (&Method::PUT | &Method::PATCH | &Method::DELETE, routes::LOG) => Some(Action::Manage),
        (
            _,
            routes::RAFT_APPEND
            | routes::RAFT_VOTE
            | routes::RAFT_PRE_VOTE
            | routes::RAFT_SNAPSHOT
            | routes::RAFT_TRANSFER
            | routes::RAFT_HEARTBEATS
            | routes::RAFT_QUIET
            | routes::RAFT_GROUP_APPEND
            | routes::RAFT_GROUP_VOTE
            | routes::RAFT_GROUP_PRE_VOTE
            | routes::RAFT_GROUP_SNAPSHOT
            | routes::RAFT_GROUP_TRANSFER
            | routes::RAFT_GROUP_MEMBERSHIP
            | routes::RAFT_OTHER,
        )
        | (&Method::POST | &Method::DELETE, routes::CLUSTER_JOIN | routes::CLUSTER_LEADER | routes::CLUSTER_MEMBER) => {
            Some(Action::Cluster)
        }
        (_, routes::CONSUMERS | routes::CONSUMER) => Some(Action::Consume),
        (_, routes::METRICS | routes::HEALTHZ | routes::READYZ) => policy.protects_metrics().then_some(Action::Admin),
        _ => Some(Action::Consume),
    }
}

fn bearer_token(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
}

fn client_common_name(request: &Request) -> Option<&str> {
    request
        .extensions()
        .get::<ConnectInfo<PeerInfo>>()
        .and_then(|info| info.0.client_cn.as_deref())
}

/// The principal a request acts for (`None`: none is identified), and
/// whether a peer vouches for the forwarded headers it carries.
fn check(policy: &Policy, request: &Request) -> Result<(Option<String>, bool), ApiError> {
    let route = route_template(request.uri().path());
    let Some(action) = required_action(policy, request.method(), route) else {
        return Ok((None, false));
    };
    let caller = policy
        .identify(bearer_token(request), client_common_name(request))
        .map_err(|reason| ApiError::Unauthorized { reason })?;
    let vouched = caller
        .as_deref()
        .is_some_and(|caller| forwarded_route(request.method(), route) && policy.vouches_for_clients(caller));
    let principal = match caller {
        Some(caller) if vouched => Some(acting_for(policy, request.headers(), caller)?),
        caller => caller,
    };
    if let Some(who) = &principal
        && !policy.allows(who, action, super::log_of(request.uri().path()))
    {
        return Err(ApiError::Forbidden {
            principal: who.clone(),
            action: action.as_str(),
        });
    }
    Ok((principal, vouched))
}

/// The routes a follower forwards (`forward`).
fn forwarded_route(method: &Method, route: &str) -> bool {
    matches!(
        (method, route),
        (&Method::POST, routes::ROOT) | (&Method::PUT | &Method::DELETE, routes::CONSUMER)
    )
}

/// Who a forwarded write a peer sent acts for: the client it names, never
/// an admin; the peer itself when it names none.
fn acting_for(policy: &Policy, headers: &HeaderMap, caller: String) -> Result<String, ApiError> {
    let Some(client) = super::forward::forwarded_for(headers) else {
        return Ok(caller);
    };
    if policy.grants_admin(client) {
        return Err(ApiError::Forbidden {
            principal: client.to_string(),
            action: "be acted for by a forwarding peer (an admin writes to the leader itself)",
        });
    }
    Ok(client.to_string())
}

/// Drops the forwarded headers a peer does not vouch for: the caller acts
/// for itself, within its own time.
fn drop_forwarded(headers: &mut HeaderMap) {
    headers.remove(super::forward::FORWARDED_FOR);
    headers.remove(super::forward::DEADLINE);
}

pub async fn authorize(State(policy): State<Arc<Policy>>, mut request: Request, next: Next) -> Response {
    match check(&policy, &request) {
        Ok((principal, vouched)) => {
            if !vouched {
                drop_forwarded(request.headers_mut());
            }
            if let Some(principal) = principal {
                request.extensions_mut().insert(Principal(principal));
            }
            next.run(request).await
        }
        Err(error) => {
            let reason = match &error {
                ApiError::Unauthorized { reason } => reason.reason(),
                _ => "forbidden",
            };
            metrics::counter!(crate::auth::AUTH_FAILURES, "reason" => reason).increment(1);
            error.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route a peer calls needs `cluster`: a reader's token must not reach a Raft core
    /// (a route left off the list falls through to `consume`).
    #[test]
    fn every_peer_route_needs_the_cluster_action() {
        let policy = Policy::new(None, None, false, false);
        for path in [
            "/raft/append",
            "/raft/vote",
            "/raft/pre-vote",
            "/raft/snapshot",
            "/raft/transfer-leader",
            "/raft/heartbeats",
            "/raft/7/append",
            "/raft/7/vote",
            "/raft/7/pre-vote",
            "/raft/7/snapshot",
            "/raft/7/transfer-leader",
            "/raft/7/membership",
            "/raft/anything/else",
        ] {
            let route = route_template(path);
            assert_eq!(
                required_action(&policy, &Method::POST, route),
                Some(Action::Cluster),
                "{path} ({route})"
            );
        }
    }
}
