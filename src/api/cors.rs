//! Browsers: which web origins may write, and CORS for the allowed ones.
//!
//! A form-encoded body is taken as JSON (so that `curl -d` works), which
//! also makes a cross-origin `POST` a "simple" request that a browser sends
//! without asking first. So every state-changing request (anything but
//! `GET`, `HEAD` and `OPTIONS`) that a browser marks as coming from another
//! origin is refused with 403 `cross_origin` unless its `Origin` is on the
//! allow list (`--cors-origin`).

use std::sync::Arc;

use axum::http::HeaderValue;

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
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    if !host_ok || !port_ok {
        return Err(invalid("an origin is scheme://host[:port], without a path, a query or a trailing slash"));
    }
    HeaderValue::from_str(&text.to_ascii_lowercase()).map_err(|_| invalid("not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        let allowed = AllowedOrigins::parse(["https://App.Example", "http://localhost:3000", "http://[::1]:8080"]).unwrap();
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
