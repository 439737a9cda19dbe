//! The client subcommands of the `distlog` binary against a node started
//! in this process.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::start_in;
use serde_json::{Value, json};

/// Runs `distlog ARGS` with `input` on stdin (off the runtime's threads).
pub async fn distlog(args: &[&str], input: &[u8]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let input = input.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
            .args(&args)
            .env_remove("DISTLOG_URL")
            .env_remove("DISTLOG_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("distlog runs");
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().expect("distlog ends");
        writer.join().expect("the writer").expect("stdin written");
        output
    })
    .await
    .expect("the blocking task")
}

pub fn stdout_lines(output: &Output) -> Vec<String> {
    assert!(
        output.status.success(),
        "distlog failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .expect("UTF-8")
        .lines()
        .map(str::to_string)
        .collect()
}

fn offsets(lines: &[String]) -> Vec<u64> {
    lines
        .iter()
        .map(|line| {
            serde_json::from_str::<Value>(line).expect("NDJSON")["offset"]
                .as_u64()
                .expect("an offset")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_and_consume_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = node.url.as_str();
    let input: String = (0..1000).map(|n| format!("{{\"n\":{n}}}\n")).collect();

    let produced = distlog(&["produce", "--url", url, "--batch-records", "64"], input.as_bytes()).await;
    assert_eq!(offsets(&stdout_lines(&produced)), (0..1000).collect::<Vec<_>>());
    assert_eq!(common::next_offset(url).await, 1000);

    let values = distlog(&["consume", "--url", url, "--format", "value"], b"").await;
    assert_eq!(stdout_lines(&values).join("\n") + "\n", input);
    let some = distlog(&["consume", "--url", url, "--from", "10", "--limit", "3"], b"").await;
    let some: Vec<Value> = stdout_lines(&some)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        some.iter().map(|r| r["offset"].as_u64().unwrap()).collect::<Vec<_>>(),
        [10, 11, 12]
    );
    assert_eq!(some[0]["value"], json!({"n": 10}));
    let tail = distlog(&["tail", "--url", url, "-n", "2", "--format", "text"], b"").await;
    let tail = stdout_lines(&tail);
    assert!(
        tail[0].starts_with("998\t") && tail[0].ends_with("\t{\"n\":998}"),
        "{tail:?}"
    );
    assert_eq!(tail.len(), 2);
    let next = distlog(&["check-tail", "--url", url], b"").await;
    assert_eq!(stdout_lines(&next), ["1000"]);

    // Raw lines and length-prefixed frames are binary records.
    let raw = distlog(&["produce", "--url", url, "--raw"], b"plain text\n").await;
    assert_eq!(offsets(&stdout_lines(&raw)), [1000]);
    let mut frames = Vec::new();
    for record in [&b"\x00\x01"[..], b"frame"] {
        frames.extend((record.len() as u32).to_be_bytes());
        frames.extend(record);
    }
    let binary = distlog(&["produce", "--url", url, "--binary", "--quiet"], &frames).await;
    assert!(stdout_lines(&binary).is_empty(), "--quiet prints no offsets");
    assert!(String::from_utf8_lossy(&binary.stderr).contains("produced 2 records"));
    let read = distlog(&["consume", "--url", url, "--from", "1000"], b"").await;
    let read: Vec<Value> = stdout_lines(&read)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(read.len(), 3);
    assert_eq!(read[0]["value_base64"], "cGxhaW4gdGV4dA==");
    assert_eq!(read[1]["value_base64"], "AAE=");
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_is_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let refused = distlog(&["produce", "--url", &node.url], b"{not json\n").await;
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("distlog produce: ") && stderr.contains("invalid_json"),
        "{stderr}"
    );

    let port = common::cluster::free_ports(1)[0];
    let nobody = distlog(
        &[
            "check-tail",
            "--retry-for",
            "300ms",
            "--url",
            &format!("http://127.0.0.1:{port}"),
        ],
        b"",
    )
    .await;
    assert!(!nobody.status.success());
    let stderr = String::from_utf8_lossy(&nobody.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");

    let not_cluster = distlog(&["cluster", "status", "--url", &node.url], b"").await;
    assert!(String::from_utf8_lossy(&not_cluster.stderr).contains("not_a_cluster"));
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_follow_prints_records_as_they_come_and_stops_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let client = distlog_client::Client::builder()
        .seeds([node.url.clone()])
        .build()
        .unwrap();
    client.append_json(&json!("before")).await.unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["consume", "--follow", "--format", "value", "--url", &node.url])
        .stdout(Stdio::piped())
        .spawn()
        .expect("consume runs");
    let (lines, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = lines.send(line.expect("a line"));
        }
    });
    assert_eq!(next_line(&mut seen).await.as_deref(), Some("\"before\""));
    client.append_json(&json!("after")).await.unwrap();
    assert_eq!(next_line(&mut seen).await.as_deref(), Some("\"after\""));

    // SAFETY: kill(2) on a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "Ctrl-C is a clean stop: {status}");
    node.server.shutdown().await.unwrap();
}

async fn next_line(lines: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Option<String> {
    tokio::time::timeout(Duration::from_secs(10), lines.recv())
        .await
        .expect("a line in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_with_a_group_resumes_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let input: String = (0..10).map(|n| format!("{n}\n")).collect();
    stdout_lines(&distlog(&["produce", "--url", &node.url], input.as_bytes()).await);
    let args = [
        "consume", "--url", &node.url, "--group", "g", "--format", "value", "--limit", "4",
    ];
    assert_eq!(stdout_lines(&distlog(&args, b"").await), ["0", "1", "2", "3"]);
    assert_eq!(stdout_lines(&distlog(&args, b"").await), ["4", "5", "6", "7"]);
    let client = distlog_client::Client::builder()
        .seeds([node.url.clone()])
        .build()
        .unwrap();
    assert_eq!(client.position("g").await.unwrap().map(|p| p.offset), Some(8));
    node.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_logs_are_created_listed_described_and_removed_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_in(dir.path()).await;
    let url = node.url.as_str();
    let created = distlog(
        &["logs", "create", "--url", url, "orders", "--retention-ms", "60000"],
        b"",
    )
    .await;
    let created: Value = serde_json::from_str(&stdout_lines(&created).join("\n")).unwrap();
    assert_eq!(created["settings"]["retention_ms"], 60000);
    let again = distlog(
        &["logs", "create", "--url", url, "orders", "--retention-ms", "60000"],
        b"",
    )
    .await;
    assert!(again.status.success(), "the same settings again is not an error");
    let other = distlog(&["logs", "create", "--url", url, "orders"], b"").await;
    assert!(!other.status.success());
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("log_exists"),
        "{other:?}"
    );

    let table = stdout_lines(&distlog(&["logs", "ls", "--url", url], b"").await);
    assert!(table[0].starts_with("NAME"), "{table:?}");
    assert!(
        table[1].starts_with("orders") && table[1].contains("60000"),
        "{table:?}"
    );
    let described = distlog(&["logs", "describe", "--url", url, "orders"], b"").await;
    let described: Value = serde_json::from_str(&stdout_lines(&described).join("\n")).unwrap();
    assert_eq!(described["next_offset"], 0);

    let produced = distlog(&["produce", "--url", url, "--log", "orders"], b"{\"n\":1}\n{\"n\":2}\n").await;
    assert_eq!(offsets(&stdout_lines(&produced)), [0, 1]);
    let read = distlog(&["consume", "--url", url, "--log", "orders", "--format", "value"], b"").await;
    assert_eq!(stdout_lines(&read), ["{\"n\":1}", "{\"n\":2}"]);
    assert_eq!(common::next_offset(url).await, 0, "the default log is untouched");
    let wrong = distlog(&["produce", "--url", url, "--log", "Orders!"], b"{}\n").await;
    assert!(!wrong.status.success());

    let removed = distlog(&["logs", "rm", "--url", url, "orders"], b"").await;
    assert!(removed.status.success(), "{removed:?}");
    let listed = distlog(&["logs", "ls", "--url", url, "--json"], b"").await;
    assert_eq!(stdout_lines(&listed).join(""), "[]");
    let gone = distlog(&["logs", "describe", "--url", url, "orders"], b"").await;
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("log_not_found"),
        "{gone:?}"
    );
}
