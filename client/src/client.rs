//! [`Client`]: finds the servers, sends writes to the leader and spreads
//! reads over the members, retrying what is safe to retry.
//!
//! Routing: a write goes to the leader the last `GET /cluster` named; a
//! `307`, a `503 no_leader`, a connection error or a timeout forgets it
//! and asks again (and every `refresh_every` in the background). Without
//! a producer handle a write is sent again only when the failure proves it
//! did nothing (never connected, `307`, `503 no_leader`). A read goes to
//! the next member round-robin, skipping members in back-off; any failure
//! moves it on to the next, as reads change nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::HeaderMap;

use crate::backoff::Backoff;
use crate::builder::ClientBuilder;
use crate::error::{Error, Result};
use crate::topology::{Topology, View, base};

#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry_for: Duration,
    pub refresh_every: Duration,
    pub member_backoff: Backoff,
    pub retry_backoff: Backoff,
}

/// A distlog client: cheap to clone (clones share the connections and
/// what is known of the cluster).
///
/// ```no_run
/// # async fn run() -> Result<(), distlog_client::Error> {
/// let client = distlog_client::Client::builder()
///     .seeds(["http://127.0.0.1:8080"])
///     .build()?;
/// let appended = client.append_json(&serde_json::json!({"event": "signup"})).await?;
/// let record = client.read(appended.first_offset).await?;
/// assert_eq!(record.json(), Some(&serde_json::json!({"event": "signup"})));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub http: reqwest::Client,
    seeds: Vec<String>,
    pub settings: Settings,
    topology: Mutex<Topology>,
    /// One discovery at a time; the others wait for its answer.
    discovering: tokio::sync::Mutex<()>,
    pub turn: AtomicUsize,
    /// The highest next offset any answer showed: offsets below it are
    /// committed, so a member that says they are not there yet lags.
    known_next: AtomicU64,
    /// Each server's URL parsed once: parsing it for every request was a
    /// twentieth of a busy client's time.
    parsed: Mutex<HashMap<String, reqwest::Url>>,
    /// The last full URL asked for, by server and path: a producer sends
    /// every append to the same one, and joining them cost as much again.
    last_url: Mutex<Option<(String, String, reqwest::Url)>>,
    /// `/logs/<name>` for a client of a named log (`ClientBuilder::log`),
    /// empty for the default log: the log's routes are under it.
    log_prefix: String,
}

/// A successful answer.
pub(crate) struct Answer {
    pub url: String,
    pub body: Bytes,
}

/// One HTTP request, kept so that it can be sent again.
#[derive(Clone)]
pub(crate) struct Request {
    pub method: Method,
    /// Path and query, starting with `/`.
    pub path: String,
    pub headers: HeaderMap,
    pub body: Option<Bytes>,
    /// Added to the request timeout (a long poll's wait).
    pub extra_time: Duration,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request {
            method: Method::GET,
            path: path.into(),
            headers: HeaderMap::new(),
            body: None,
            extra_time: Duration::ZERO,
        }
    }
}

impl Client {
    /// Starts the settings of a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    pub(crate) fn new(http: reqwest::Client, seeds: Vec<String>, settings: Settings, log_prefix: String) -> Client {
        let inner = Arc::new(Inner {
            http,
            seeds: seeds.iter().map(|s| base(s)).collect(),
            settings,
            topology: Mutex::new(Topology::new(settings.member_backoff)),
            discovering: tokio::sync::Mutex::new(()),
            turn: AtomicUsize::new(0),
            known_next: AtomicU64::new(0),
            parsed: Mutex::new(HashMap::new()),
            last_url: Mutex::new(None),
            log_prefix,
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(refresh_in_background(Arc::downgrade(&inner)));
        }
        Client { inner }
    }

    /// The members as last discovered, and the leader if one is known.
    pub async fn members(&self) -> Result<(Vec<String>, Option<String>)> {
        self.inner.known_topology().await?;
        let topology = self.inner.topology();
        Ok((topology.urls(), topology.leader().map(str::to_string)))
    }

    /// Asks the servers for the cluster now.
    pub async fn refresh(&self) -> Result<()> {
        self.inner.discover().await
    }
}

async fn refresh_in_background(inner: Weak<Inner>) {
    loop {
        let every = match inner.upgrade() {
            Some(inner) => inner.settings.refresh_every,
            None => return,
        };
        tokio::time::sleep(every).await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.topology().age().is_some_and(|age| age >= every) {
            // A failed refresh keeps the old view; calls ask again.
            let _ = inner.discover().await;
        }
    }
}

impl Inner {
    /// The path of the log's route `route` (`/`, `/42`, `/consumers/a`).
    pub fn log_path(&self, route: &str) -> String {
        format!("{}{route}", self.log_prefix)
    }

    pub fn topology(&self) -> MutexGuard<'_, Topology> {
        // The lock guards plain data and no code panics holding it.
        self.topology.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn note_next(&self, next: u64) {
        self.known_next.fetch_max(next, Ordering::Relaxed);
    }

    pub fn known_next(&self) -> u64 {
        self.known_next.load(Ordering::Relaxed)
    }

    async fn known_topology(&self) -> Result<()> {
        if self.topology().is_known() {
            return Ok(());
        }
        self.discover().await
    }

    /// Asks the known members, then the seeds, for the cluster; takes the
    /// first answer that names a leader, else the first answer.
    pub async fn discover(&self) -> Result<()> {
        let asked_at = Instant::now();
        let _one_at_a_time = self.discovering.lock().await;
        if self.topology().age().is_some_and(|age| age < asked_at.elapsed()) {
            return Ok(()); // another call refreshed while this one waited
        }
        let mut candidates = self.topology().urls();
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut leaderless = None;
        let mut last_error = None;
        for url in candidates {
            match self.ask_view(&url).await {
                Ok(view) if view.leader.is_some() => {
                    self.topology().apply(view);
                    return Ok(());
                }
                Ok(view) => {
                    leaderless.get_or_insert(view);
                }
                Err(error) => last_error = Some(error),
            }
        }
        match (leaderless, last_error) {
            (Some(view), _) => {
                self.topology().apply(view);
                Ok(())
            }
            (None, Some(error)) => Err(error),
            (None, None) => Err(Error::Config("no server to ask".into())),
        }
    }

    async fn ask_view(&self, url: &str) -> Result<View> {
        let unexpected = |reason: &str| Error::Protocol {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        match self.send(url, &Request::get("/cluster")).await {
            Ok(answer) => {
                let body: serde_json::Value =
                    serde_json::from_slice(&answer.body).map_err(|_| unexpected("/cluster is not JSON"))?;
                View::from_cluster(&body).ok_or_else(|| unexpected("/cluster names no members"))
            }
            Err(error) if error.code() == Some("not_a_cluster") => {
                let answer = self.send(url, &Request::get("/status")).await?;
                let body: serde_json::Value =
                    serde_json::from_slice(&answer.body).map_err(|_| unexpected("/status is not JSON"))?;
                View::from_status(url, &body).ok_or_else(|| unexpected("/status names no role"))
            }
            Err(error) => Err(error),
        }
    }

    /// `url` (a server's base URL) with `path` (path and query).
    fn url(&self, url: &str, path: &str) -> Result<reqwest::Url> {
        if let Ok(last) = self.last_url.lock()
            && let Some((base, last_path, full)) = last.as_ref()
            && base == url
            && last_path == path
        {
            return Ok(full.clone());
        }
        let full = self.join(url, path)?;
        if let Ok(mut last) = self.last_url.lock() {
            *last = Some((url.to_string(), path.to_string(), full.clone()));
        }
        Ok(full)
    }

    fn join(&self, url: &str, path: &str) -> Result<reqwest::Url> {
        let cached = self.parsed.lock().ok().and_then(|parsed| parsed.get(url).cloned());
        let mut full = match cached {
            Some(parsed) => parsed,
            None => {
                let parsed = reqwest::Url::parse(url).map_err(|e| Error::Protocol {
                    url: url.to_string(),
                    reason: format!("not a URL: {e}"),
                })?;
                if let Ok(mut cache) = self.parsed.lock() {
                    // Bounded, should answers name ever more servers.
                    if cache.len() >= 64 {
                        cache.clear();
                    }
                    cache.insert(url.to_string(), parsed.clone());
                }
                parsed
            }
        };
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let base_path = full.path().trim_end_matches('/').to_string();
        full.set_path(&format!("{base_path}{path}"));
        full.set_query(query);
        Ok(full)
    }

    /// Sends `request` to `url` once; any status but 2xx is an error.
    pub async fn send(&self, url: &str, request: &Request) -> Result<Answer> {
        let mut builder = self
            .http
            .request(request.method.clone(), self.url(url, &request.path)?)
            .headers(request.headers.clone())
            .timeout(self.settings.request_timeout + request.extra_time);
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let response = builder.send().await.map_err(|e| Error::transport(url, &e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.map_err(|e| Error::OutcomeUnknown {
            url: url.to_string(),
            reason: format!("the answer broke off: {e}"),
        })?;
        if (200..300).contains(&status) {
            Ok(Answer {
                url: url.to_string(),
                body,
            })
        } else {
            Err(Error::from_answer(url, status, &body, retry_after))
        }
    }

    /// The leader's URL, asking for it if none is known.
    pub async fn leader(&self) -> Result<String> {
        if let Some(leader) = self.topology().leader() {
            return Ok(leader.to_string());
        }
        self.discover().await?;
        // One lock at a time: the guard of a temporary lives to the end of
        // its statement.
        let leader = self.topology().leader().map(str::to_string);
        leader.ok_or_else(|| Error::Server {
            url: self.topology().urls().join(", "),
            status: 503,
            code: "no_leader".into(),
            message: "no server knows a leader".into(),
            body: serde_json::Value::Null,
            retry_after: None,
        })
    }

    /// Sends to the leader, sending again (to the leader asked for anew)
    /// while `retry(error)` says so and `retry_for` lasts.
    pub async fn to_leader(&self, request: &Request, retry: impl Fn(&Error) -> bool) -> Result<Answer> {
        let started = Instant::now();
        let mut attempts = 0;
        let mut maybe_done = false;
        loop {
            attempts += 1;
            let result = match self.leader().await {
                Ok(leader) => self.send(&leader, request).await.inspect_err(|error| {
                    if let Some(named) = error.named_leader() {
                        self.topology().follow_redirect(&base(named));
                    } else if error.means_leader_moved() {
                        self.topology().failed(&leader);
                    }
                }),
                Err(error) => Err(error),
            };
            let error = match result {
                Ok(answer) => return Ok(answer),
                Err(error) if retry(&error) => error,
                Err(error) => return Err(error),
            };
            maybe_done |= !error.has_no_side_effects();
            let pause = pause_after(&error, self.settings.retry_backoff.delay(attempts));
            if started.elapsed() + pause > self.settings.retry_for {
                return Err(Error::GaveUp {
                    attempts,
                    elapsed: started.elapsed(),
                    last: Box::new(error),
                    maybe_done,
                });
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Sends a read to the members in turn until one answers; `lags(error)`
    /// says that a member's refusal is only its lag (try the next).
    pub async fn to_any(&self, request: &Request, lags: impl Fn(&Error) -> bool) -> Result<Answer> {
        self.known_topology().await?;
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let order = self.topology().read_order(turn);
        let mut last = None;
        for url in order {
            match self.send(&url, request).await {
                Ok(answer) => {
                    self.topology().succeeded(&url);
                    return Ok(answer);
                }
                Err(error) if error.is_retryable() || matches!(error, Error::Protocol { .. }) => {
                    self.topology().failed(&url);
                    last = Some(error);
                }
                Err(error) if lags(&error) => last = Some(error),
                Err(error) => return Err(error),
            }
        }
        // Everyone failed: the view may be stale.
        if last.as_ref().is_some_and(Error::is_retryable) {
            let _ = self.discover().await;
        }
        Err(last.unwrap_or_else(|| Error::Config("no member to read from".into())))
    }
}

/// How long to wait before trying again: the server's `Retry-After`, else
/// the back-off.
fn pause_after(error: &Error, backoff: Duration) -> Duration {
    match error {
        Error::Server {
            retry_after: Some(after),
            ..
        } => (*after).min(Duration::from_secs(2)),
        _ => backoff,
    }
}
