//! The API's handlers through `distlog::api::app` and `tower`'s `oneshot`:
//! no socket, no server, no connection layer. The contract of an answer
//! (status, code, fields, headers) is pinned here in microseconds; what
//! needs a real connection (timeouts, limits on the wire, TLS) is in the
//! files beside this one.

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use distlog::api::{AllowedOrigins, App, AppState, Limits, app};
use distlog::log::{Durability, Log, LogConfig};
use distlog::logs::Catalog;
use distlog::mode::{Consumers, Mode};
use distlog::replication::FollowerStatus;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use std::sync::Arc;
use tempfile::TempDir;
use tokio::sync::watch;
use tower::ServiceExt;

/// A leader's API over a fresh log. The shutdown sender is kept: once it is
/// dropped the API reads as shutting down.
struct Api {
    log: Log,
    mode: Mode,
    consumers: Consumers,
    shutdown: watch::Sender<bool>,
    _dir: TempDir,
}

impl Api {
    fn new() -> Api {
        Api::in_mode(Mode::Standalone(Default::default()))
    }

    fn in_mode(mode: Mode) -> Api {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            durability: Durability::Never,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config).unwrap();
        let (shutdown, _) = watch::channel(false);
        let consumers = Consumers::open(&mode, dir.path()).unwrap();
        Api {
            log,
            mode,
            consumers,
            shutdown,
            _dir: dir,
        }
    }

    fn app(&self) -> App {
        let state = AppState::new(
            self.log.clone(),
            Limits::default(),
            self.mode.clone(),
            self.consumers.clone(),
            self.shutdown.subscribe(),
            Catalog::unavailable("these tests serve the default log only"),
        );
        app(state, None, AllowedOrigins::default(), true)
    }

    /// One request, the whole answer: status, headers and the body as JSON.
    async fn send(&self, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
        answer(self.app(), request).await
    }

    /// A JSON append that arrives once the node has begun to stop (its
    /// state was made before the stop, as a running node's is).
    async fn post_json_while_stopping(&self, body: &'static str) -> (StatusCode, HeaderMap, Value) {
        let app = self.app();
        self.shutdown.send_replace(true);
        answer(app, json_post(body)).await
    }

    async fn post_json(&self, body: &'static str) -> (StatusCode, HeaderMap, Value) {
        self.send(json_post(body)).await
    }

    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Value) {
        self.send(Request::get(path).body(Body::empty()).unwrap()).await
    }
}

fn json_post(body: &'static str) -> Request<Body> {
    Request::post("/")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .unwrap()
}

/// Sends `request` to `app`; the whole answer.
async fn answer(app: App, request: Request<Body>) -> (StatusCode, HeaderMap, Value) {
    let response = app.oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, headers, body)
}

/// A replica never takes writes, stopping or not: its writers are sent to
/// its leader before anything else is looked at, as they were when the
/// mode was a role in the API state.
#[tokio::test]
async fn a_stopping_replica_still_sends_writers_to_its_leader() {
    let api = Api::in_mode(Mode::Replica(Arc::new(FollowerStatus::new("http://leader:1".into()))));
    let (status, headers, body) = api.post_json_while_stopping(r#"{"n":1}"#).await;
    assert_eq!(status, StatusCode::TEMPORARY_REDIRECT, "{body}");
    assert_eq!(body["code"], "read_only_follower", "{body}");
    assert_eq!(headers[header::LOCATION], "http://leader:1/");
}

#[tokio::test]
async fn a_stopping_standalone_node_refuses_appends_with_503() {
    let api = Api::new();
    let (status, _, body) = api.post_json_while_stopping(r#"{"n":1}"#).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "shutting_down", "{body}");
}

#[tokio::test]
async fn an_append_answers_201_with_its_offset_and_location() {
    let api = Api::new();
    for offset in 0..3u64 {
        let (status, headers, body) = api.post_json(r#"{"n":1}"#).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(body, json!({ "offset": offset }));
        assert_eq!(headers[header::LOCATION], format!("/{offset}"));
    }
    let (status, _, record) = api.get("/2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&record["offset"], &record["value"]), (&json!(2), &json!({"n": 1})));
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_invalid_json_and_appends_nothing() {
    let api = Api::new();
    let (status, _, error) = api.post_json(r#"{"a":"#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["code"], "invalid_json");
    assert_eq!(api.log.next_offset(), 0, "nothing of a bad body is appended");
}

#[tokio::test]
async fn a_read_past_the_end_is_404_offset_not_found_with_the_bounds() {
    let api = Api::new();
    for _ in 0..3 {
        assert_eq!(api.post_json("1").await.0, StatusCode::CREATED);
    }
    let (status, _, error) = api.get("/7").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["code"], "offset_not_found");
    assert_eq!(
        (&error["offset"], &error["lowest_offset"], &error["next_offset"]),
        (&json!(7), &json!(0), &json!(3))
    );
}

#[tokio::test]
async fn an_unknown_route_and_a_wrong_method_are_json_errors() {
    let api = Api::new();
    let (status, _, error) = api.get("/no/such/route").await;
    assert_eq!((status, &error["code"]), (StatusCode::NOT_FOUND, &json!("not_found")));
    let delete = Request::delete("/status").body(Body::empty()).unwrap();
    let (status, _, error) = api.send(delete).await;
    assert_eq!(
        (status, &error["code"]),
        (StatusCode::METHOD_NOT_ALLOWED, &json!("method_not_allowed"))
    );
}
