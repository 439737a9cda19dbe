//! The cluster's membership (`GET /cluster`, `POST /cluster/join`,
//! `DELETE /cluster/members/{id}`, `POST /cluster/leader`), asked of the
//! leader, and consumer positions (`PUT`/`GET /consumers/{name}`,
//! issue 21): a named consumer's next offset, kept by the log.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use serde::Deserialize;

use crate::client::{Client, Request};
use crate::error::{Error, Result};

/// `GET /cluster`: a member's view of the cluster.
#[derive(Clone, Debug, Deserialize)]
pub struct ClusterInfo {
    pub node_id: u64,
    pub url: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub leader_url: Option<String>,
    pub commit_offset: Option<u64>,
    pub members: Vec<MemberInfo>,
    /// The whole answer, fields this client does not know included.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

/// One member as the leader sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub url: String,
    pub voter: bool,
    /// The last offset the leader knows the member holds.
    pub match_offset: Option<u64>,
    /// Whether the leader heard from it within its lease.
    pub reachable: Option<bool>,
    pub problem: Option<String>,
}

/// `GET /consumers/{name}`: a consumer's stored position.
#[derive(Clone, Debug, Deserialize)]
pub struct Position {
    /// The next offset the consumer reads.
    pub offset: u64,
    pub lag_records: Option<u64>,
    pub lag_ms: Option<u64>,
    pub updated_ms: Option<u64>,
}

/// Membership changes wait for a catch-up or an election.
const ADMIN_WAIT: Duration = Duration::from_secs(60);

impl Client {
    /// The cluster as the leader sees it (match offsets and reachability
    /// are the leader's to know).
    pub async fn cluster(&self) -> Result<ClusterInfo> {
        let answer = self
            .inner
            .to_leader(&Request::get("/cluster"), Error::is_retryable)
            .await?;
        let mut info: ClusterInfo = parse(&answer.url, &answer.body)?;
        info.raw = parse(&answer.url, &answer.body)?;
        Ok(info)
    }

    /// Adds the node at `url` (learner first, voter once caught up).
    pub async fn add_member(&self, url: &str) -> Result<ClusterInfo> {
        self.admin(Method::POST, "/cluster/join", serde_json::json!({ "url": url }))
            .await
    }

    /// Removes the member `id`.
    pub async fn remove_member(&self, id: u64) -> Result<ClusterInfo> {
        self.admin(
            Method::DELETE,
            &format!("/cluster/members/{id}"),
            serde_json::Value::Null,
        )
        .await
    }

    /// Hands leadership to the voter `id`.
    pub async fn transfer_leader(&self, id: u64) -> Result<ClusterInfo> {
        let info = self
            .admin(Method::POST, "/cluster/leader", serde_json::json!({ "id": id }))
            .await?;
        self.inner.topology().forget_leader();
        Ok(info)
    }

    /// Stores `name`'s next offset; with `expected`, only if the stored
    /// one is that (else `412 position_mismatch`).
    pub async fn commit(&self, name: &str, offset: u64, expected: Option<u64>) -> Result<()> {
        let mut body = serde_json::json!({ "offset": offset });
        if let Some(expected) = expected {
            body["expected"] = expected.into();
        }
        let request = json_request(Method::PUT, &self.inner.log_path(&format!("/consumers/{name}")), &body);
        // Storing the same position twice is harmless: retry anything.
        self.inner.to_leader(&request, Error::is_retryable).await?;
        Ok(())
    }

    /// `name`'s stored position, or `None` if it has none.
    pub async fn position(&self, name: &str) -> Result<Option<Position>> {
        let request = Request::get(self.inner.log_path(&format!("/consumers/{name}")));
        match self.inner.to_leader(&request, Error::is_retryable).await {
            Ok(answer) => parse(&answer.url, &answer.body).map(Some),
            Err(error) if error.status() == Some(404) && error.code() != Some("not_found") => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn admin(&self, method: Method, path: &str, body: serde_json::Value) -> Result<ClusterInfo> {
        let mut request = json_request(method, path, &body);
        request.extra_time = ADMIN_WAIT;
        let answer = match self
            .inner
            .to_leader(&request, |error| error.is_retryable() && error.has_no_side_effects())
            .await
        {
            // The leader serves membership changes on its peer port
            // (`--peer-listen`) and says where: asked there once (the 404
            // changed nothing).
            Err(error) if peer_port(&error).is_some() => {
                let peer_url = peer_port(&error).unwrap_or_default();
                self.inner.send(&peer_url, &request).await?
            }
            other => other?,
        };
        parse(&answer.url, &answer.body)
    }
}

/// The peer URL a `404 peer_port_only` names: membership changes go there.
fn peer_port(error: &Error) -> Option<String> {
    match error {
        Error::Server {
            status: 404,
            code,
            body,
            ..
        } if code == "peer_port_only" => body.get("peer_url")?.as_str().map(str::to_string),
        Error::GaveUp { last, .. } => peer_port(last),
        _ => None,
    }
}

pub(crate) fn json_request(method: Method, path: &str, body: &serde_json::Value) -> Request {
    let mut headers = HeaderMap::new();
    let body = (!body.is_null()).then(|| {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        Bytes::from(body.to_string())
    });
    Request {
        method,
        path: path.to_string(),
        headers,
        body,
        extra_time: Duration::ZERO,
    }
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(url: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::Protocol {
        url: url.to_string(),
        reason: format!("{e}"),
    })
}
