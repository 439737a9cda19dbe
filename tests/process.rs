//! The real `distlog` binary: flags, the directory lock, SIGTERM, kill -9.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

struct Process {
    child: Child,
    url: String,
}

/// Starts `distlog serve` on an ephemeral port and waits for its
/// "serving" log line to learn the address.
fn spawn(dir: &Path, extra: &[&str]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("the server prints a serving line").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "distlog is serving" {
            break format!("http://{}", event["addr"].as_str().unwrap());
        }
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Process { child, url }
}

fn post(url: &str, body: &str) -> u64 {
    let response = reqwest::blocking_post(url, body);
    response["offset"].as_u64().unwrap()
}

mod reqwest {
    //! A tiny blocking helper on top of the async client.
    use serde_json::Value;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    pub fn blocking_post(url: &str, body: &str) -> Value {
        let body = body.to_string();
        runtime().block_on(async {
            let response = ::reqwest::Client::new()
                .post(format!("{url}/"))
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 201);
            response.json().await.unwrap()
        })
    }

    pub fn blocking_get(url: &str) -> (u16, Value) {
        runtime().block_on(async {
            let response = ::reqwest::get(url).await.unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or_default())
        })
    }
}

#[test]
fn kill_9_loses_no_acknowledged_record() {
    kill_9_with("always");
}

#[test]
fn kill_9_loses_no_acknowledged_record_with_fsync_never() {
    // Appends land in a mapped store: the page cache outlives the process.
    kill_9_with("never");
}

fn kill_9_with(fsync: &str) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(
        dir.path(),
        &[
            "--fsync",
            fsync,
            "--max-segment-bytes",
            "4096",
            "--max-record-bytes",
            "1024",
        ],
    );
    for i in 0..200 {
        assert_eq!(post(&server.url, &format!("{{\"i\":{i}}}")), i);
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let mut server = spawn(dir.path(), &[]);
    let (_, page) = reqwest::blocking_get(&format!("{}/?from=0&limit=1000", server.url));
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 200);
    assert!(records.iter().enumerate().all(|(i, r)| r["value"]["i"] == i));
    assert_eq!(post(&server.url, "{}"), 200);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn sigterm_shuts_down_gracefully_and_a_restart_serves_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(dir.path(), &["--fsync", "never"]);
    for i in 0..50 {
        post(&server.url, &format!("{{\"i\":{i}}}"));
    }
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = server.child.wait().unwrap();
    assert!(status.success(), "a graceful stop exits 0, got {status}");
    let index_sizes: Vec<u64> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "index"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .collect();
    assert_eq!(
        index_sizes,
        vec![50 * 12],
        "a clean close cuts the index to its entries"
    );

    let mut server = spawn(dir.path(), &[]);
    assert_eq!(reqwest::blocking_get(&format!("{}/49", server.url)).1["value"]["i"], 49);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn a_second_process_on_the_same_directory_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = spawn(dir.path(), &[]);
    let second = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let message = String::from_utf8_lossy(&second.stderr);
    assert!(message.contains("locked by another process"), "{message}");
    first.child.kill().unwrap();
    first.child.wait().unwrap();
}

#[test]
fn bad_flag_values_exit_non_zero_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (vec!["--max-record-bytes", "0"], "--max-record-bytes"),
        (vec!["--max-segment-bytes", "lots"], "--max-segment-bytes"),
        (vec!["--fsync", "sometimes"], "--fsync"),
        (vec!["--listen", "nowhere"], "--listen"),
        (vec!["--follow", "leader:8080"], "--follow"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_distlog"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?} must fail");
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(message.contains(flag), "{args:?}: {message}");
    }
    let env = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .env("DISTLOG_MAX_RECORD_BYTES", "0")
        .output()
        .unwrap();
    assert!(!env.status.success(), "flags are read from DISTLOG_* too");
}

#[test]
fn help_explains_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--data-dir",
        "--listen",
        "--max-segment-bytes",
        "--max-index-bytes",
        "--max-record-bytes",
        "--retention-bytes",
        "--retention-ms",
        "--fsync",
        "--fsync-interval-ms",
        "--log-format",
        "--follow",
    ] {
        assert!(help.contains(flag), "{flag} missing from help");
    }
    assert!(help.contains("DISTLOG_DATA_DIR") && help.contains("./distlog-data"));
}

#[test]
fn sighup_reloads_the_tls_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let issue = |cn: &str| {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (cert, key) = issue("first");
    let (cert_path, key_path) = (pki.path().join("cert.pem"), pki.path().join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let args = [
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    let mut server = spawn(dir.path(), &args);
    let port = server.url.rsplit(':').next().unwrap().to_string();
    let url = format!("https://localhost:{port}/healthz");
    let trusting = |pem: &str| {
        ::reqwest::Client::builder()
            .add_root_certificate(::reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
            .build()
            .unwrap()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ok = |client: ::reqwest::Client| runtime.block_on(async { client.get(&url).send().await.is_ok() });
    assert!(ok(trusting(&cert)));

    let (new_cert, new_key) = issue("second");
    std::fs::write(&cert_path, &new_cert).unwrap();
    std::fs::write(&key_path, &new_key).unwrap();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ok(trusting(&new_cert)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate is never served"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(!ok(trusting(&cert)), "the old certificate is gone for new connections");
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP does not stop the server"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn a_follower_killed_with_sigkill_resumes_without_gaps_or_repeats() {
    let (leader_dir, follower_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = spawn(leader_dir.path(), &["--fsync", "never"]);
    let follow = ["--follow", leader.url.as_str(), "--fsync", "always"];
    let mut follower = spawn(follower_dir.path(), &follow);
    for i in 0..300 {
        post(&leader.url, &format!("{{\"i\":{i}}}"));
    }
    let caught_up = |url: &str, next: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while reqwest::blocking_get(&format!("{url}/status")).1["next_offset"] != next {
            assert!(std::time::Instant::now() < deadline, "{url} never reached {next}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    caught_up(&follower.url, 300);
    follower.child.kill().unwrap(); // SIGKILL
    follower.child.wait().unwrap();

    for i in 300..500 {
        post(&leader.url, &format!("{{\"i\":{i}}}"));
    }
    let mut follower = spawn(follower_dir.path(), &follow);
    caught_up(&follower.url, 500);
    let (_, page) = reqwest::blocking_get(&format!("{}/?from=0&limit=1000", follower.url));
    let records = page["records"].as_array().unwrap();
    assert_eq!(records.len(), 500);
    assert!(
        records
            .iter()
            .enumerate()
            .all(|(i, r)| r["offset"] == i && r["value"]["i"] == i)
    );
    for child in [&mut follower.child, &mut leader.child] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// Runs `distlog serve` with `args` on `dir` and says how it ended: its exit
/// status and stderr if it exited, or `None` if it started serving (it is
/// killed then).
fn run_until_exit_or_serving(dir: &Path, args: &[&str]) -> Option<(std::process::ExitStatus, String)> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let serving = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("distlog is serving"));
    if serving {
        child.kill().unwrap();
        child.wait().unwrap();
        return None;
    }
    let output = child.wait_with_output().unwrap();
    Some((output.status, String::from_utf8_lossy(&output.stderr).into_owned()))
}

#[test]
fn a_segment_larger_than_the_free_space_is_refused_naming_the_flag_and_nothing_is_left_behind() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    // `always` first: were the check missing, `never` would allocate the
    // whole segment and fill the disk.
    for fsync in ["always", "never"] {
        let args = ["--fsync", fsync, "--max-segment-bytes", "1099511627776"];
        let (status, message) = run_until_exit_or_serving(&dir, &args)
            .unwrap_or_else(|| panic!("--fsync {fsync}: a 1 TiB segment must be refused, not served"));
        assert!(!status.success());
        assert!(
            message.contains("--max-segment-bytes") && message.contains("free"),
            "{message}"
        );
        assert!(
            !dir.exists(),
            "--fsync {fsync}: a refused start leaves no data directory"
        );
    }
    // A directory holding a log keeps it.
    let mut server = spawn(&dir, &[]);
    post(&server.url, "{\"kept\":true}");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let refused = run_until_exit_or_serving(&dir, &["--max-segment-bytes", "1099511627776"]);
    assert!(refused.is_some_and(|(status, _)| !status.success()));
    let mut after: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut before = before;
    before.sort();
    after.sort();
    assert_eq!(before, after, "a refused start removes nothing a previous run wrote");
    let mut server = spawn(&dir, &[]);
    assert_eq!(
        reqwest::blocking_get(&format!("{}/0", server.url)).1["value"]["kept"],
        true
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn a_small_segment_alone_defaults_the_record_limit_to_what_it_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(dir.path(), &["--max-segment-bytes", "4096"]);
    // A frame is the value plus a 27-byte header: 4069 bytes of value fill a segment.
    let record = |len: usize| format!("{{\"p\":\"{}\"}}", "x".repeat(len - 8));
    assert_eq!(record(4069).len(), 4069);
    assert_eq!(post(&server.url, &record(4069)), 0);
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            ::reqwest::Client::new()
                .post(format!("{}/", server.url))
                .body(record(4070))
                .send()
                .await
                .unwrap()
                .status()
        });
    assert_eq!(status, 413, "one byte more is too large");
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn a_record_limit_the_segment_cannot_hold_names_both_flags() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--max-segment-bytes", "4096", "--max-record-bytes", "8192"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(
        message.contains("--max-record-bytes 8192") && message.contains("--max-segment-bytes 4096"),
        "{message}"
    );
    assert!(message.contains("4069"), "says the largest that fits: {message}");
}
