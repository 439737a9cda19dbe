//! The HTTP guard: works out the action a route needs, identifies the
//! caller (bearer token, else client certificate), and checks the ACL.
//!
//! Routes and actions: `POST /` needs `produce`; reads, tailing, `/status`
//! and `/replication/frames` need `consume`; `/metrics`, `/healthz` and
//! `/readyz` are open unless `--protect-metrics`, then they need `admin`.

use std::sync::Arc;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::acl::{Acl, Action};
use super::tls::PeerInfo;
use super::tokens::Tokens;
use crate::api::{ApiError, route_template};

/// Why a caller is not identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    NoCredentials,
    BadToken,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::NoCredentials => "no_credentials",
            AuthFailure::BadToken => "bad_token",
        }
    }
}

/// The authenticated caller, for handlers that care.
#[derive(Clone, Debug)]
pub struct Principal(pub String);

#[derive(Debug)]
pub struct Guard {
    tokens: Option<Tokens>,
    acl: Option<Acl>,
    mtls: bool,
    protect_metrics: bool,
}

impl Guard {
    pub fn new(tokens: Option<Tokens>, acl: Option<Acl>, mtls: bool, protect_metrics: bool) -> Self {
        Guard {
            tokens,
            acl,
            mtls,
            protect_metrics,
        }
    }

    fn required_action(&self, method: &Method, route: &str) -> Option<Action> {
        match (method, route) {
            (&Method::POST, "/") => Some(Action::Produce),
            (_, "/metrics" | "/healthz" | "/readyz") => self.protect_metrics.then_some(Action::Admin),
            _ => Some(Action::Consume),
        }
    }

    /// The caller's principal: a bearer token wins over a client certificate.
    fn identify(&self, request: &Request) -> Result<Option<String>, AuthFailure> {
        let bearer = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        if let (Some(token), Some(tokens)) = (bearer, &self.tokens) {
            return tokens
                .principal(token.trim())
                .map(|p| Some(p.to_string()))
                .ok_or(AuthFailure::BadToken);
        }
        let client_cn = request
            .extensions()
            .get::<ConnectInfo<PeerInfo>>()
            .and_then(|info| info.0.client_cn.clone());
        match client_cn {
            Some(cn) if self.mtls => Ok(Some(cn)),
            _ if self.tokens.is_some() || self.mtls => Err(AuthFailure::NoCredentials),
            _ => Ok(None),
        }
    }

    fn check(&self, request: &Request) -> Result<Option<String>, ApiError> {
        let route = route_template(request.uri().path());
        let Some(action) = self.required_action(request.method(), route) else {
            return Ok(None);
        };
        let principal = self
            .identify(request)
            .map_err(|reason| ApiError::Unauthorized { reason })?;
        if let (Some(acl), Some(who)) = (&self.acl, &principal)
            && !acl.allows(who, action)
        {
            return Err(ApiError::Forbidden {
                principal: who.clone(),
                action: action.as_str(),
            });
        }
        Ok(principal)
    }
}

pub async fn authorize(State(guard): State<Arc<Guard>>, mut request: Request, next: Next) -> Response {
    match guard.check(&request) {
        Ok(principal) => {
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
            metrics::counter!("distlog_auth_failures_total", "reason" => reason).increment(1);
            error.into_response()
        }
    }
}
