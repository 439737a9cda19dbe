//! Writes through any node (`--forward-writes`): a follower sends a write
//! to its leader over the peer connection and relays the answer (status,
//! body, `Location`), one hop at most, with the client's identity for the
//! ACL; across a leader kill every answer is a 201 or an honest 503.

use crate::common;

use std::time::{Duration, Instant};

use common::cluster::{ClusterConfig, TestCluster};
use common::fault_proxy::Mode;
use common::rt;
use common::writer::{Load, LoadConfig, Outcome};
use serde_json::{Value, json};

use super::faults::{LEADER_TIMEOUT, Reply, check_and_report, config, start_with};

/// The marker a forwarded request carries (`api::forward`).
const FORWARDED: &str = "x-distlog-forwarded";
const FORWARDED_FOR: &str = "x-distlog-forwarded-for";
const DEADLINE: &str = "x-distlog-deadline-ms";

const PEER_TOKEN: &str = "peer-token-0123456789abcdef0123456789abcdef";
const WRITER_TOKEN: &str = "writer-token-0123456789abcdef0123456789abcd";
const READER_TOKEN: &str = "reader-token-0123456789abcdef0123456789abcd";
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef0123456789abcde";

fn forwarding() -> ClusterConfig {
    ClusterConfig {
        extra_args: vec!["--forward-writes".into()],
        ..config()
    }
}

/// One request on the harness runtime; the reply.
async fn request(
    method: reqwest::Method,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
) -> Reply {
    rt::on_harness(async move {
        let mut request = rt::http().request(method, &url).timeout(Duration::from_secs(10));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, location, body }
    })
    .await
}

async fn post(url: String, headers: Vec<(&'static str, String)>, body: &str) -> Reply {
    request(reqwest::Method::POST, url, headers, Some(body.to_string())).await
}

fn json_type() -> (&'static str, String) {
    ("content-type", "application/json".to_string())
}

/// The value at `offset` as `node` serves it (read at the leader: read-your-writes).
async fn value_at(node: &str, offset: u64, headers: Vec<(&'static str, String)>) -> Value {
    let reply = request(reqwest::Method::GET, format!("{node}/{offset}"), headers, None).await;
    assert_eq!(reply.status, 200, "GET {node}/{offset}: {reply:?}");
    reply.body["value"].clone()
}

#[tokio::test]
async fn a_follower_forwards_writes_to_the_leader_and_relays_its_answers() {
    let mut config = forwarding();
    config.extra_args.extend(["--max-forwarded-writes".into(), "1".into()]);
    let (cluster, leader) = start_with("forward", config).await;
    let follower = (leader + 1) % cluster.len();
    let (leader_url, follower_url) = (cluster.url(leader), cluster.url(follower));

    // One JSON record: the leader's 201, offset and Location, relayed.
    let one = post(format!("{follower_url}/"), vec![json_type()], r#"{"via":"follower"}"#).await;
    assert_eq!(one.status, 201, "a write through a follower: {one:?}");
    let offset = one.body["offset"].as_u64().expect("an offset");
    assert_eq!(one.location.as_deref(), Some(format!("/{offset}").as_str()));
    assert_eq!(value_at(&leader_url, offset, vec![]).await, json!({"via": "follower"}));

    // An NDJSON batch, whole.
    let batch = post(
        format!("{follower_url}/"),
        vec![("content-type", "application/x-ndjson".into())],
        "{\"b\":1}\n{\"b\":2}\n{\"b\":3}\n",
    )
    .await;
    assert_eq!(batch.status, 201, "a batch through a follower: {batch:?}");
    let (first, last) = (batch.body["first_offset"].as_u64(), batch.body["last_offset"].as_u64());
    assert_eq!(last.zip(first).map(|(l, f)| l - f), Some(2), "{batch:?}");

    // A protobuf batch asking for a protobuf answer: Accept goes on to the
    // leader with the body (the answer relayed was JSON before).
    let protobuf = {
        use distlog_client::proto::{Format, Message, Record, RecordBatch};
        let record = Record {
            value: bytes::Bytes::from_static(br#"{"via":"protobuf"}"#),
            format: Format::Json.into(),
            ..Default::default()
        };
        RecordBatch { records: vec![record] }.encode_to_vec()
    };
    let url = format!("{follower_url}/");
    let (status, media, body) = rt::on_harness(async move {
        let response = rt::http()
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .header("accept", "application/x-protobuf")
            .body(protobuf)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = response.status().as_u16();
        let media = response.headers().get("content-type").cloned();
        (status, media, response.bytes().await.unwrap_or_default())
    })
    .await;
    assert_eq!(status, 201, "a protobuf batch through a follower");
    assert_eq!(
        media.as_ref().and_then(|m| m.to_str().ok()),
        Some("application/x-protobuf")
    );
    let result =
        <distlog_client::proto::AppendResult as distlog_client::proto::Message>::decode(body).expect("an AppendResult");
    assert_eq!(result.first_offset, result.last_offset, "{result:?}");

    // The leader's refusals are relayed too: Expected-Last-Offset that is not the last.
    let stale = post(
        format!("{follower_url}/"),
        vec![json_type(), ("expected-last-offset", "0".into())],
        r#"{"conditional":true}"#,
    )
    .await;
    assert_eq!(stale.status, 412, "{stale:?}");
    assert_eq!(stale.body["code"], "offset_mismatch");

    // A producer's retry through a follower is deduplicated by the leader.
    let producer = |seq: u64| {
        vec![
            json_type(),
            ("producer-id", "fwd".to_string()),
            ("producer-epoch", "0".to_string()),
            ("producer-seq", seq.to_string()),
        ]
    };
    let sent = post(format!("{follower_url}/"), producer(0), r#"{"p":0}"#).await;
    assert_eq!(sent.status, 201, "{sent:?}");
    let again = post(format!("{follower_url}/"), producer(0), r#"{"p":0}"#).await;
    assert_eq!(again.status, 200, "a retried record: {again:?}");
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["offset"], sent.body["offset"]);
    let other = (follower + 1) % cluster.len();
    let other = if other == leader {
        (other + 1) % cluster.len()
    } else {
        other
    };
    let third = post(format!("{}/", cluster.url(other)), producer(0), r#"{"p":0}"#).await;
    assert_eq!(third.status, 200, "the retry through another follower: {third:?}");
    assert_eq!(third.body["offset"], sent.body["offset"]);

    // A consumer's position, committed through a follower, is the leader's.
    let put = request(
        reqwest::Method::PUT,
        format!("{follower_url}/consumers/billing"),
        vec![json_type()],
        Some(json!({ "offset": offset }).to_string()),
    )
    .await;
    assert_eq!(put.status, 200, "a position through a follower: {put:?}");
    let at_leader = request(
        reqwest::Method::GET,
        format!("{leader_url}/consumers/billing"),
        vec![],
        None,
    )
    .await;
    assert_eq!(at_leader.body["offset"], offset, "{at_leader:?}");
    let deleted = request(
        reqwest::Method::DELETE,
        format!("{follower_url}/consumers/billing"),
        vec![],
        None,
    )
    .await;
    assert_eq!(deleted.status, 204, "{deleted:?}");

    // One hop: a request already forwarded is not forwarded again; the
    // follower answers as it does without forwarding.
    let marked = post(
        format!("{follower_url}/"),
        vec![json_type(), (FORWARDED, "1".into())],
        r#"{"hops":2}"#,
    )
    .await;
    assert_eq!(marked.status, 307, "a marked request at a follower: {marked:?}");
    assert_eq!(marked.body["code"], "not_leader");
    let leader_location = format!("{leader_url}/");
    assert_eq!(marked.location.as_deref(), Some(leader_location.as_str()));

    let metrics = request(reqwest::Method::GET, format!("{follower_url}/metrics"), vec![], None).await;
    let relayed = metrics.body.as_str().unwrap_or_default().lines().find_map(|line| {
        line.strip_prefix(r#"distlog_forwarded_writes_total{outcome="relayed"} "#)
            .and_then(|n| n.parse::<u64>().ok())
    });
    assert!(relayed.is_some_and(|n| n >= 7), "forwards counted: {relayed:?}");

    // `--max-forwarded-writes 1`: a forward whose body has not come yet
    // holds the one place; another write is refused at once, `503 busy`,
    // and taken again once the place is free.
    let (held, node) = a_held_forwarding_place(&cluster).await;
    drop(held);
    let freed = wait_for_status(&node, 201).await;
    assert_eq!(freed.status, 201, "{freed:?}");
}

/// A follower's one forwarding place held, seen by its `503 busy`; the
/// held connection and the follower's URL. Started again at the follower
/// of a new leader if leadership moves meanwhile (a loaded machine's
/// election): a node that leads writes without forwarding.
async fn a_held_forwarding_place(cluster: &TestCluster) -> (tokio::net::TcpStream, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    'again: loop {
        let leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
        let node = cluster.url((leader + 1) % cluster.len());
        let held = hold_a_forward(&node).await;
        let began = Instant::now();
        loop {
            let reply = post(format!("{node}/"), vec![json_type()], r#"{"probe":true}"#).await;
            if reply.status == 503 && reply.body["code"] == "busy" {
                return (held, node);
            }
            assert!(Instant::now() < deadline, "no 503 busy from {node}: {reply:?}");
            // (Ten seconds without a `busy`: it may have moved and come back.)
            if cluster.leader().await != Some(leader) || began.elapsed() > Duration::from_secs(10) {
                eprintln!("forward: leadership moved from node {leader} while a place was held; again");
                continue 'again;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A connection that sent a write's headers and not its body.
async fn hold_a_forward(node: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let address = node.strip_prefix("http://").expect("a plain HTTP node").to_string();
    rt::on_harness(async move {
        let mut conn = tokio::net::TcpStream::connect(&address).await.expect("connect");
        let head = format!(
            "POST / HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{"
        );
        conn.write_all(head.as_bytes()).await.expect("send the headers");
        conn
    })
    .await
}

/// Writes through `node` until one is answered `status` (each one before
/// it may be written); that reply.
async fn wait_for_status(node: &str, status: u16) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = post(format!("{node}/"), vec![json_type()], r#"{"probe":true}"#).await;
        if reply.status == status {
            return reply;
        }
        assert!(Instant::now() < deadline, "no {status} from {node}: {reply:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_write_is_authorised_as_the_client_not_the_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let acl = dir.path().join("acl");
    let peer_token = dir.path().join("peer-token");
    std::fs::write(
        &tokens,
        format!("peer {PEER_TOKEN}\nwriter {WRITER_TOKEN}\nreader {READER_TOKEN}\nroot {ADMIN_TOKEN}\n"),
    )
    .expect("tokens");
    std::fs::write(
        &acl,
        "peer cluster\nwriter produce\nwriter consume\nreader consume\nroot admin\n",
    )
    .expect("acl");
    std::fs::write(&peer_token, PEER_TOKEN).expect("peer token");
    let path = |p: &std::path::Path| p.display().to_string();
    let mut config = forwarding();
    config.extra_args.extend([
        "--token-file".into(),
        path(&tokens),
        "--acl".into(),
        path(&acl),
        "--peer-token-file".into(),
        path(&peer_token),
        "--protect-metrics".into(),
    ]);
    // The harness's status polls carry no token: find the leader by hand.
    let cluster = TestCluster::start(config).await;
    let bearer = |token: &str| ("authorization", format!("Bearer {token}"));
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let leader_url = loop {
        let mut said = Vec::new();
        for url in cluster.urls() {
            let status = request(
                reqwest::Method::GET,
                format!("{url}/cluster"),
                vec![bearer(READER_TOKEN)],
                None,
            )
            .await;
            said.push(status.body["leader_url"].as_str().map(str::to_string));
        }
        if let Some(Some(first)) = said.first()
            && said.iter().all(|s| s.as_deref() == Some(first.as_str()))
        {
            break first.clone();
        }
        assert!(Instant::now() < deadline, "no agreed leader: {said:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leader = cluster.index_of(&leader_url).expect("the leader is a node");
    let follower_url = cluster.url((leader + 1) % cluster.len());

    let allowed = post(
        format!("{follower_url}/"),
        vec![json_type(), bearer(WRITER_TOKEN)],
        r#"{"by":"writer"}"#,
    )
    .await;
    assert_eq!(allowed.status, 201, "a producer writes through a follower: {allowed:?}");
    let offset = allowed.body["offset"].as_u64().expect("an offset");

    let refused = post(
        format!("{follower_url}/"),
        vec![json_type(), bearer(READER_TOKEN)],
        r#"{"by":"reader"}"#,
    )
    .await;
    assert_eq!(
        refused.status, 403,
        "a reader may not produce through a follower: {refused:?}"
    );
    assert_eq!(refused.body["principal"], "reader");

    // The identity header is trusted from peers only: a reader claiming
    // to be a forwarded writer is still the reader, at the leader too.
    for url in [&leader_url, &follower_url] {
        let forged = post(
            format!("{url}/"),
            vec![
                json_type(),
                bearer(READER_TOKEN),
                (FORWARDED, "1".into()),
                (FORWARDED_FOR, "writer".into()),
            ],
            r#"{"by":"forger"}"#,
        )
        .await;
        assert_eq!(forged.status, 403, "a forged identity at {url}: {forged:?}");
        assert_eq!(forged.body["principal"], "reader", "{forged:?}");
    }
    // And a peer's own identity is not a producer's: without the client
    // identity it carries, a peer's forwarded write is refused.
    let peer_alone = post(
        format!("{leader_url}/"),
        vec![json_type(), bearer(PEER_TOKEN), (FORWARDED, "1".into())],
        r#"{"by":"peer"}"#,
    )
    .await;
    assert_eq!(peer_alone.status, 403, "{peer_alone:?}");

    // A peer acts for a client on the forwarded writes alone, and never
    // for an admin: not on a protected route, not on a write.
    let as_admin = |url: &str| {
        (
            url.to_string(),
            vec![
                bearer(PEER_TOKEN),
                (FORWARDED, "1".to_string()),
                (FORWARDED_FOR, "root".to_string()),
            ],
        )
    };
    let (url, headers) = as_admin(&leader_url);
    let metrics = request(reqwest::Method::GET, format!("{url}/metrics"), headers.clone(), None).await;
    assert_eq!(
        metrics.status, 403,
        "a peer naming an admin reads /metrics: {metrics:?}"
    );
    let mut write = headers;
    write.push(json_type());
    let impostor = post(format!("{url}/"), write, r#"{"by":"impostor"}"#).await;
    assert_eq!(impostor.status, 403, "a peer writes as an admin: {impostor:?}");

    // The deadline is a peer's word: a client's own is not heeded.
    let own_deadline = post(
        format!("{leader_url}/"),
        vec![
            json_type(),
            bearer(WRITER_TOKEN),
            (FORWARDED, "1".into()),
            (DEADLINE, "0".into()),
        ],
        r#"{"by":"writer","deadline":0}"#,
    )
    .await;
    assert_eq!(own_deadline.status, 201, "a client's deadline header: {own_deadline:?}");

    // Nothing but the writer's record was written.
    let after = post(
        format!("{follower_url}/"),
        vec![json_type(), bearer(WRITER_TOKEN)],
        r#"{"by":"writer","n":2}"#,
    )
    .await;
    assert_eq!(after.status, 201, "{after:?}");
    let next = after.body["offset"].as_u64().expect("an offset");
    let reader = vec![bearer(READER_TOKEN)];
    let range = request(
        reqwest::Method::GET,
        format!("{leader_url}/?from={offset}&limit=100"),
        reader.clone(),
        None,
    )
    .await;
    let text = range.body.to_string();
    assert!(text.contains("writer"), "the writer's records are there: {text}");
    for absent in ["reader", "forger", "peer", "impostor"] {
        assert!(
            !text.contains(&format!("\"by\":\"{absent}\"")),
            "{absent} wrote: {text}"
        );
    }
    assert_eq!(
        value_at(&leader_url, next, reader).await,
        json!({"by": "writer", "n": 2})
    );
}

#[tokio::test]
async fn writes_through_a_follower_across_a_leader_kill_are_acknowledged_or_honestly_unknown() {
    let mut config = forwarding();
    config.extra_args.extend(["--write-timeout-ms".into(), "2000".into()]);
    let (mut cluster, leader) = start_with("forward across a leader kill", config).await;
    let follower = (leader + 1) % cluster.len();
    let load = Load::start(
        vec![cluster.url(follower)],
        LoadConfig {
            writers: 4,
            // Longer than the follower's deadline for a forward: the node
            // answers before the client gives up.
            request_timeout: Duration::from_secs(8),
            max_redirects: 0,
            ..LoadConfig::default()
        },
    );
    load.assert_progress(100, Duration::from_secs(20), "before the kill")
        .await;
    cluster.kill(leader);
    let new_leader = cluster.wait_for_leader(LEADER_TIMEOUT).await;
    eprintln!("forward across a leader kill: node {new_leader} leads after node {leader}");
    load.assert_progress(100, Duration::from_secs(20), "after the kill")
        .await;
    cluster.restart(leader).await;
    cluster.wait_for_leader(LEADER_TIMEOUT).await;
    load.assert_progress(50, Duration::from_secs(20), "after the restart")
        .await;
    let history = load.stop().await;

    let (mut dishonest, mut unknown, mut no_leader) = (Vec::new(), 0, 0);
    for attempt in &history.attempts {
        match &attempt.outcome {
            Outcome::Ack(_) => {}
            Outcome::Unknown(why) if why.contains("outcome_unknown") => unknown += 1,
            Outcome::Unknown(why) if why.contains("no_leader") => no_leader += 1,
            other => dishonest.push(format!("({},{}): {other:?}", attempt.writer, attempt.seq)),
        }
    }
    eprintln!("forward across a leader kill: 503 outcome_unknown {unknown}, 503 no_leader {no_leader}");
    assert!(
        dishonest.is_empty(),
        "answers other than 201 or 503 outcome_unknown/no_leader: {dishonest:?}"
    );
    check_and_report(&cluster, "forward across a leader kill", &history).await;
}

#[tokio::test]
async fn a_forwarded_write_the_leader_cannot_commit_ends_by_its_deadline_as_unknown() {
    let mut config = forwarding();
    config.extra_args.extend(["--write-timeout-ms".into(), "3000".into()]);
    let (mut cluster, leader) = start_with("forward deadline", config).await;
    let (leader_url, follower_url) = (cluster.url(leader), cluster.url((leader + 1) % cluster.len()));
    let warm = post(format!("{follower_url}/"), vec![json_type()], r#"{"warm":1}"#).await;
    assert_eq!(warm.status, 201, "{warm:?}");

    // Cut off, the leader cannot commit, and the follower's forward to it
    // (over the same links) gets no answer.
    cluster.partition(leader, Mode::Drop);
    let timed = |url: String, headers: Vec<(&'static str, String)>| async move {
        let sent = Instant::now();
        let reply = post(url, headers, r#"{"cut":"off"}"#).await;
        (reply, sent.elapsed())
    };
    // A marked write with 300 ms left: the leader stops waiting then, not
    // at its own --write-timeout-ms.
    let marked = timed(
        format!("{leader_url}/"),
        vec![json_type(), (FORWARDED, "9".into()), (DEADLINE, "300".into())],
    );
    // Through the follower: its deadline is its --write-timeout-ms.
    let forwarded = timed(format!("{follower_url}/"), vec![json_type()]);
    let ((marked, marked_took), (forwarded, forwarded_took)) = tokio::join!(marked, forwarded);
    assert_eq!(
        (marked.status, &marked.body["code"]),
        (503, &json!("outcome_unknown")),
        "{marked:?}"
    );
    assert!(
        marked_took < Duration::from_millis(2500),
        "the leader worked {marked_took:?} past 300 ms"
    );
    assert_eq!(
        (forwarded.status, &forwarded.body["code"]),
        (503, &json!("outcome_unknown")),
        "{forwarded:?}"
    );
    assert!(
        forwarded_took >= Duration::from_millis(2900) && forwarded_took < Duration::from_secs(6),
        "the forward ended after {forwarded_took:?}, not at its deadline"
    );
    cluster.heal();
}
