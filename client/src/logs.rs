//! Named logs (issue 22): `PUT /logs/{name}` creates one, `GET /logs` and
//! `GET /logs/{name}` describe them, `PATCH` changes retention, `DELETE`
//! removes one. Asked of the leader, as membership changes are.

use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::admin::{json_request, parse};
use crate::client::{Client, Request};
use crate::error::{Error, Result};

/// A log's settings; `None` is the node's flag (`--retention-bytes`, ...).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogSettings {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub max_record_bytes: Option<u64>,
}

/// `GET /logs/{name}`: a log's settings, bounds and size.
#[derive(Clone, Debug, Deserialize)]
pub struct LogInfo {
    pub name: String,
    pub settings: LogSettings,
    pub lowest_offset: u64,
    pub next_offset: u64,
    pub size_bytes: u64,
    pub segments: u64,
    pub leader: Option<String>,
    /// The whole answer, fields this client does not know included.
    #[serde(skip)]
    pub raw: serde_json::Value,
}

#[derive(Deserialize)]
struct LogList {
    logs: Vec<serde_json::Value>,
}

impl Client {
    /// Creates `name` with `settings`; the same settings again find it
    /// (`Ok` too), others are `409 log_exists`.
    pub async fn create_log(&self, name: &str, settings: &LogSettings) -> Result<LogInfo> {
        let body = serde_json::to_value(settings).unwrap_or_default();
        let request = json_request(Method::PUT, &format!("/logs/{name}"), &body);
        // Creating with the same settings twice is harmless: retry anything.
        let answer = self.inner.to_leader(&request, Error::is_retryable).await?;
        info(&answer.url, &answer.body)
    }

    /// Every named log, by name.
    pub async fn logs(&self) -> Result<Vec<LogInfo>> {
        let answer = self
            .inner
            .to_leader(&Request::get("/logs"), Error::is_retryable)
            .await?;
        let list: LogList = parse(&answer.url, &answer.body)?;
        list.logs
            .into_iter()
            .map(|raw| {
                let mut log: LogInfo = serde_json::from_value(raw.clone()).map_err(|e| Error::Protocol {
                    url: answer.url.clone(),
                    reason: e.to_string(),
                })?;
                log.raw = raw;
                Ok(log)
            })
            .collect()
    }

    /// `name`'s settings, bounds and size.
    pub async fn describe_log(&self, name: &str) -> Result<LogInfo> {
        let request = Request::get(format!("/logs/{name}"));
        let answer = self.inner.to_leader(&request, Error::is_retryable).await?;
        info(&answer.url, &answer.body)
    }

    /// Deletes `name` with everything it holds.
    pub async fn delete_log(&self, name: &str) -> Result<()> {
        let mut request = Request::get(format!("/logs/{name}"));
        request.method = Method::DELETE;
        self.inner
            .to_leader(&request, |error| error.is_retryable() && error.has_no_side_effects())
            .await?;
        Ok(())
    }
}

fn info(url: &str, body: &[u8]) -> Result<LogInfo> {
    let mut log: LogInfo = parse(url, body)?;
    log.raw = parse(url, body)?;
    Ok(log)
}
