//! Traces (OpenTelemetry over OTLP/HTTP): a three-node cluster exports to a
//! receiver in this test, which decodes the protobuf bodies with the
//! opentelemetry-proto types. One write sent to a follower (answered 307)
//! and then to the leader, both with the same W3C trace id, must show as
//! one trace across the nodes: the follower's 307, the leader's request,
//! its Raft commit and append-entries, and a follower's handling of them.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::cluster::{ClusterConfig, TestCluster};
use common::rt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One exported span, flattened with its resource's attributes.
#[derive(Clone, Debug)]
struct Got {
    instance: String,
    node_id: Option<i64>,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
    name: String,
    attributes: BTreeMap<String, String>,
}

type Received = Arc<Mutex<Vec<Got>>>;

fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a KeyValue> {
    attributes.iter().find(|kv| kv.key == key)
}

/// `POST /v1/traces`: an OTLP/HTTP receiver (protobuf).
async fn receive(State(received): State<Received>, body: Bytes) -> ([(&'static str, &'static str); 1], Vec<u8>) {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut got = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
        let instance = find(&resource, "service.instance.id").map(|kv| text(&kv.value));
        let node_id = find(&resource, "distlog.node.id").and_then(|kv| text(&kv.value).parse().ok());
        assert_eq!(
            find(&resource, "service.name").map(|kv| text(&kv.value)).as_deref(),
            Some("distlog")
        );
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                got.push(Got {
                    instance: instance.clone().unwrap_or_default(),
                    node_id,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    name: span.name,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| (kv.key.clone(), text(&kv.value)))
                        .collect(),
                });
            }
        }
    }
    received.lock().unwrap().extend(got);
    (
        [("content-type", "application/x-protobuf")],
        Vec::new(), // an empty ExportTraceServiceResponse
    )
}

async fn start_receiver() -> (String, Received) {
    let received = Received::default();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random-enough id of `n` bytes (never all zero).
fn random_id(n: usize, salt: u64) -> Vec<u8> {
    let mut x = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn one_write_through_a_follower_is_one_trace_across_the_nodes() {
    rt::block_on(async {
        let (receiver, received) = start_receiver().await;
        let cluster = TestCluster::start(ClusterConfig {
            extra_args: vec!["--otlp-endpoint".into(), receiver.clone()],
            // The nodes export every 100 ms. Given to the nodes only: setting
            // it in this process would race the other tests' threads.
            env: vec![("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into())],
            rust_log: "info,distlog::access=warn".into(),
            ..ClusterConfig::default()
        })
        .await;
        let leader = cluster.wait_for_leader(Duration::from_secs(15)).await;
        let follower = (leader + 1) % 3;
        let mut node_ids = BTreeMap::new();
        for i in 0..3 {
            let status: serde_json::Value = rt::http()
                .get(format!("{}/cluster", cluster.url(i)))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            node_ids.insert(cluster.url(i), status["node_id"].as_i64().expect("a node id"));
        }

        let trace_id = random_id(16, 1);
        let traceparent = |span: &[u8]| format!("00-{}-{}-01", hex(&trace_id), hex(span));
        let redirected = rt::http()
            .post(format!("{}/", cluster.url(follower)))
            .header("traceparent", traceparent(&random_id(8, 2)))
            .json(&serde_json::json!({"traced": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(redirected.status(), 307);
        let location = redirected.headers()["location"].to_str().unwrap().to_string();
        let written = rt::http()
            .post(&location)
            .header("traceparent", traceparent(&random_id(8, 3)))
            .json(&serde_json::json!({"traced": true}))
            .send()
            .await
            .unwrap();
        assert_eq!(written.status(), 201, "{:?}", written.text().await);

        let (leader_url, follower_url) = (cluster.url(leader), cluster.url(follower));
        let deadline = Instant::now() + Duration::from_secs(30);
        let spans = loop {
            let spans: Vec<Got> = received
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            let has = |instance: &str, name: &str| spans.iter().any(|s| s.instance == instance && s.name == name);
            let followers_appended = (0..3)
                .filter(|&i| i != leader)
                .filter(|&i| has(&cluster.url(i), "raft.append_entries"))
                .count();
            if has(&follower_url, "POST /")
                && has(&leader_url, "POST /")
                && has(&leader_url, "raft.commit")
                && has(&leader_url, "/raft/append")
                && followers_appended >= 1
            {
                break spans;
            }
            assert!(
                Instant::now() < deadline,
                "the write's spans did not all arrive; in its trace: {spans:#?}\nall: {:#?}",
                received
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|s| (&s.instance, &s.name, hex(&s.trace_id)))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        let instances: BTreeSet<&str> = spans.iter().map(|s| s.instance.as_str()).collect();
        assert!(instances.len() >= 2, "{instances:?}");
        let by_id: BTreeMap<&[u8], &Got> = spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
        let one = |instance: &str, name: &str| {
            spans
                .iter()
                .find(|s| s.instance == instance && s.name == name)
                .unwrap_or_else(|| panic!("no {name} from {instance}"))
        };
        // The request spans: route templates and statuses.
        let redirect = one(&follower_url, "POST /");
        assert_eq!(redirect.attributes["http.route"], "/");
        assert_eq!(redirect.attributes["http.response.status_code"], "307");
        let request = one(&leader_url, "POST /");
        assert_eq!(request.attributes["http.response.status_code"], "201");
        // leader: request -> raft.commit -> append-entries client span.
        let commit = one(&leader_url, "raft.commit");
        assert_eq!(commit.parent_span_id, request.span_id);
        let sends: Vec<&Got> = spans
            .iter()
            .filter(|s| s.instance == leader_url && s.name == "/raft/append")
            .collect();
        assert!(sends.iter().all(|s| s.parent_span_id == commit.span_id), "{sends:#?}");
        // follower: its request span continues the leader's client span.
        let handled = spans
            .iter()
            .find(|s| s.instance != leader_url && s.name == "raft.append_entries")
            .unwrap();
        let server = by_id[handled.parent_span_id.as_slice()];
        assert_eq!(server.name, "POST /raft/append");
        assert_eq!(server.instance, handled.instance);
        let client = by_id[server.parent_span_id.as_slice()];
        assert_eq!(
            (client.instance.as_str(), client.name.as_str()),
            (leader_url.as_str(), "/raft/append")
        );
        // Resources name each node by URL and cluster node id.
        for span in &spans {
            if let Some(id) = span.node_id {
                assert_eq!(node_ids[&span.instance], id, "{span:?}");
            }
        }
        assert!(
            spans.iter().any(|s| s.node_id.is_some()),
            "no distlog.node.id: {spans:#?}"
        );
        drop(cluster);
    });
}
