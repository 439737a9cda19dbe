//! Who a caller is and what they may do, given what they presented: a
//! bearer token, a client certificate's common name, or nothing. It owns
//! no wire format: the HTTP layer (`api::guard`) reads those from the
//! request and decides which action a route needs.

use super::acl::{Acl, Action};
use super::tokens::Tokens;

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

/// The loaded tokens and ACL, and which kinds of identity the server takes.
#[derive(Debug)]
pub struct Policy {
    tokens: Option<Tokens>,
    acl: Option<Acl>,
    mtls: bool,
    protect_metrics: bool,
}

impl Policy {
    pub fn new(tokens: Option<Tokens>, acl: Option<Acl>, mtls: bool, protect_metrics: bool) -> Self {
        Policy {
            tokens,
            acl,
            mtls,
            protect_metrics,
        }
    }

    /// Whether metrics and probes need `admin` (`--protect-metrics`).
    pub fn protects_metrics(&self) -> bool {
        self.protect_metrics
    }

    /// The caller's principal: a bearer token wins over a client
    /// certificate. `Ok(None)` means nothing identifies callers here.
    pub fn identify(&self, bearer: Option<&str>, client_cn: Option<&str>) -> Result<Option<String>, AuthFailure> {
        if let (Some(token), Some(tokens)) = (bearer, &self.tokens) {
            return tokens
                .principal(token.trim())
                .map(|p| Some(p.to_string()))
                .ok_or(AuthFailure::BadToken);
        }
        match client_cn {
            Some(cn) if self.mtls => Ok(Some(cn.to_string())),
            _ if self.tokens.is_some() || self.mtls => Err(AuthFailure::NoCredentials),
            _ => Ok(None),
        }
    }

    /// Whether `principal` may do `action` on `log` (`None`: no log or all
    /// of them). Without an ACL every authenticated principal may do
    /// everything.
    pub fn allows(&self, principal: &str, action: Action, log: Option<&str>) -> bool {
        self.acl.as_ref().is_none_or(|acl| acl.allows(principal, action, log))
    }

    /// Whether `caller` may name the client a forwarded write acts for: a
    /// peer the ACL grants `cluster` by name, not through `admin` or `*`.
    /// Without an ACL every principal may do everything, so any caller.
    pub fn vouches_for_clients(&self, caller: &str) -> bool {
        self.acl
            .as_ref()
            .is_none_or(|acl| acl.grants_by_name(caller, Action::Cluster))
    }

    /// Whether the ACL grants `principal` `admin` (by name or through `*`);
    /// `false` without an ACL, where no principal stands above another.
    pub fn grants_admin(&self, principal: &str) -> bool {
        self.acl
            .as_ref()
            .is_some_and(|acl| acl.allows(principal, Action::Admin, None))
    }
}
