//! What can go wrong talking to distlog, sorted by what the caller can do
//! about it: [`Error::is_retryable`] (the same request may succeed later)
//! and [`Error::has_no_side_effects`] (the request provably changed
//! nothing, so sending it again cannot write twice) are separate questions.
//!
//! A server's error answer is JSON, `{"error": "...", "code": "...", ...}`;
//! [`Error::Server`] keeps its status, its `code` and the whole body.

use std::time::Duration;

use serde_json::Value;

/// Codes whose request a server refused before doing anything, though
/// the status is a 5xx (`removed`: a member the cluster removed serves
/// nothing).
const REFUSED_UNDONE: &[&str] = &[
    "no_leader",
    // A member still checking its log at start serves nothing yet.
    "starting",
    "too_many_connections",
    "disk_full",
    "shutting_down",
    "removed",
];

/// Codes worth sending again as they are, after a pause.
const TRANSIENT: &[&str] = &[
    "no_leader",
    "starting",
    // Another member serves it.
    "removed",
    "not_leader",
    "read_only_follower",
    "too_many_connections",
    "shutting_down",
    "outcome_unknown",
    "storage_unavailable",
    "raft_stopped",
    "timeout",
    "body_timeout",
    // The producer handle's pipeline: an earlier request of its own is
    // still on its way (issue 21).
    "producer_sequence_gap",
];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client's settings cannot work (a CA file that is not PEM, a
    /// seed that is not a URL). Fix the configuration.
    #[error("{0}")]
    Config(String),

    /// No connection could be made: the request was never sent.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },

    /// The request may have reached the server, but no answer came
    /// (a timeout, a connection reset): it may or may not have been done.
    #[error("no answer from {url} ({reason}): the outcome is unknown")]
    OutcomeUnknown { url: String, reason: String },

    /// The server answered with an error.
    #[error("{url} answered {status} {code}: {message}")]
    Server {
        url: String,
        status: u16,
        code: String,
        message: String,
        /// The whole JSON body (extra fields such as `next_offset`).
        body: Value,
        /// `Retry-After`, when the server gave one.
        retry_after: Option<Duration>,
    },

    /// The server answered something this client does not understand.
    #[error("{url} answered something unexpected: {reason}")]
    Protocol { url: String, reason: String },

    /// Retries went on until the deadline; `last` is the last failure.
    #[error("gave up after {attempts} attempts over {elapsed:?}: {last}")]
    GaveUp {
        attempts: u32,
        elapsed: Duration,
        last: Box<Error>,
        /// Whether any attempt may have done the request.
        maybe_done: bool,
    },

    /// A producer handle whose earlier request failed for good: what the
    /// log holds after its sequence is unknown, so it takes no more
    /// appends. Start a new producer (a higher epoch fences this one).
    #[error("producer {id} stopped after a failure: {reason}")]
    ProducerStopped { id: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same request may succeed if sent again later (the
    /// failure was of the moment, not of the request). For a write
    /// without a producer handle, check [`Error::has_no_side_effects`]
    /// too: a retryable error may still have written.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::OutcomeUnknown { .. } => true,
            Error::Server { status, code, .. } => {
                TRANSIENT.contains(&code.as_str()) || *status == 429 || *status == 408
            }
            Error::GaveUp { last, .. } => last.is_retryable(),
            Error::Config(_) | Error::Protocol { .. } | Error::ProducerStopped { .. } => false,
        }
    }

    /// Whether the request provably changed nothing on any server (it was
    /// never sent, or a server refused it before doing it), so sending it
    /// again cannot write a record twice.
    pub fn has_no_side_effects(&self) -> bool {
        match self {
            Error::Config(_) | Error::Unreachable { .. } => true,
            // A redirect (`307` to the leader) did nothing either.
            Error::Server { status, code, .. } => {
                (300..500).contains(status) || REFUSED_UNDONE.contains(&code.as_str())
            }
            Error::GaveUp { maybe_done, .. } => !maybe_done,
            Error::OutcomeUnknown { .. } | Error::Protocol { .. } | Error::ProducerStopped { .. } => false,
        }
    }

    /// The server's error code (`offset_not_found`, `no_leader`, ...), if
    /// a server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            Error::GaveUp { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The HTTP status, if a server answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Server { status, .. } => Some(*status),
            Error::GaveUp { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Sorts a transport failure: one that failed to connect was never
    /// sent; any other may have reached the server.
    pub(crate) fn transport(url: &str, error: &reqwest::Error) -> Error {
        let reason = describe(error);
        if error.is_connect() || error.is_builder() {
            Error::Unreachable {
                url: url.to_string(),
                reason,
            }
        } else {
            Error::OutcomeUnknown {
                url: url.to_string(),
                reason,
            }
        }
    }

    /// The server's refusal from an error answer's status and body.
    pub(crate) fn from_answer(url: &str, status: u16, body: &[u8], retry_after: Option<Duration>) -> Error {
        let body: Value =
            serde_json::from_slice(body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let code = body["code"].as_str().unwrap_or("unknown").to_string();
        let message = match body["error"].as_str() {
            Some(message) => message.to_string(),
            None => body.as_str().unwrap_or_default().chars().take(200).collect(),
        };
        Error::Server {
            url: url.to_string(),
            status,
            code,
            message,
            body,
            retry_after,
        }
    }

    /// The leader a `307 not_leader` names.
    pub(crate) fn named_leader(&self) -> Option<&str> {
        match self {
            Error::Server { body, .. } => body["leader"].as_str(),
            _ => None,
        }
    }

    /// When this error says to go and ask for the leader again.
    pub(crate) fn means_leader_moved(&self) -> bool {
        matches!(
            self.code(),
            Some("no_leader" | "not_leader" | "read_only_follower" | "removed" | "starting")
        ) || matches!(self, Error::Unreachable { .. } | Error::OutcomeUnknown { .. })
    }
}

/// reqwest's message with its causes, on one line.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: u16, code: &str) -> Error {
        Error::from_answer(
            "http://n",
            status,
            format!(r#"{{"error":"e","code":"{code}"}}"#).as_bytes(),
            None,
        )
    }

    /// A member whose start has not finished answers every route 503
    /// `starting`: it did nothing, and another member (or the same one
    /// soon) can take the request (a review finding: it was final).
    #[test]
    fn a_starting_member_did_nothing_and_is_worth_retrying() {
        let starting = server(503, "starting");
        assert!(starting.is_retryable(), "503 starting is not retryable");
        assert!(starting.has_no_side_effects(), "503 starting counts as maybe done");
        assert!(starting.means_leader_moved(), "503 starting keeps the leader cached");
    }

    #[test]
    fn a_refusal_before_doing_anything_has_no_side_effects() {
        assert!(server(503, "no_leader").has_no_side_effects());
        assert!(server(503, "removed").has_no_side_effects());
        assert!(server(503, "removed").is_retryable());
        assert!(server(503, "removed").means_leader_moved());
        assert!(server(503, "no_leader").is_retryable());
        assert!(server(400, "invalid_json").has_no_side_effects());
        assert!(!server(400, "invalid_json").is_retryable());
    }

    #[test]
    fn an_unknown_outcome_is_retryable_but_not_free_of_side_effects() {
        let unknown = server(503, "outcome_unknown");
        assert!(unknown.is_retryable());
        assert!(!unknown.has_no_side_effects());
        let silent = Error::OutcomeUnknown {
            url: "u".into(),
            reason: "timeout".into(),
        };
        assert!(silent.is_retryable() && !silent.has_no_side_effects());
    }

    #[test]
    fn a_body_that_is_not_json_still_makes_an_error() {
        let error = Error::from_answer("http://n", 502, b"bad gateway", None);
        assert_eq!(error.code(), Some("unknown"));
        assert!(error.to_string().contains("bad gateway"));
    }
}
