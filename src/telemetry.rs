//! Traces (OpenTelemetry): spans exported over OTLP/HTTP (protobuf) when
//! `--otlp-endpoint` or `OTEL_EXPORTER_OTLP_ENDPOINT` names a collector, and
//! W3C `traceparent` propagation between nodes, so that one client write is
//! one trace across the leader and its followers.
//!
//! Off by default, and then free: no OpenTelemetry layer is installed and
//! every place that would make a span first asks `enabled()`, one relaxed
//! atomic load; nothing is allocated, formatted or parsed.
//!
//! When on, spans are `tracing` spans (at info, so a `RUST_LOG` that hides
//! info hides them too) that `tracing-opentelemetry` turns into
//! OpenTelemetry spans:
//! - `api::observe`: one server span per HTTP request (`{method} {route
//!   template}`, the status), child of the request's `traceparent` if any.
//!   Raft heartbeats (`/raft/append` without a `traceparent`) get none: at
//!   ten a second per follower they would drown the traces that matter.
//! - `api::append`: `append` around the wait for group commit (standalone);
//!   `cluster::Cluster::write`: `raft.commit` around the wait for the Raft
//!   commit.
//! - `cluster::network`: a client span per Raft RPC (append-entries only
//!   when it carries entries), `traceparent` sent with it; `api::cluster`:
//!   the handler's span under the request's.
//! - `replication::follower`: a client span per pull, `traceparent` sent
//!   with it; the leader's request span continues it.
//!
//! openraft sends append-entries from its own replication tasks, outside
//! the client's request, so the trace cannot follow the task. Instead the
//! write's span context rides on its entry (`UserRecord::trace`, in memory
//! only, never on disk or the wire); the leader's append-entries span takes
//! the first traced entry's context as parent and links the others.
//!
//! Resource: `service.name` `distlog`, `service.instance.id` the node's
//! advertised URL or listen address, and `distlog.node.id` the cluster node
//! id once the node knows it (`set_node_id`). The batch exporter honours the
//! `OTEL_BSP_*` variables (e.g. `OTEL_BSP_SCHEDULE_DELAY` in ms).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::Either;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);
static NODE_ID: OnceLock<u64> = OnceLock::new();

/// Whether spans are exported. Every span site checks this first.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The cluster node id, for the resource of the spans exported from now on.
pub fn set_node_id(id: u64) {
    let _ = NODE_ID.set(id);
}

/// The exporter, running; dropping it (or `shutdown`) exports what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Where spans go (`<endpoint>/v1/traces`).
    url: String,
}

impl Telemetry {
    /// Starts exporting to `endpoint`, the collector's base URL (spans go to
    /// `<endpoint>/v1/traces`, as with `OTEL_EXPORTER_OTLP_ENDPOINT`).
    /// `instance` names this node until it knows its cluster id. `None`: off.
    pub fn start(endpoint: Option<&str>, instance: &str) -> anyhow::Result<Option<Telemetry>> {
        let Some(endpoint) = endpoint.map(str::trim).filter(|e| !e.is_empty()) else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            anyhow::bail!("invalid --otlp-endpoint {endpoint:?}: must be an http:// or https:// URL");
        }
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url.clone())
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| anyhow::anyhow!("invalid --otlp-endpoint {endpoint:?}: {e}"))?;
        let exporter = OwnRuntime {
            inner: Mutex::new(exporter),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .thread_name("distlog-otlp")
                .build()?,
            resource: None,
            node_applied: AtomicBool::new(false),
            failures: Mutex::new(Failures::default()),
        };
        let resource = Resource::builder()
            .with_service_name("distlog")
            .with_attribute(KeyValue::new("service.instance.id", instance.to_string()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(BatchSpanProcessor::builder(exporter).build())
            .with_resource(resource)
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Some(Telemetry { provider, url }))
    }

    /// Where spans are exported, for the start-up log line.
    pub fn traces_url(&self) -> &str {
        &self.url
    }

    /// The `tracing` layer that turns spans into OpenTelemetry spans. It
    /// sees what the log filter lets through (the binary's subscriber
    /// cannot take per-layer filters): our spans, and openraft's few at
    /// info (membership changes, snapshots).
    pub fn layer<S>(&self) -> impl tracing_subscriber::Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("distlog"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_target(false)
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.provider.shutdown() {
            eprintln!("distlog: exporting the last spans failed: {e}");
        }
    }
}

/// The OTLP exporter on a runtime of its own: the batch processor exports
/// from its own thread, where the async HTTP client finds no runtime, and
/// spans are then never sent from the server's runtime. Also sets the
/// cluster node id into the resource once it is known.
#[derive(Debug)]
struct OwnRuntime<E> {
    inner: Mutex<E>,
    runtime: tokio::runtime::Runtime,
    resource: Option<Resource>,
    node_applied: AtomicBool,
    failures: Mutex<Failures>,
}

/// Exports the collector refused or never answered, warned about at most
/// once a `WARN_EVERY`, with how many failed since the last warning.
#[derive(Debug, Default)]
struct Failures {
    since_warned: u64,
    warned_at: Option<std::time::Instant>,
    failing: bool,
}

const WARN_EVERY: Duration = Duration::from_secs(60);

impl Failures {
    fn note(&mut self, result: &OTelSdkResult) {
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                tracing::info!("the trace collector accepts spans again");
            }
            Ok(()) => {}
            Err(e) => {
                self.failing = true;
                self.since_warned += 1;
                if self.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        error = %e,
                        failed_exports = self.since_warned,
                        "the trace collector refused spans (they are dropped); warned again in a minute at most"
                    );
                    self.warned_at = Some(std::time::Instant::now());
                    self.since_warned = 0;
                }
            }
        }
    }
}

impl<E: SpanExporter> SpanExporter for OwnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !self.node_applied.load(Ordering::Relaxed)
            && let (Some(id), Some(base)) = (NODE_ID.get(), &self.resource)
        {
            let resource = Resource::builder_empty()
                .with_attributes(base.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
                .with_attribute(KeyValue::new("distlog.node.id", i64::try_from(*id).unwrap_or(i64::MAX)))
                .build();
            inner.set_resource(&resource);
            self.node_applied.store(true, Ordering::Relaxed);
        }
        let result = self.runtime.block_on(inner.export(batch));
        self.failures.lock().unwrap_or_else(|p| p.into_inner()).note(&result);
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.get_mut().unwrap_or_else(|p| p.into_inner()).force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.resource = Some(resource.clone());
        self.inner
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .set_resource(resource);
    }
}

/// A span context carried with a Raft entry from the write that made it
/// to the append-entries that replicates it (see the module doc).
#[derive(Clone, Debug)]
pub struct EntryTrace(Box<SpanContext>);

impl EntryTrace {
    /// The context of `span`, if it is being exported.
    pub fn of(span: &Span) -> Option<EntryTrace> {
        let context = span.context();
        let span_context = context.span().span_context().clone();
        span_context.is_valid().then(|| EntryTrace(Box::new(span_context)))
    }
}

/// `make()` if traces are on, else the disabled span.
#[inline]
pub fn span(make: impl FnOnce() -> Span) -> Span {
    if enabled() { make() } else { Span::none() }
}

/// Makes `span` a child of `traces[0]` and links it to the others (at most
/// 32): a span that sends the entries of several traced writes.
pub fn continue_entries<'a>(span: &Span, mut traces: impl Iterator<Item = &'a EntryTrace>) {
    if span.is_none() {
        return;
    }
    if let Some(first) = traces.next() {
        let _ = span.set_parent(Context::new().with_remote_span_context((*first.0).clone()));
    }
    for other in traces.take(32) {
        span.add_link((*other.0).clone());
    }
}

/// `future` inside `span` (entered at every poll) if the span is on; else
/// `future` itself, wrapped in nothing but an enum.
pub fn in_span<F: Future>(span: Span, future: F) -> Either<F, tracing::instrument::Instrumented<F>> {
    use tracing::Instrument;
    if span.is_none() {
        Either::Left(future)
    } else {
        Either::Right(future.instrument(span))
    }
}

/// The W3C propagator (`traceparent`, `tracestate`).
fn propagator() -> &'static TraceContextPropagator {
    static PROPAGATOR: OnceLock<TraceContextPropagator> = OnceLock::new();
    PROPAGATOR.get_or_init(TraceContextPropagator::new)
}

struct HeaderInjector<'a>(&'a mut axum::http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(key.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a axum::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// `request` with the `traceparent` of `span`, if the span is on.
pub fn propagate(request: reqwest::RequestBuilder, span: &Span) -> reqwest::RequestBuilder {
    if span.is_none() {
        return request;
    }
    let mut headers = axum::http::HeaderMap::new();
    propagator().inject_context(&span.context(), &mut HeaderInjector(&mut headers));
    request.headers(headers)
}

/// Whether a request to a route may start a trace of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Starts {
    Yes,
    /// It only continues the caller's trace: Raft's append-entries, most
    /// of which are heartbeats, several a second to every peer.
    No,
}

/// The W3C `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";

/// Makes `span` a child of the trace context in `headers`, if any; whether
/// there was one.
pub fn continue_from(span: &Span, headers: &axum::http::HeaderMap) -> bool {
    if span.is_none() || !headers.contains_key(TRACEPARENT) {
        return false;
    }
    let context = propagator().extract(&HeaderExtractor(headers));
    if !context.span().span_context().is_valid() {
        return false;
    }
    let _ = span.set_parent(context);
    true
}

/// The server span of one HTTP request (`api::observe`), or the disabled
/// span when traces are off, or when the route only continues traces
/// (`Starts::No`) and the request brings none.
pub fn http_span(method: &'static str, route: &'static str, headers: &axum::http::HeaderMap, starts: Starts) -> Span {
    if !enabled() || (starts == Starts::No && !headers.contains_key(TRACEPARENT)) {
        return Span::none();
    }
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    continue_from(&span, headers);
    span
}

/// Records the answer's status on a request's span.
/// Sends `request` to a peer inside `span`: the `traceparent` goes along,
/// and the span records the answer's status or the error.
pub async fn send_traced(request: reqwest::RequestBuilder, span: &Span) -> reqwest::Result<reqwest::Response> {
    let request = propagate(request, span);
    let response = in_span(span.clone(), request.send()).await;
    match &response {
        Ok(answer) => record_status(span, answer.status().as_u16()),
        Err(e) => record_error(span, e),
    }
    response
}

pub fn record_status(span: &Span, status: u16) {
    if span.is_none() {
        return;
    }
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "error");
    }
}

/// Marks a client span failed (no answer).
pub fn record_error(span: &Span, error: &dyn std::fmt::Display) {
    if span.is_none() {
        return;
    }
    span.record("otel.status_code", "error");
    span.record("error.message", tracing::field::display(error));
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceId;
    use tracing_subscriber::layer::SubscriberExt;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn a_refusing_collector_is_warned_about_once_a_minute_with_a_count() {
        let mut failures = Failures::default();
        let refused: OTelSdkResult = Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure("503".into()));
        failures.note(&refused);
        let first = failures.warned_at.expect("the first refusal is warned about");
        assert_eq!(failures.since_warned, 0);
        failures.note(&refused);
        failures.note(&refused);
        assert_eq!(failures.warned_at, Some(first), "not again within the minute");
        assert_eq!(failures.since_warned, 2, "counted for the next warning");
        failures.note(&Ok(()));
        assert!(!failures.failing);
    }
    const PARENT: &str = "00f067aa0ba902b7";

    fn trace_id(span: &Span) -> TraceId {
        span.context().span().span_context().trace_id()
    }

    /// A subscriber with the OpenTelemetry layer (no exporter) for `f`.
    fn traced<T>(f: impl FnOnce() -> T) -> T {
        let provider = SdkTracerProvider::builder().build();
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn an_incoming_traceparent_is_continued_and_sent_on() {
        traced(|| {
            let span = tracing::info_span!("request");
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(TRACEPARENT, format!("00-{TRACE}-{PARENT}-01").parse().unwrap());
            assert!(continue_from(&span, &headers));
            assert_eq!(trace_id(&span), TraceId::from_hex(TRACE).unwrap());

            let request = propagate(reqwest::Client::new().get("http://peer/"), &span)
                .build()
                .unwrap();
            let sent = request.headers()[TRACEPARENT].to_str().unwrap().to_string();
            assert!(sent.starts_with(&format!("00-{TRACE}-")), "{sent}");
            assert!(
                !sent.contains(PARENT),
                "the span's own id goes out, not its parent's: {sent}"
            );
        });
    }

    #[test]
    fn no_or_a_bad_traceparent_starts_no_trace_of_its_own() {
        traced(|| {
            let span = tracing::info_span!("request");
            assert!(!continue_from(&span, &axum::http::HeaderMap::new()));
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(TRACEPARENT, "00-zz-yy-01".parse().unwrap());
            assert!(!continue_from(&span, &headers));
        });
    }

    #[test]
    fn an_append_continues_the_first_traced_entry_of_its_batch() {
        traced(|| {
            let write = tracing::info_span!("raft.commit");
            let other = tracing::info_span!("raft.commit");
            let traces = [EntryTrace::of(&write).unwrap(), EntryTrace::of(&other).unwrap()];
            let send = tracing::info_span!("raft.rpc");
            continue_entries(&send, traces.iter());
            assert_eq!(trace_id(&send), trace_id(&write));
            assert_ne!(trace_id(&send), trace_id(&other));
        });
    }

    #[test]
    fn off_means_disabled_spans_and_untouched_requests() {
        assert!(!enabled());
        assert!(span(|| unreachable!()).is_none());
        let request = propagate(reqwest::Client::new().get("http://peer/"), &Span::none())
            .build()
            .unwrap();
        assert!(request.headers().is_empty());
        assert!(http_span("POST", "/", &axum::http::HeaderMap::new(), Starts::Yes).is_none());
    }
}
