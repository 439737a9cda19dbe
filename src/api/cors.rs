//! Browsers: which web origins may write, and CORS for the allowed ones.
//!
//! A form-encoded body is taken as JSON (so that `curl -d` works), which
//! also makes a cross-origin `POST` a "simple" request that a browser sends
//! without asking first. So a state-changing request (any method but `GET`,
//! `HEAD` and `OPTIONS`) is refused with 403 `cross_origin` when it carries
//! an `Origin` that is not on the allow list (`--cors-origin`; `null` never
//! is), or, without an `Origin`, a `Sec-Fetch-Site` of `cross-site` or
//! `same-site` (a browser saying another site sent it; current browsers
//! send `Origin` on every `POST`, so this only covers older or odd ones).
//! An `Origin` naming the very host the request was sent to (its `Host`),
//! when that is an IP address or `localhost`, is this server's own page,
//! the web console, and passes (see `same_origin`).
//! Requests without either (curl, programs) are not browsers' and pass.
//! Reads stay open to any origin, but only allowed origins get the CORS
//! headers that let a page see the answer.
//!
//! For an allowed origin, preflights (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) are answered here, before the auth
//! guard (a preflight carries no credentials), and every other answer,
//! errors and event streams included, gets `Access-Control-Allow-Origin`
//! and `Access-Control-Expose-Headers`. No `Access-Control-Allow-Credentials`:
//! pages authenticate with `Authorization: Bearer`, not cookies or client
//! certificates. A plain `OPTIONS` gets 204 with `Allow`.
//!
//! Hand-written rather than tower-http's `CorsLayer`, which only decorates
//! answers: the refusal above needs the same `Origin` check on every write
//! anyway, and a `GET` without allowed origins costs two comparisons here.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use super::error::ApiError;
use super::{route_template, routes};

/// The web origins allowed to write and to read answers from a page, each
/// as a browser serializes it (`scheme://host[:port]`, lower case).
#[derive(Clone, Debug, Default)]
pub struct AllowedOrigins(Arc<[HeaderValue]>);

#[derive(Debug, thiserror::Error)]
#[error("{origin:?} is not an origin: {reason}")]
pub struct InvalidOrigin {
    pub origin: String,
    pub reason: &'static str,
}

impl AllowedOrigins {
    pub fn parse<S: AsRef<str>>(origins: impl IntoIterator<Item = S>) -> Result<Self, InvalidOrigin> {
        let parsed: Result<Vec<HeaderValue>, InvalidOrigin> =
            origins.into_iter().map(|o| parse_origin(o.as_ref())).collect();
        Ok(AllowedOrigins(parsed?.into()))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Browsers send the origin in lower case, as it is kept here, so a
    /// byte comparison is enough.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.0.iter().any(|allowed| allowed == origin)
    }
}

fn parse_origin(text: &str) -> Result<HeaderValue, InvalidOrigin> {
    let invalid = |reason| InvalidOrigin {
        origin: text.to_string(),
        reason,
    };
    if text == "null" || text == "*" {
        return Err(invalid(
            "name each allowed origin; \"null\" and \"*\" would let any page write",
        ));
    }
    let (scheme, authority) = text
        .split_once("://")
        .ok_or_else(|| invalid("an origin is scheme://host[:port]"))?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Err(invalid("an origin is scheme://host[:port]"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(invalid(
            "an origin is scheme://host[:port], without a path, a query or a trailing slash",
        ));
    }
    HeaderValue::from_str(&text.to_ascii_lowercase()).map_err(|_| invalid("not a valid header value"))
}

/// Wraps the router (see `api::app`).
#[derive(Clone, Debug)]
pub struct CrossOriginLayer(pub AllowedOrigins);

impl<S> Layer<S> for CrossOriginLayer {
    type Service = CrossOrigin<S>;

    fn layer(&self, inner: S) -> CrossOrigin<S> {
        CrossOrigin {
            inner,
            allowed: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CrossOrigin<S> {
    inner: S,
    allowed: AllowedOrigins,
}

impl<S> Service<Request> for CrossOrigin<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CrossOriginFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match screen(&self.allowed, &request) {
            Screened::Pass(cors) => CrossOriginFuture::Inner {
                inner: self.inner.call(request),
                cors,
            },
            Screened::Answer(response) => CrossOriginFuture::Answered {
                response: Some(response),
            },
        }
    }
}

/// What an answer gets: nothing without allowed origins; `Vary: Origin`
/// with them (the answer depends on the `Origin`); and the CORS headers
/// when the request came from one of them.
#[derive(Clone, Debug, Default)]
struct Decoration {
    configured: bool,
    origin: Option<HeaderValue>,
}

enum Screened {
    Pass(Decoration),
    Answer(Response),
}

fn screen(allowed: &AllowedOrigins, request: &Request) -> Screened {
    let method = request.method();
    let reads = method == Method::GET || method == Method::HEAD;
    if reads && allowed.is_empty() {
        return Screened::Pass(Decoration::default());
    }
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN);
    let cors = Decoration {
        configured: !allowed.is_empty(),
        origin: origin.filter(|o| allowed.allows(o)).cloned(),
    };
    if reads {
        return Screened::Pass(cors);
    }
    if method == Method::OPTIONS {
        let route = route_template(request.uri().path());
        let preflight = origin.is_some() && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        return match (preflight, &cors.origin) {
            (true, Some(allowed)) => Screened::Answer(preflight_answer(route, allowed)),
            (true, None) => Screened::Answer(refuse(origin, &cors)),
            // The router answers a JSON 404 for paths it does not serve.
            (false, _) if route == routes::UNMATCHED => Screened::Pass(cors),
            (false, _) => Screened::Answer(options_answer(route, &cors)),
        };
    }
    let refused = match origin {
        Some(origin) => cors.origin.is_none() && !same_origin(origin, request),
        None => sent_by_another_site(headers),
    };
    if refused {
        return Screened::Answer(refuse(origin, &cors));
    }
    Screened::Pass(cors)
}

/// Whether a page of this very server sent the request (the web console,
/// served under `/ui`): its `Origin`'s `host[:port]` is the `Host` the
/// request was sent to, and that host is an IP address or `localhost`.
/// A host name is not enough: a page on a name its owner points at this
/// node's address (DNS rebinding) would be "same-origin" too; a console
/// reached by name writes once its origin is given to `--cors-origin`.
/// The scheme is not compared: one host and port serve one scheme. Such a
/// request needs no CORS headers either.
fn same_origin(origin: &HeaderValue, request: &Request) -> bool {
    let Some((_, origin_authority)) = origin.to_str().ok().and_then(|o| o.split_once("://")) else {
        return false;
    };
    let host = match request.headers().get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => request.uri().authority().map(|a| a.as_str()),
    };
    host.is_some_and(|host| host.eq_ignore_ascii_case(origin_authority) && cannot_be_rebound(host))
}

/// An IP address (`127.0.0.1:8080`, `[::1]:8080`) or `localhost`, with or
/// without a port: no outside DNS answer can make another site's page
/// carry it as its origin.
fn cannot_be_rebound(authority: &str) -> bool {
    if let Some(bracketed) = authority.strip_prefix('[') {
        return bracketed
            .split_once(']')
            .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
    }
    let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
    host.parse::<std::net::Ipv4Addr>().is_ok() || host.eq_ignore_ascii_case("localhost")
}

fn sent_by_another_site(headers: &HeaderMap) -> bool {
    headers.get("sec-fetch-site").is_some_and(|site| {
        site.as_bytes().eq_ignore_ascii_case(b"cross-site") || site.as_bytes().eq_ignore_ascii_case(b"same-site")
    })
}

/// Long enough that a page does not ask before every write; Chromium caps
/// it at 7200 anyway.
const PREFLIGHT_MAX_AGE_SECONDS: &str = "3600";
/// What pages may send: a token, a body's type, an SSE resume point, a request
/// id, and the headers of idempotent producers and conditional appends.
const ALLOWED_HEADERS: &str = "authorization, content-type, expected-last-offset, last-event-id, producer-epoch, producer-id, producer-seq, x-request-id";
/// What pages may read beyond the CORS-safelisted headers.
const EXPOSED_HEADERS: &str = "location, x-request-id, www-authenticate, x-distlog-next-offset, x-distlog-lowest-offset, x-distlog-log-next-offset";
const PREFLIGHT_VARY: &str = "origin, access-control-request-method, access-control-request-headers";

fn methods(route: &str) -> HeaderValue {
    HeaderValue::from_static(match route {
        routes::ROOT | routes::NAMED_ROOT => "GET, HEAD, POST, OPTIONS",
        routes::LOG => "GET, HEAD, PUT, PATCH, DELETE, OPTIONS",
        routes::CLUSTER_JOIN
        | routes::CLUSTER_LEADER
        | routes::RAFT_APPEND
        | routes::RAFT_VOTE
        | routes::RAFT_PRE_VOTE
        | routes::RAFT_SNAPSHOT
        | routes::RAFT_TRANSFER
        | routes::RAFT_GROUP_APPEND
        | routes::RAFT_GROUP_VOTE
        | routes::RAFT_GROUP_PRE_VOTE
        | routes::RAFT_GROUP_SNAPSHOT
        | routes::RAFT_GROUP_TRANSFER => "POST, OPTIONS",
        routes::CLUSTER_MEMBER => "DELETE, OPTIONS",
        routes::CONSUMER | routes::NAMED_CONSUMER => "GET, HEAD, PUT, DELETE, OPTIONS",
        _ => "GET, HEAD, OPTIONS",
    })
}

fn preflight_answer(route: &str, origin: &HeaderValue) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods(route));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOWED_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(PREFLIGHT_MAX_AGE_SECONDS),
    );
    headers.insert(header::VARY, HeaderValue::from_static(PREFLIGHT_VARY));
    response
}

fn options_answer(route: &str, cors: &Decoration) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(header::ALLOW, methods(route));
    decorate(&mut response, cors);
    response
}

/// Long enough for any real origin; a hostile header is not echoed whole.
const MAX_ORIGIN_ECHO: usize = 200;

fn refuse(origin: Option<&HeaderValue>, cors: &Decoration) -> Response {
    let origin = origin.map(|o| {
        let text = String::from_utf8_lossy(o.as_bytes());
        text.chars().take(MAX_ORIGIN_ECHO).collect()
    });
    let mut response = ApiError::CrossOrigin { origin }.into_response();
    decorate(&mut response, cors);
    response
}

const EXPOSE_HEADERS: HeaderName = header::ACCESS_CONTROL_EXPOSE_HEADERS;

fn decorate(response: &mut Response, cors: &Decoration) {
    if !cors.configured {
        return;
    }
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = &cors.origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        headers.insert(EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    }
}

pin_project! {
    /// The router's answer, decorated once ready; or one given here.
    #[project = CrossOriginProjection]
    pub enum CrossOriginFuture<F> {
        Inner { #[pin] inner: F, cors: Decoration },
        Answered { response: Option<Response> },
    }
}

impl<F, E> Future for CrossOriginFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CrossOriginProjection::Inner { inner, cors } => {
                let mut response = std::task::ready!(inner.poll(cx))?;
                decorate(&mut response, cors);
                Poll::Ready(Ok(response))
            }
            CrossOriginProjection::Answered { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_addresses_and_localhost_count_as_this_servers_own_origin() {
        for host in [
            "127.0.0.1:8080",
            "10.0.0.7",
            "[::1]:8080",
            "[fe80::1]",
            "localhost:3000",
            "LOCALHOST",
        ] {
            assert!(cannot_be_rebound(host), "{host}");
        }
        for host in [
            "node1:8080",
            "evil.example",
            "127.0.0.1.evil.example:80",
            "[::1",
            "[evil]:80",
            "",
        ] {
            assert!(!cannot_be_rebound(host), "{host}");
        }
    }

    #[test]
    fn allow_lists_exactly_the_methods_each_route_serves() {
        assert_eq!(methods(routes::ROOT), "GET, HEAD, POST, OPTIONS");
        assert_eq!(methods(routes::RECORD), "GET, HEAD, OPTIONS");
        assert_eq!(methods(routes::CLUSTER), "GET, HEAD, OPTIONS");
        assert_eq!(methods(routes::CLUSTER_JOIN), "POST, OPTIONS");
        assert_eq!(methods(routes::CLUSTER_LEADER), "POST, OPTIONS");
        assert_eq!(methods(routes::CLUSTER_MEMBER), "DELETE, OPTIONS");
        assert_eq!(methods(routes::LOG), "GET, HEAD, PUT, PATCH, DELETE, OPTIONS");
        assert_eq!(methods(routes::NAMED_ROOT), "GET, HEAD, POST, OPTIONS");
        assert_eq!(methods(routes::NAMED_CONSUMER), "GET, HEAD, PUT, DELETE, OPTIONS");
        assert_eq!(methods(routes::RAFT_APPEND), "POST, OPTIONS");
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let allowed =
            AllowedOrigins::parse(["https://App.Example", "http://localhost:3000", "http://[::1]:8080"]).unwrap();
        assert!(allowed.allows(&HeaderValue::from_static("https://app.example")));
        assert!(allowed.allows(&HeaderValue::from_static("http://localhost:3000")));
        assert!(allowed.allows(&HeaderValue::from_static("http://[::1]:8080")));
        assert!(!allowed.allows(&HeaderValue::from_static("http://localhost:3001")));
        assert!(!allowed.allows(&HeaderValue::from_static("null")));
        for bad in [
            "null",
            "*",
            "app.example",
            "https://app.example/",
            "https://app.example/path",
            "https://app.example?x",
            "https://user@app.example",
            "https://app.example:port",
            "https://",
            "1http://app.example",
        ] {
            assert!(AllowedOrigins::parse([bad]).is_err(), "{bad} must be refused");
        }
        assert!(AllowedOrigins::parse(Vec::<String>::new()).unwrap().is_empty());
    }
}
