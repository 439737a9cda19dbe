//! Tests of the fault-test harness itself, on what needs no cluster: the
//! proxy against a tiny echo server, the checker's pure checks on synthetic
//! histories (each kind of violation must be reported), and the writer,
//! checker and monitor end to end against a real leader and read replica.

use crate::common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::checker::{self, Frame, MonitorState, NodeLog};
use common::fault_proxy::{FaultProxy, Mode};
use common::rt::XorShift;
use common::writer::{Attempt, History, Load, LoadConfig, Outcome, record_body};
use serde_json::{Value, json};

// ---- the proxy ----

/// An echo server on its own threads; returns its address.
fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("echo server binds");
    let addr = listener.local_addr().expect("echo server address");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

fn connect(proxy: &FaultProxy) -> TcpStream {
    let stream = TcpStream::connect(proxy.addr()).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("a read timeout");
    stream
}

/// Sends `text` and expects it echoed within 5 s.
fn round_trip(stream: &mut TcpStream, text: &str) {
    stream.write_all(text.as_bytes()).expect("write through the proxy");
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 256];
    while got.len() < text.len() {
        assert!(
            Instant::now() < deadline,
            "no echo of {text:?} within 5 s (got {got:?})"
        );
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed before echoing {text:?}"),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("reading the echo of {text:?}: {e}"),
        }
    }
    assert_eq!(String::from_utf8_lossy(&got), text);
}

/// Nothing arrives within one read timeout (300 ms) and the stream is open.
fn silent(stream: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        Ok(0) => panic!("the connection was closed, expected it held open"),
        Ok(n) => panic!("expected silence, got {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => panic!("expected silence, got {e}"),
    }
}

/// The far end closes the stream within 5 s (EOF or reset).
fn closed(stream: &mut TcpStream) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
            Ok(n) => panic!("expected a close, got {:?}", String::from_utf8_lossy(&buf[..n])),
        }
        assert!(Instant::now() < deadline, "the connection stayed open");
    }
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_proxy_passes_bytes_both_ways_and_counts_them() {
    let proxy = FaultProxy::start(echo_server()).expect("proxy starts");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, "hello");
    round_trip(&mut stream, "again");
    // Counted once written, which may be just after the echo was read.
    eventually("10 bytes counted each way", || {
        let stats = proxy.stats();
        (stats.to_target, stats.to_client, stats.swallowed) == (10, 10, 0)
    });
    assert_eq!(proxy.stats().accepted, 1);
}

#[test]
fn drop_swallows_bytes_both_ways_and_pass_makes_new_connections_work() {
    let proxy = FaultProxy::start(echo_server()).expect("proxy starts");
    let mut before = connect(&proxy);
    round_trip(&mut before, "ping");
    let mut idle = connect(&proxy);
    round_trip(&mut idle, "idle");

    proxy.set_mode(Mode::Drop);
    before.write_all(b"lost").expect("writes still succeed");
    silent(&mut before);
    let mut during = connect(&proxy);
    during.write_all(b"also lost").expect("a new connection is accepted");
    silent(&mut during);
    eventually("both writes swallowed", || proxy.stats().swallowed == 13);
    assert_eq!(proxy.stats().to_target, 8, "nothing reached the target in Drop");

    proxy.set_mode(Mode::Pass);
    closed(&mut before); // its stream lost bytes
    closed(&mut during); // never connected to the target
    round_trip(&mut idle, "still here"); // lost nothing, carries on
    let mut after = connect(&proxy);
    round_trip(&mut after, "works again");
}

#[test]
fn stall_holds_bytes_and_delivers_them_in_order_on_pass() {
    let proxy = FaultProxy::start(echo_server()).expect("proxy starts");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, "warm");
    proxy.set_mode(Mode::Stall);
    stream.write_all(b"held-").expect("write while stalled");
    let mut during = connect(&proxy);
    during.write_all(b"queued").expect("a new connection waits too");
    silent(&mut stream);
    silent(&mut during);
    eventually("the warm-up counted", || proxy.stats().to_target >= 4);
    assert_eq!(proxy.stats().to_target, 4, "nothing passed while stalled");
    stream.write_all(b"then").expect("more while stalled");

    proxy.set_mode(Mode::Pass);
    let mut got = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 64];
    while got.len() < "held-then".len() {
        assert!(Instant::now() < deadline, "stalled bytes never came: {got:?}");
        match stream.read(&mut buf) {
            Ok(0) => panic!("closed after a stall"),
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, "held-then");
    let mut queued = [0u8; 6];
    during
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("a read timeout");
    during.read_exact(&mut queued).expect("the queued bytes arrive");
    assert_eq!(&queued, b"queued");
    assert_eq!(proxy.stats().swallowed, 0);
}

#[test]
fn sever_closes_connections_and_refuses_new_ones_until_pass() {
    let proxy = FaultProxy::start(echo_server()).expect("proxy starts");
    let mut stream = connect(&proxy);
    round_trip(&mut stream, "ping");
    proxy.set_mode(Mode::Sever);
    closed(&mut stream);
    // New connections are accepted and closed at once.
    if let Ok(mut refused) = TcpStream::connect(proxy.addr()) {
        refused
            .set_read_timeout(Some(Duration::from_millis(300)))
            .expect("a read timeout");
        let _ = refused.write_all(b"anyone?");
        closed(&mut refused);
    }
    proxy.set_mode(Mode::Pass);
    let mut after = connect(&proxy);
    round_trip(&mut after, "back");
}

#[test]
fn a_target_that_is_down_looks_down_through_the_proxy() {
    let port = common::cluster::free_ports(1)[0];
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], port))).expect("proxy starts");
    let mut stream = connect(&proxy);
    closed(&mut stream);
    eventually("a connect failure counted", || proxy.stats().connect_failures == 1);
}

#[tokio::test]
async fn the_proxy_works_from_an_async_test_and_drops_cleanly_there() {
    let proxy = FaultProxy::start(echo_server()).expect("proxy starts");
    let addr = proxy.addr();
    let echoed = tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        round_trip(&mut stream, "async");
    })
    .await;
    assert!(echoed.is_ok());
    drop(proxy); // inside an async context: must not panic
}

// ---- the checker, on synthetic histories ----

struct Synthetic {
    start: Instant,
    history: History,
}

impl Synthetic {
    fn new() -> Synthetic {
        Synthetic {
            start: Instant::now(),
            history: History::default(),
        }
    }

    /// Writer `w`'s attempt `n`, sent at `sent` ms and answered at `done` ms.
    fn attempt(&mut self, w: u64, n: u64, sent: u64, done: u64, outcome: Outcome) -> &mut Self {
        let at = |ms| self.start + Duration::from_millis(ms);
        self.history.attempts.push(Attempt {
            writer: w,
            seq: n,
            body: record_body(w, n),
            first_node: "http://a".into(),
            last_node: "http://a".into(),
            sent: at(sent),
            done: at(done),
            outcome,
            duplicate: false,
        });
        self
    }
}

fn value(w: u64, n: u64) -> Value {
    json!({ "w": w, "n": n })
}

fn node(url: &str, records: &[(u64, Value)]) -> NodeLog {
    NodeLog::new(url, records.iter().cloned())
}

/// A clean run: three writers, overlapping acks in any order, one unknown
/// outcome that made it and one that did not, one refusal.
fn clean() -> (History, Vec<NodeLog>) {
    let mut s = Synthetic::new();
    s.attempt(0, 0, 0, 10, Outcome::Ack(0))
        .attempt(1, 0, 5, 30, Outcome::Ack(2)) // overlaps 0/1 and 2/0: any order
        .attempt(2, 0, 6, 20, Outcome::Ack(1))
        .attempt(0, 1, 40, 50, Outcome::Unknown("timeout".into())) // made it, at 4
        .attempt(0, 2, 60, 61, Outcome::Unknown("reset".into())) // did not
        .attempt(1, 1, 31, 45, Outcome::Ack(3))
        .attempt(2, 1, 21, 22, Outcome::Failed(400))
        .attempt(2, 2, 70, 80, Outcome::Ack(6));
    let records = [
        (0, value(0, 0)),
        (1, value(2, 0)),
        (2, value(1, 0)),
        (3, value(1, 1)),
        (4, value(0, 1)),
        // 5 is a control entry: not visible
        (6, value(2, 2)),
    ];
    let logs = vec![node("http://a", &records), node("http://b", &records)];
    (s.history, logs)
}

fn assert_reports(problems: &[String], needles: &[&str]) {
    assert!(!problems.is_empty(), "expected a problem naming {needles:?}, got none");
    let all = problems.join("\n");
    for needle in needles {
        assert!(all.contains(needle), "expected {needle:?} in:\n{all}");
    }
}

#[test]
fn a_consistent_history_passes_every_check() {
    let (history, logs) = clean();
    let problems = checker::check_history(&history, &logs);
    assert!(problems.is_empty(), "{problems:#?}");
    checker::assert_clean("clean history", &problems);
}

#[test]
fn a_lost_acknowledged_write_is_reported_naming_its_offset_and_node() {
    let (history, mut logs) = clean();
    logs[1].records.remove(&3);
    logs[1].records.insert(7, value(9, 9)); // b goes on past 3, so 3 is a hole
    let problems = checker::check_acks_present(&history, &logs);
    assert_reports(&problems, &["offset 3", "missing on http://b"]);

    let (history, mut logs) = clean();
    logs[0].records.insert(3, value(0, 2)); // an unknown write took its place
    let problems = checker::check_history(&history, &logs);
    assert_reports(
        &problems,
        &["{\"w\":1,\"n\":1}", "lost on http://a", "offset 3 differs"],
    );
}

#[test]
fn a_log_shorter_than_an_ack_is_reported() {
    let (history, mut logs) = clean();
    logs[1].records.remove(&6);
    let problems = checker::check_history(&history, &logs);
    assert_reports(&problems, &["offset 6", "missing on http://b", "ends at 5"]);
}

#[test]
fn a_duplicate_is_reported_with_both_offsets() {
    let (history, mut logs) = clean();
    for log in &mut logs {
        log.records.insert(7, value(0, 1)); // the unknown write, twice
    }
    let problems = checker::check_no_duplicates_or_inventions(&history, &logs);
    assert_reports(&problems, &["duplicate on http://a", "offset 4 and again at offset 7"]);
}

#[test]
fn an_invented_value_is_reported() {
    let (history, mut logs) = clean();
    logs[0].records.insert(7, value(5, 0));
    let problems = checker::check_no_duplicates_or_inventions(&history, &logs);
    assert_reports(&problems, &["invented on http://a", "offset 7"]);
    let (history, mut logs) = clean();
    logs[1].records.insert(7, json!("not even ours"));
    assert_reports(&checker::check_history(&history, &logs), &["invented on http://b"]);
}

#[test]
fn a_refused_write_in_the_log_is_reported() {
    let (history, mut logs) = clean();
    logs[0].records.insert(7, value(2, 1)); // answered 400
    let problems = checker::check_no_duplicates_or_inventions(&history, &logs);
    assert_reports(&problems, &["refused write", "400"]);
}

#[test]
fn acknowledgements_out_of_real_time_order_are_reported() {
    let (mut history, _) = clean();
    let mut s = Synthetic::new();
    s.start = history.attempts[0].sent;
    // Acked at 90 ms with offset 9; a later write (sent at 100 ms) got 8.
    s.attempt(3, 0, 85, 90, Outcome::Ack(9))
        .attempt(3, 1, 100, 110, Outcome::Ack(8));
    history.attempts.extend(s.history.attempts);
    let problems = checker::check_ack_order(&history);
    assert_reports(&problems, &["out of real-time order", "offset 9", "lower offset 8"]);
    assert_eq!(problems.len(), 1, "{problems:#?}");
}

#[test]
fn two_acknowledgements_of_one_offset_are_reported() {
    let (mut history, logs) = clean();
    history.attempts[1].outcome = Outcome::Ack(0); // claims writer 0's offset
    let problems = checker::check_acks_present(&history, &logs);
    assert_reports(&problems, &["offset 0 was acknowledged twice"]);
}

#[test]
fn nodes_that_disagree_are_reported() {
    let (_, mut logs) = clean();
    logs[1].records.insert(2, value(8, 8));
    let problems = checker::check_logs_agree(&logs);
    assert_reports(&problems, &["offset 2 differs", "http://a", "http://b"]);
    // Differing only in how far they go is fine.
    let (_, mut logs) = clean();
    logs[1].records.remove(&6);
    assert!(checker::check_logs_agree(&logs).is_empty());
}

/// A frame as `src/log/record.rs` lays it out (the crc is not checked here).
fn frame(offset: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((3 + 8 + 8 + value.len()) as u32).to_le_bytes());
    out.extend_from_slice(&0xdead_beef_u32.to_le_bytes());
    out.extend_from_slice(&[1, 0, 0]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&1234u64.to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn frames(offsets: &[u64], value: &[u8]) -> Vec<Frame> {
    let body: Vec<u8> = offsets.iter().flat_map(|&o| frame(o, value)).collect();
    checker::parse_frames(&body).expect("frames parse")
}

#[test]
fn frames_are_parsed_and_compared_byte_for_byte_where_logs_overlap() {
    let a = frames(&[0, 1, 3, 4], b"{}");
    assert_eq!(a.iter().map(|f| f.offset).collect::<Vec<_>>(), [0, 1, 3, 4]);
    assert!(
        checker::parse_frames(&frame(0, b"{}")[..20]).is_err(),
        "a cut frame is refused"
    );

    let shorter = frames(&[0, 1, 3], b"{}");
    let same = checker::compare_frames(&[("http://a".into(), a.clone()), ("http://b".into(), shorter)]);
    assert!(same.is_empty(), "{same:#?}");

    let mut flipped = a.clone();
    let last = flipped[2].bytes.len() - 1;
    flipped[2].bytes[last] ^= 1;
    let problems = checker::compare_frames(&[("http://a".into(), a.clone()), ("http://b".into(), flipped)]);
    assert_reports(&problems, &["frame at offset 3 differs", "http://a", "http://b"]);

    let holey = frames(&[0, 3, 4], b"{}");
    let problems = checker::compare_frames(&[("http://a".into(), a), ("http://b".into(), holey)]);
    assert_reports(&problems, &["frame at offset 1 is on http://a but not on http://b"]);
}

#[test]
fn the_monitor_reports_a_changed_offset_and_a_shrinking_log_but_not_a_wipe() {
    let mut state = MonitorState::default();
    let full = [(0, value(0, 0)), (1, value(0, 1)), (2, value(0, 2))];
    state.observe("http://a", 0, &node("http://a", &full));
    state.observe("http://b", 0, &node("http://b", &full[..2])); // behind: fine
    assert!(state.problems.is_empty(), "{:#?}", state.problems);

    state.observe("http://b", 0, &node("http://b", &[(0, value(0, 0)), (1, value(7, 7))]));
    assert_reports(
        &state.problems,
        &["offset 1 changed", "http://a showed", "http://b showed"],
    );

    let mut state = MonitorState::default();
    state.observe("http://a", 0, &node("http://a", &full));
    state.observe("http://a", 0, &node("http://a", &full[..1]));
    assert_reports(&state.problems, &["http://a went back from end 3 to end 1"]);

    let mut state = MonitorState::default();
    state.observe("http://a", 0, &node("http://a", &full));
    state.node_wiped("http://a");
    state.observe("http://a", 0, &node("http://a", &full)); // a read from before the wipe: ignored
    state.observe("http://a", 1, &node("http://a", &[]));
    state.observe("http://a", 1, &node("http://a", &full[..1]));
    assert!(state.problems.is_empty(), "{:#?}", state.problems);
}

#[test]
fn the_seeded_randomness_replays_and_shuffles_into_permutations() {
    let mut a = XorShift::new(42);
    let mut b = XorShift::new(42);
    let xs: Vec<u64> = (0..10).map(|_| a.next_u64()).collect();
    assert_eq!(xs, (0..10).map(|_| b.next_u64()).collect::<Vec<_>>());
    assert_ne!(XorShift::new(43).next_u64(), xs[0]);
    assert_ne!(XorShift::new(0).next_u64(), 0, "seed 0 is not a fixed point");
    let mut items: Vec<usize> = (0..20).collect();
    a.shuffle(&mut items);
    let mut sorted = items.clone();
    sorted.sort();
    assert_eq!(sorted, (0..20).collect::<Vec<_>>());
    assert!((0..1000).all(|_| a.below(7) < 7));
}

// ---- writer, checker and monitor against real processes (no cluster) ----

/// A `distlog serve` process (not in cluster mode) killed on drop.
struct Plain {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Plain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn plain(extra: &[&str]) -> Plain {
    let dir = tempfile::tempdir().expect("a data directory");
    let port = common::cluster::free_ports(1)[0];
    let child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args([
            "serve",
            "--fsync",
            "never",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("distlog starts");
    let node = Plain {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while checker::read_visible(&node.url).await.is_err() {
        assert!(Instant::now() < deadline, "{} never answered", node.url);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node
}

#[tokio::test]
async fn writer_checker_and_monitor_agree_with_a_real_leader_and_replica_under_a_severed_link() {
    let leader = plain(&[]).await;
    let replica = plain(&["--follow", &leader.url]).await;
    // Writers reach the leader through a proxy (whose faults make Unknown
    // outcomes) and the replica directly (whose 307s they must follow).
    let proxy =
        FaultProxy::start(leader.url.trim_start_matches("http://").parse().expect("an address")).expect("proxy starts");
    let monitor =
        checker::VisibleMonitor::start(vec![leader.url.clone(), replica.url.clone()], Duration::from_millis(20));
    let load = Load::start(
        vec![proxy.url(), replica.url.clone()],
        LoadConfig {
            writers: 4,
            request_timeout: Duration::from_millis(500),
            ..LoadConfig::default()
        },
    );
    assert!(
        load.wait_for_more_acks(100, Duration::from_secs(20)).await,
        "no progress"
    );
    proxy.set_mode(Mode::Drop);
    tokio::time::sleep(Duration::from_millis(600)).await; // let requests through it time out
    proxy.set_mode(Mode::Sever);
    assert!(
        load.wait_for_more_acks(50, Duration::from_secs(20)).await,
        "no progress past the fault"
    );
    proxy.set_mode(Mode::Pass);
    assert!(
        load.wait_for_more_acks(50, Duration::from_secs(20)).await,
        "no progress after it"
    );
    let history = load.stop().await;
    eprintln!("{}", history.summary());
    let (acked, _, unknown) = history.count();
    assert!(acked >= 200, "{}", history.summary());
    assert!(
        unknown >= 1,
        "the dropped link must have left unknown outcomes: {}",
        history.summary()
    );
    assert!(
        history
            .attempts
            .iter()
            .any(|a| a.first_node == replica.url && a.acked_offset().is_some()),
        "writes sent to the replica were redirected and acked"
    );

    let problems = checker::check_cluster(
        &[leader.url.clone(), replica.url.clone()],
        &history,
        Duration::from_secs(20),
    )
    .await;
    checker::assert_clean("leader and replica", &problems);
    assert!(monitor.complete_reads() > 2, "the monitor never read");
    checker::assert_clean("monitor", &monitor.stop().await);

    // And the checker would have caught a lost acknowledgement.
    let mut forged = history.clone();
    let offset = forged.acked().filter_map(Attempt::acked_offset).max().expect("acks") + 1000;
    forged.attempts[0].outcome = Outcome::Ack(offset);
    let problems = checker::check_cluster(std::slice::from_ref(&leader.url), &forged, Duration::from_secs(5)).await;
    assert!(
        problems.iter().any(|p| p.contains(&format!("offset {offset}"))),
        "{problems:#?}"
    );
}
