//! The real `distlog` binary: flags, the directory lock, SIGTERM, kill -9.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

struct Process {
    child: Child,
    url: String,
    /// The lines it prints but the serving line, until it exits.
    lines: std::sync::mpsc::Receiver<String>,
}

/// Starts `distlog serve` on an ephemeral port and waits for its
/// "serving" log line to learn the address.
fn spawn(dir: &Path, extra: &[&str]) -> Process {
    spawn_with(dir, extra, |_| {})
}

/// `spawn`, with the command adjusted by `configure` first.
fn spawn_with(dir: &Path, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Process {
    spawn_on("127.0.0.1:0", dir, extra, configure)
}

/// `spawn_with`, listening on `listen`.
fn spawn_on(listen: &str, dir: &Path, extra: &[&str], configure: impl FnOnce(&mut Command)) -> Process {
    let mut command = Command::new(env!("CARGO_BIN_EXE_distlog"));
    command
        .args(["serve", "--listen", listen, "--log-format", "json", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    configure(&mut command);
    let mut child = command.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    // The lines before the serving line go to `lines` first.
    let (sender, received) = std::sync::mpsc::channel();
    let url = loop {
        let line = lines.next().expect("the server prints a serving line").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "distlog is serving" {
            break format!("http://{}", event["addr"].as_str().unwrap());
        }
        let _ = sender.send(line);
    };
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    Process {
        child,
        url,
        lines: received,
    }
}

/// A test that fails must not leave its server running.
impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

    /// The status (None when the connection failed) and JSON body, within 2 s.
    pub fn blocking_get_status(url: &str) -> (Option<u16>, Value) {
        runtime().block_on(async {
            let client = ::reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(2))
                .build()
                .unwrap();
            match client.get(url).send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (Some(status), response.json().await.unwrap_or_default())
                }
                Err(_) => (None, Value::Null),
            }
        })
    }

    /// `method url` with a JSON `body`: the status (None when the connection
    /// failed, as when the server dies answering) and the JSON body.
    pub fn blocking_request(method: &str, url: &str, body: &str) -> (Option<u16>, Value) {
        let (method, body) = (
            ::reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            body.to_string(),
        );
        runtime().block_on(async {
            let request = ::reqwest::Client::new()
                .request(method, url)
                .header("content-type", "application/json")
                .body(body);
            match request.send().await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    (Some(status), response.json().await.unwrap_or_default())
                }
                Err(_) => (None, Value::Null),
            }
        })
    }

    /// POST / and the status and JSON body, whatever the status.
    pub fn blocking_post_status(url: &str, body: &str) -> (u16, Value) {
        let body = body.to_string();
        runtime().block_on(async {
            let response = ::reqwest::Client::new()
                .post(format!("{url}/"))
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or_default())
        })
    }

    /// POST / as producer `id` (epoch 0) with sequence `seq`: status and body.
    pub fn blocking_produce(url: &str, id: &str, seq: u64, body: &str) -> (u16, Value) {
        let (id, body) = (id.to_string(), body.to_string());
        runtime().block_on(async {
            let response = ::reqwest::Client::new()
                .post(format!("{url}/"))
                .header("producer-id", id)
                .header("producer-seq", seq.to_string())
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or_default())
        })
    }

    /// `method` on `url` with a JSON body; the status and JSON body.
    pub fn blocking_send(method: ::reqwest::Method, url: &str, body: &str) -> (u16, Value) {
        let body = body.to_string();
        runtime().block_on(async {
            let response = ::reqwest::Client::new()
                .request(method, url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or_default())
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
fn kill_9_keeps_the_idempotent_producers() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(dir.path(), &["--fsync", "always", "--max-segment-bytes", "4096"]);
    for seq in 0..100u64 {
        let (status, _) = reqwest::blocking_produce(&server.url, "killed", seq, &format!("{{\"seq\":{seq}}}"));
        assert_eq!(status, 201);
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let mut server = spawn(dir.path(), &[]);
    for seq in [95u64, 99] {
        let (status, body) = reqwest::blocking_produce(&server.url, "killed", seq, "{}");
        assert_eq!(
            (status, &body["offset"], &body["duplicate"]),
            (200, &Value::from(seq), &Value::Bool(true))
        );
    }
    assert_eq!(
        reqwest::blocking_produce(&server.url, "killed", 94, "{}").0,
        409,
        "stale"
    );
    assert_eq!(
        reqwest::blocking_produce(&server.url, "killed", 101, "{}").0,
        409,
        "a gap"
    );
    assert_eq!(reqwest::blocking_produce(&server.url, "killed", 100, "{}").0, 201);
    let (_, page) = reqwest::blocking_get(&format!("{}/?from=0&limit=1000", server.url));
    assert_eq!(page["records"].as_array().unwrap().len(), 101);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn kill_9_loses_no_acknowledged_consumer_position() {
    use ::reqwest::Method;
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn(dir.path(), &["--fsync", "never"]);
    for i in 0..10 {
        post(&server.url, &format!("{{\"i\":{i}}}"));
    }
    let put = |url: &str, name: &str, offset: u64| {
        let body = format!("{{\"offset\":{offset}}}");
        reqwest::blocking_send(Method::PUT, &format!("{url}/consumers/{name}"), &body).0
    };
    for (name, offset) in (0..50).map(|i| (format!("c{i}"), i % 11)) {
        assert_eq!(put(&server.url, &name, offset), 200);
    }
    let (status, _) = reqwest::blocking_send(Method::DELETE, &format!("{}/consumers/c7", server.url), "");
    assert_eq!(status, 204);
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let mut server = spawn(dir.path(), &[]);
    let (status, list) = reqwest::blocking_get(&format!("{}/consumers", server.url));
    assert_eq!(status, 200);
    let listed: Vec<(String, u64)> = list["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap().to_string(), c["offset"].as_u64().unwrap()))
        .collect();
    let mut expected: Vec<(String, u64)> = (0..50).filter(|i| *i != 7).map(|i| (format!("c{i}"), i % 11)).collect();
    expected.sort();
    assert_eq!(listed, expected);
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
    // Grouped under headings, in this order, defaults with their units.
    let mut after = 0;
    for heading in ["Storage:", "HTTP:", "Security:", "Replica:", "Cluster:", "Telemetry:"] {
        let at = help.find(&format!("\n{heading}\n"));
        assert!(
            at.is_some_and(|at| at > after),
            "{heading} missing or out of order in\n{help}"
        );
        after = at.unwrap_or(after);
    }
    for default in [
        "[default: 256MiB]",
        "[default: 16MiB]",
        "[default: 100ms]",
        "[default: 10s]",
        "[default: 5s]",
    ] {
        assert!(help.contains(default), "{default} missing from help");
    }
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

/// Starts the child with RLIMIT_NOFILE set to `soft`/`hard` (lowering is
/// allowed without privileges).
fn with_open_files_limit(soft: u64, hard: u64) -> impl FnOnce(&mut Command) {
    move |command| {
        use std::os::unix::process::CommandExt;
        // SAFETY: only setrlimit, async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

fn hard_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    limit.rlim_max
}

/// The soft and hard "Max open files" of a running process.
fn open_files_limit_of(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    (numbers[0], numbers[1])
}

#[test]
fn the_soft_open_files_limit_is_raised_to_the_hard_limit() {
    let hard = hard_open_files_limit();
    let soft = (hard / 2).min(1024);
    assert!(soft < hard, "the hard limit {hard} leaves nothing to raise");
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_with(dir.path(), &[], with_open_files_limit(soft, hard));
    assert_eq!(
        open_files_limit_of(server.child.id()),
        (hard, hard),
        "started with soft {soft}"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn three_hundred_silent_sockets_under_256_descriptors_do_not_lock_clients_out() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = spawn_with(
        dir.path(),
        &["--header-timeout-ms", "500"],
        with_open_files_limit(256, 256),
    );
    let addr = server.url.trim_start_matches("http://").to_string();
    let silent: Vec<std::net::TcpStream> = (0..300).map(|_| std::net::TcpStream::connect(&addr).unwrap()).collect();
    let started = std::time::Instant::now();
    let served = loop {
        let (status, body) = reqwest::blocking_get_status(&format!("{}/status", server.url));
        if status == Some(200) {
            break body;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "no client served 10 s after 300 silent sockets (last: {status:?})"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(served["role"], "leader");
    drop(silent);
    server.child.kill().unwrap();
    server.child.wait().unwrap();
}

#[test]
fn the_access_log_is_off_by_default_and_on_with_access_log() {
    for (flags, logged) in [(&[][..], false), (&["--access-log"][..], true)] {
        let dir = tempfile::tempdir().unwrap();
        let mut server = spawn_with(dir.path(), flags, |command| {
            command.env_remove("RUST_LOG");
        });
        post(&server.url, "{}");
        let pid = server.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        assert!(server.child.wait().unwrap().success());
        // Written by a background thread: all of it is out once stdout closed.
        let lines: Vec<String> = server.lines.iter().collect();
        let access: Vec<&String> = lines.iter().filter(|l| l.contains("\"message\":\"request\"")).collect();
        assert_eq!(access.len(), usize::from(logged), "flags {flags:?}: {lines:#?}");
        assert!(
            access.iter().all(|l| l.contains("\"target\":\"distlog::access\"")),
            "{access:?}"
        );
        assert!(lines.iter().any(|l| l.contains("log synced and closed")), "{lines:#?}");
    }
}

#[test]
fn a_start_that_cannot_bind_leaves_no_data_directory_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let output = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--log-format", "json", "--listen", &addr, "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success(), "the port is taken: the start must fail");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains(&addr), "the error names the address: {message}");
    assert!(
        !dir.exists(),
        "a start that failed to bind left {:?}",
        std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().file_name()).collect::<Vec<_>>())
    );
}

#[test]
fn a_standalone_data_directory_refuses_peers_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = spawn(dir.path(), &[]);
        post(&node.url, r#"{"standalone":true}"#);
    }
    let (status, stderr) = run_until_exit_or_serving(dir.path(), &["--peers", "http://127.0.0.1:9"])
        .expect("a standalone log with --peers is refused before serving");
    assert!(!status.success());
    assert!(
        stderr.contains("standalone log") && stderr.contains("--peers"),
        "the error says why: {stderr}"
    );
}

/// `distlog healthcheck` (the container image's HEALTHCHECK): 0 when /readyz answers 200, 1 with
/// the reason on stderr when nothing answers; DISTLOG_LISTEN's wildcard address means loopback.
#[test]
fn healthcheck_exits_0_against_a_ready_node_and_1_against_a_closed_port() {
    let dir = tempfile::tempdir().unwrap();
    let server = spawn(dir.path(), &[]);
    let healthcheck = |args: &[&str], listen: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_distlog"));
        command
            .arg("healthcheck")
            .args(args)
            .env_remove("DISTLOG_HEALTHCHECK_URL");
        match listen {
            Some(listen) => command.env("DISTLOG_LISTEN", listen),
            None => command.env_remove("DISTLOG_LISTEN"),
        };
        command.output().unwrap()
    };
    let ok = healthcheck(&["--url", &server.url], None);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let port = server.url.rsplit(':').next().unwrap();
    let from_env = healthcheck(&[], Some(&format!("0.0.0.0:{port}")));
    assert!(
        from_env.status.success(),
        "{}",
        String::from_utf8_lossy(&from_env.stderr)
    );

    // A port nothing listens on (bound, then released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let failed = healthcheck(&["--url", &format!("http://{closed}"), "--timeout-ms", "1000"], None);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("/readyz"), "says what it tried: {stderr}");
}

/// `distlog healthcheck` with exactly `env` (nothing inherited) and `args`.
fn healthcheck_with(env: &[(&str, &Path)], plain: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_distlog"))
        .arg("healthcheck")
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())))
        .envs(plain.iter().map(|(k, v)| (*k, std::ffi::OsStr::new(v))))
        .output()
        .unwrap()
}

/// A certificate for `names`, self-signed or signed by `ca`; its PEM and its key's.
fn issue(names: &[&str], ca: Option<&(rcgen::Certificate, rcgen::KeyPair)>) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = match ca {
        Some((ca_cert, ca_key)) => params.signed_by(&key, ca_cert, ca_key).unwrap(),
        None => params.self_signed(&key).unwrap(),
    };
    (cert, key)
}

/// The image's HEALTHCHECK runs `distlog healthcheck` with the node's own environment: over https
/// when DISTLOG_TLS_CERT is set, accepting that very certificate (self-signed, for a name that is
/// not the loopback address it dials), and with --protect-metrics sending the token of the token
/// file's admin. Without the token the node refuses it (401): the token is what makes it pass.
#[test]
fn healthcheck_passes_over_tls_and_with_protected_metrics_from_the_nodes_own_settings() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let (cert, key) = issue(&["node1.example"], None);
    let file = |name: &str, text: &str| {
        let path = pki.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let cert_path = file("cert.pem", &cert.pem());
    let key_path = file("key.pem", &key.serialize_pem());
    let tokens = file("tokens", &format!("app {}\nops {}\n", "a".repeat(40), "o".repeat(40)));
    let acl = file("acl", "app produce\nops admin\n");
    let node_env = [
        ("DISTLOG_TLS_CERT", cert_path.as_path()),
        ("DISTLOG_TLS_KEY", key_path.as_path()),
        ("DISTLOG_TOKEN_FILE", tokens.as_path()),
        ("DISTLOG_ACL", acl.as_path()),
    ];
    let server = spawn_with(dir.path(), &["--protect-metrics"], |command| {
        command.envs(node_env.iter().map(|(k, v)| (*k, v.as_os_str())));
    });
    let port = server.url.rsplit(':').next().unwrap();
    let listen = format!("0.0.0.0:{port}");
    let plain = [("DISTLOG_LISTEN", listen.as_str()), ("DISTLOG_PROTECT_METRICS", "true")];

    let ok = healthcheck_with(&node_env, &plain, &[]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let explicit = healthcheck_with(&node_env[..2], &plain, &["--token", &"o".repeat(40)]);
    assert!(
        explicit.status.success(),
        "{}",
        String::from_utf8_lossy(&explicit.stderr)
    );

    let no_token = healthcheck_with(&node_env[..2], &plain, &[]);
    assert_eq!(no_token.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&no_token.stderr);
    assert!(
        stderr.contains("https://127.0.0.1:") && stderr.contains("401"),
        "{stderr}"
    );

    // Another certificate than the node's own (and no CA) is refused.
    let (other, _) = issue(&["node1.example"], None);
    let other_path = file("other.pem", &other.pem());
    let refused = healthcheck_with(
        &[("DISTLOG_TLS_CERT", other_path.as_path())],
        &plain,
        &["--token", &"o".repeat(40)],
    );
    assert_eq!(
        refused.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// With a CA (DISTLOG_TLS_CLIENT_CA, or --ca) the node's certificate is checked for the host of its
/// advertise URL while the check dials 127.0.0.1, and a node that requires client certificates
/// gets DISTLOG_PEER_CERT's. A certificate for another name fails.
#[test]
fn healthcheck_checks_a_ca_signed_certificate_for_the_advertise_host_with_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = (ca_params.self_signed(&ca_key).unwrap(), ca_key);
    let (server_cert, server_key) = issue(&["node1.example"], Some(&ca));
    let (peer_cert, peer_key) = issue(&["node1-peer"], Some(&ca));
    let file = |name: &str, text: String| {
        let path = pki.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_path = file("ca.pem", ca.0.pem());
    let (cert_path, key_path) = (
        file("cert.pem", server_cert.pem()),
        file("key.pem", server_key.serialize_pem()),
    );
    let (peer_cert_path, peer_key_path) = (
        file("peer.pem", peer_cert.pem()),
        file("peer-key.pem", peer_key.serialize_pem()),
    );
    let server = spawn(
        dir.path(),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
            "--tls-client-ca",
            ca_path.to_str().unwrap(),
        ],
    );
    let port = server.url.rsplit(':').next().unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let node_env = [
        ("DISTLOG_TLS_CLIENT_CA", ca_path.as_path()),
        ("DISTLOG_PEER_CERT", peer_cert_path.as_path()),
        ("DISTLOG_PEER_KEY", peer_key_path.as_path()),
    ];
    let advertise = format!("https://node1.example:{port}");
    let ok = healthcheck_with(&node_env, &[("DISTLOG_ADVERTISE_URL", &advertise)], &["--url", &url]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    let by_flag = healthcheck_with(
        &node_env[1..],
        &[("DISTLOG_ADVERTISE_URL", &advertise)],
        &["--url", &url, "--ca", ca_path.to_str().unwrap()],
    );
    assert!(by_flag.status.success(), "{}", String::from_utf8_lossy(&by_flag.stderr));

    let wrong_name = format!("https://node2.example:{port}");
    let refused = healthcheck_with(&node_env, &[("DISTLOG_ADVERTISE_URL", &wrong_name)], &["--url", &url]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let no_client_cert = healthcheck_with(
        &node_env[..1],
        &[("DISTLOG_ADVERTISE_URL", &advertise)],
        &["--url", &url],
    );
    assert_eq!(
        no_client_cert.status.code(),
        Some(1),
        "the node requires a client certificate"
    );
}

/// A port nothing listens on now (bound, then let go).
fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A seed that never comes up: the cluster cannot form, and the waiting
/// node says so, naming the seed, to writers (503 `no_leader`), on
/// `/readyz`, and in its log, again at WARN every few seconds.
#[test]
fn a_node_waiting_for_a_seed_names_it_to_writers_readyz_and_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let (own, missing) = (unused_port(), unused_port());
    let missing_url = format!("http://127.0.0.1:{missing}");
    let peers = format!("http://127.0.0.1:{own},{missing_url}");
    let node = spawn_on(&format!("127.0.0.1:{own}"), dir.path(), &["--peers", &peers], |_| {});
    let waiting = format!("cluster not formed: waiting for {missing_url} to answer");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let (status, body) = loop {
        let answer = reqwest::blocking_post_status(&node.url, r#"{"a":1}"#);
        if answer.1["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("cluster not formed: waiting for"))
            || std::time::Instant::now() > deadline
        {
            break answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "no_leader", "{body}");
    assert!(body["error"].as_str().unwrap_or("").starts_with(&waiting), "{body}");

    let (status, body) = reqwest::blocking_get_status(&format!("{}/readyz", node.url));
    assert_eq!(status, Some(503), "{body}");
    assert!(body["error"].as_str().unwrap_or("").starts_with(&waiting), "{body}");

    // Said at once, then again at WARN while it waits; and, since no
    // caller is authenticated, that the peer routes are open.
    let mut open_routes = None;
    let mut warned = None;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while warned.is_none() && std::time::Instant::now() < deadline {
        let Ok(line) = node.lines.recv_timeout(std::time::Duration::from_secs(1)) else {
            continue;
        };
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        let message = event["message"].as_str().unwrap_or_default();
        if event["level"] == "WARN" && message.starts_with("cluster peer routes are not authenticated") {
            open_routes = Some(event.clone());
        }
        if event["level"] == "WARN" && message == "the cluster is not formed yet" {
            warned = Some(event);
        }
    }
    assert!(
        open_routes.is_some(),
        "a member without authentication warns that its peer routes are open"
    );
    let warned = warned.expect("a WARN line within 15 s while the cluster cannot form");
    assert!(warned["why"].as_str().unwrap_or("").contains(&missing_url), "{warned}");
}

/// With one member down, the leader's default log says so once (WARN,
/// naming the peer and its URL), not at every heartbeat: openraft's
/// per-RPC errors stay at debug. Run without RUST_LOG, as an operator would.
#[test]
fn a_leader_with_a_peer_down_logs_the_change_not_every_heartbeat() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| unused_port()).collect();
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let peers = urls.join(",");
    let mut nodes: Vec<Option<Process>> = (0..3)
        .map(|i| {
            let listen = format!("127.0.0.1:{}", ports[i]);
            Some(spawn_on(&listen, dirs[i].path(), &["--peers", &peers], |c| {
                c.env_remove("RUST_LOG");
            }))
        })
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let leader = loop {
        let leading = urls.iter().position(|url| {
            let (_, status) = reqwest::blocking_get_status(&format!("{url}/status"));
            status["role"] == "leader"
        });
        if let Some(leader) = leading {
            break leader;
        }
        assert!(std::time::Instant::now() < deadline, "no leader within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    // A fresh leader may still answer 503 for a moment (its first entry not yet committed).
    while reqwest::blocking_post_status(&urls[leader], r#"{"before":"the kill"}"#).0 != 201 {
        assert!(std::time::Instant::now() < deadline, "no write accepted within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let victim = (leader + 1) % 3;
    let leader_node = nodes[leader].take().unwrap();
    while leader_node.lines.try_recv().is_ok() {}
    drop(nodes[victim].take());

    // A few seconds of a peer down: some fifty heartbeats at the default 100 ms.
    let watched = std::time::Duration::from_secs(5);
    let until = std::time::Instant::now() + watched;
    let mut warnings = Vec::new();
    while let Some(left) = until.checked_duration_since(std::time::Instant::now()) {
        let Ok(line) = leader_node.lines.recv_timeout(left) else {
            break;
        };
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        if event["level"] == "WARN" || event["level"] == "ERROR" {
            warnings.push(line);
        }
    }
    eprintln!("the leader wrote {} WARN/ERROR lines in {watched:?}", warnings.len());
    assert!(
        warnings.len() <= 2,
        "{} WARN/ERROR lines in {watched:?} with one peer down:\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("unreachable") && l.contains(&urls[victim])),
        "one line names the peer that went away: {warnings:#?}"
    );
    drop(nodes);
}

/// A refused start is one line on stderr, each cause once, no backtrace
/// even when RUST_BACKTRACE asks for one.
#[test]
fn a_refused_start_is_one_line_without_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-record-bytes",
            "0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].starts_with("distlog: invalid --max-record-bytes 0"),
        "{stderr}"
    );
}

/// A data directory distlog may not create or write names the `chown`
/// that fixes it, the container's 10001:10001 too, and says the cause once.
/// As root (which any directory lets in) the binary runs as nobody.
#[test]
fn a_data_directory_without_permission_says_what_to_chown() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let dir = parent.path().join("data");
    let mut command = Command::new(env!("CARGO_BIN_EXE_distlog"));
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("RUST_BACKTRACE", "1");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        command.uid(65534).gid(65534);
    }
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => {
            eprintln!("skipped: nobody cannot run {}: {e}", env!("CARGO_BIN_EXE_distlog"));
            return;
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert_eq!(
        lines[0].matches("Permission denied").count(),
        1,
        "the cause once: {stderr}"
    );
    assert!(
        lines[0].contains("chown -R") && lines[0].contains("10001:10001"),
        "{stderr}"
    );
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A crash at each step of creating or deleting a named log (the process
/// aborts at a named crash point) leaves a state that opens: before the
/// commit point the change never happened, after it the change is whole,
/// and nothing half-made is left in `logs/`.
#[test]
fn a_crash_at_each_step_of_creating_or_deleting_a_named_log_leaves_a_state_that_opens() {
    use distlog::cluster::FAILPOINT_ENV;
    use distlog::cluster::failpoint::{LOG_CREATE_AFTER_RENAME, LOG_CREATE_BEFORE_RENAME, LOG_DELETE_AFTER_RENAME};
    for (point, method, exists_after) in [
        (LOG_CREATE_BEFORE_RENAME, "PUT", false),
        (LOG_CREATE_AFTER_RENAME, "PUT", true),
        (LOG_DELETE_AFTER_RENAME, "DELETE", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        if method == "DELETE" {
            let node = spawn(dir.path(), &[]);
            let created = reqwest::blocking_request("PUT", &format!("{}/logs/orders", node.url), "{}");
            assert_eq!(created.0, Some(201));
            let appended = reqwest::blocking_request("POST", &format!("{}/logs/orders/", node.url), "{}");
            assert_eq!(appended.0, Some(201));
        }
        let mut node = spawn_with(dir.path(), &[], |c| {
            c.env(FAILPOINT_ENV, format!("{point}:abort"));
        });
        let (status, _) = reqwest::blocking_request(method, &format!("{}/logs/orders", node.url), "{}");
        assert_eq!(status, None, "{point}: the process dies before it answers");
        let exit = node.child.wait().unwrap();
        assert!(!exit.success(), "{point}: aborted ({exit})");

        let node = spawn(dir.path(), &[]);
        let (status, body) = reqwest::blocking_get_status(&format!("{}/logs/orders", node.url));
        let expected = if exists_after { 200 } else { 404 };
        assert_eq!(status, Some(expected), "{point}: {body}");
        let leftovers: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{point}: {leftovers:?}");
        let again = reqwest::blocking_request("PUT", &format!("{}/logs/orders", node.url), "{}");
        assert_eq!(
            again.0,
            Some(if exists_after { 200 } else { 201 }),
            "{point}: {}",
            again.1
        );
        let appended = reqwest::blocking_request("POST", &format!("{}/logs/orders/", node.url), "{}");
        assert_eq!(appended.1["offset"], 0, "{point}: a log made anew starts at 0");
    }
}

/// A creation whose log fails to open after the rename that made it exist
/// (the crash point's `error`, once) answers the error and leaves the name
/// free: no directory the catalogue does not serve.
#[test]
fn a_creation_that_fails_after_its_rename_leaves_the_name_free() {
    use distlog::cluster::FAILPOINT_ENV;
    use distlog::cluster::failpoint::LOG_CREATE_AFTER_RENAME;
    let dir = tempfile::tempdir().unwrap();
    let node = spawn_with(dir.path(), &[], |c| {
        c.env(FAILPOINT_ENV, format!("{LOG_CREATE_AFTER_RENAME}:error"));
    });
    let url = format!("{}/logs/orders", node.url);
    let (status, body) = reqwest::blocking_request("PUT", &url, "{}");
    assert_eq!(status, Some(503), "{body}");
    assert_eq!(reqwest::blocking_get_status(&url).0, Some(404), "the name is free");
    let entries = std::fs::read_dir(dir.path().join("logs")).unwrap().count();
    assert_eq!(entries, 0, "nothing left in logs/");
    assert_eq!(
        reqwest::blocking_request("PUT", &url, "{}").0,
        Some(201),
        "created at the next try"
    );
}

/// `distlog ARGS...` (a client subcommand): its exit status and stdout; stderr is shown.
fn distlog_cli(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(args)
        .env_remove("DISTLOG_URL")
        .env_remove("DISTLOG_TOKEN")
        .output()
        .unwrap();
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// `distlog cluster status --json` through `seeds` once it answers with a leader and `wanted`
/// holds of it, within 30 s.
fn cluster_status_until(seeds: &str, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (ok, out) = distlog_cli(&["cluster", "status", "--json", "--retry-for", "2s", "--url", seeds]);
        let status: Value = serde_json::from_str(&out).unwrap_or_default();
        if ok && !status["leader_id"].is_null() && wanted(&status) {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "never {what}: {status}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// The voters' URLs in a `/cluster` answer.
fn voter_urls(status: &Value) -> Vec<String> {
    let mut urls: Vec<String> = status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["voter"] == true)
        .filter_map(|m| m["url"].as_str().map(str::to_string))
        .collect();
    urls.sort();
    urls
}

/// The scale-down and scale-up of docs/operations.md and deploy/kubernetes, on three real
/// processes: `distlog cluster remove` of the highest node (after `distlog cluster leader` away
/// from it if it leads), then it is stopped; the two others take writes with two voters; started
/// again on its own directory with DISTLOG_REJOIN=true (the StatefulSet's setting) it asks to be
/// added back and is a voter again, with the records written while it was away.
#[test]
fn the_documented_scale_down_removes_the_highest_node_and_rejoin_brings_it_back_as_a_voter() {
    scale_down_and_up(false);
}

/// The same with peers on ports of their own, as the Kubernetes base runs
/// them: membership changes go to the peer port, and the rejoining node
/// asks the leader there.
#[test]
fn the_documented_scale_down_and_rejoin_work_with_peer_ports() {
    scale_down_and_up(true);
}

fn scale_down_and_up(peer_ports: bool) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let ports: Vec<u16> = (0..3).map(|_| unused_port()).collect();
    let peer_ports: Option<Vec<u16>> = peer_ports.then(|| (0..3).map(|_| unused_port()).collect());
    let urls: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let peers = urls.join(",");
    // Where membership changes go: the peer ports when there are some.
    let admin_urls = match &peer_ports {
        Some(p) => p
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(","),
        None => urls.join(","),
    };
    let start = |i: usize, rejoin: bool| {
        let listen = format!("127.0.0.1:{}", ports[i]);
        let peer_listen = peer_ports.as_ref().map(|p| format!("127.0.0.1:{}", p[i]));
        let mut args = vec!["--peers", &peers];
        if let Some(peer_listen) = &peer_listen {
            args.extend(["--peer-listen", peer_listen.as_str()]);
        }
        spawn_on(&listen, dirs[i].path(), &args, |command| {
            command.env_remove("DISTLOG_REJOIN");
            if rejoin {
                command.env("DISTLOG_REJOIN", "true");
            }
        })
    };
    let mut nodes: Vec<Option<Process>> = (0..3).map(|i| Some(start(i, true))).collect();
    let all = urls.join(",");
    cluster_status_until(&all, "3 voters", |s| voter_urls(s).len() == 3);
    // Long formed, as a StatefulSet being scaled is: every node has heard from the leader.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for url in &urls {
        loop {
            let (_, own) = reqwest::blocking_get_status(&format!("{url}/cluster"));
            if own["initialized"] == true && !own["leader_id"].is_null() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{url} never formed: {own}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let status = cluster_status_until(&all, "3 voters", |s| voter_urls(s).len() == 3);
    let (first, _) = reqwest::blocking_post_status(&urls[0], r#"{"before":"scale-down"}"#);
    assert_eq!(first, 201);

    // 1. The highest node's id; if it leads, leadership goes to another voter first.
    let id_of = |status: &Value, url: &str| {
        status["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["url"] == url)
            .and_then(|m| m["id"].as_u64())
            .unwrap()
    };
    let highest = id_of(&status, &urls[2]);
    if status["leader_id"].as_u64() == Some(highest) {
        let other = id_of(&status, &urls[0]).to_string();
        assert!(distlog_cli(&["cluster", "leader", &other, "--url", &admin_urls]).0);
        cluster_status_until(&all, "a new leader", |s| s["leader_id"].as_u64() != Some(highest));
    }
    // 2. `distlog cluster remove ID`, and wait until it is out of the members.
    let (removed, table) = distlog_cli(&["cluster", "remove", &highest.to_string(), "--url", &admin_urls]);
    assert!(removed, "{table}");
    let two = urls[..2].join(",");
    let mut remaining = urls[..2].to_vec();
    remaining.sort();
    let status = cluster_status_until(&two, "2 voters", |s| voter_urls(s) == remaining);
    assert_eq!(status["members"].as_array().unwrap().len(), 2, "{status}");
    // The removed node, still running, finds out and says so (a load balancer takes it out).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, body) = reqwest::blocking_get_status(&format!("{}/readyz", urls[2]));
        if (code, &body["code"]) == (Some(503), &Value::from("removed")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never says removed: {code:?} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // 3. Stopped (`kubectl scale --replicas=2` deletes its pod); the two others take writes.
    let mut gone = nodes[2].take().unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &gone.child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    gone.child.wait().unwrap();
    for (i, url) in urls[..2].iter().enumerate() {
        let (status, body) = reqwest::blocking_post_status(url, &format!(r#"{{"after":"scale-down","via":{i}}}"#));
        assert_eq!(status, 201, "{body}");
    }
    let (ok, table) = distlog_cli(&["cluster", "status", "--url", &two]);
    assert!(
        ok && table.lines().filter(|l| l.contains("127.0.0.1")).count() == 2,
        "{table}"
    );

    // 4. Scale up: the pod comes back on its volume with DISTLOG_REJOIN=true and is a voter again.
    nodes[2] = Some(start(2, true));
    let status = cluster_status_until(&all, "the node back as a voter", |s| voter_urls(s).len() == 3);
    assert_eq!(id_of(&status, &urls[2]), highest, "the same id, from its own directory");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, body) = reqwest::blocking_get_status(&format!("{}/?from=0&limit=10", urls[2]));
        let records = body["records"].as_array().map_or(0, Vec::len);
        if code == Some(200) && records == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node never caught up: {code:?} {body}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Polls `url` until it answers `want` (within `within`): the last status
/// (None: no answer) and body.
fn poll_status(url: &str, want: u16, within: std::time::Duration) -> (Option<u16>, Value) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let answer = reqwest::blocking_get_status(url);
        if answer.0 == Some(want) || std::time::Instant::now() > deadline {
            return answer;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A child process killed when the test ends, pass or fail.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issue 19 item 4: a member whose start checks its log slowly (the crash
/// point holds the check until the test lets it go, as a cold disk would)
/// answers meanwhile: `/healthz` 200 (a liveness probe must not kill it),
/// `/readyz` 503 saying it checks the log, and every other route, a peer's
/// Raft message included, 503 `starting`. Let go, it becomes ready.
#[test]
fn a_member_answers_probes_while_it_checks_its_log_then_becomes_ready() {
    use distlog::cluster::FAILPOINT_ENV;
    use distlog::cluster::failpoint::STARTUP_CHECK;
    let (dir, signals) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let listen = format!("127.0.0.1:{}", unused_port());
    let url = format!("http://{listen}");
    {
        let node = spawn_on(&listen, dir.path(), &["--peers", &url], |_| {});
        let (status, body) = poll_status(&format!("{}/readyz", node.url), 200, std::time::Duration::from_secs(30));
        assert_eq!(status, Some(200), "a one-node cluster gets ready: {body}");
        assert_eq!(reqwest::blocking_post_status(&node.url, r#"{"a":1}"#).0, 201);
    }
    let go = signals.path().join("go");
    let child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", &listen, "--peers", &url, "--data-dir"])
        .arg(dir.path())
        .env(FAILPOINT_ENV, format!("{STARTUP_CHECK}:until={}", go.display()))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _node = Killed(child);

    let (status, body) = poll_status(&format!("{url}/healthz"), 200, std::time::Duration::from_secs(20));
    assert_eq!(status, Some(200), "/healthz answers while the log is checked: {body}");
    // The listener answers from the start's first step (opening the log),
    // which a loaded machine can make last: wait for the check's step.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (status, body) = loop {
        let (status, body) = reqwest::blocking_get_status(&format!("{url}/readyz"));
        let opening = body["error"].as_str() == Some("opening the log");
        if !opening || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status, Some(503), "{body}");
    assert_eq!(body["code"], "starting", "{body}");
    let reason = body["error"].as_str().unwrap_or_default();
    assert!(reason.starts_with("checking the log: 0 of "), "{body}");
    let (status, body) = reqwest::blocking_post_status(&url, r#"{"a":2}"#);
    assert_eq!((status, &body["code"]), (503, &Value::from("starting")), "{body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("checking the log"),
        "{body}"
    );
    for (method, path) in [
        ("POST", "/raft/vote"),
        ("POST", "/raft/append"),
        ("GET", "/cluster"),
        ("GET", "/0"),
    ] {
        let (status, body) = reqwest::blocking_request(method, &format!("{url}{path}"), "{}");
        assert_eq!(status, Some(503), "{method} {path}: {body}");
        assert_eq!(body["code"], "starting", "{method} {path}: {body}");
    }

    std::fs::write(&go, b"").unwrap();
    let (status, body) = poll_status(&format!("{url}/readyz"), 200, std::time::Duration::from_secs(30));
    assert_eq!(status, Some(200), "ready once the check is done: {body}");
    let (status, body) = reqwest::blocking_post_status(&url, r#"{"a":3}"#);
    assert_eq!(status, 201, "{body}");
}

/// Every segment file in `dir` by name, with a store's length and
/// checksum up to its last nonzero byte (an index is derived from its
/// store: an open may rewrite it).
fn segment_files(dir: &Path) -> std::collections::BTreeMap<String, (usize, u32)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "store" || x == "index"))
        .map(|p| {
            let is_store = p.extension().is_some_and(|x| x == "store");
            let bytes = if is_store {
                std::fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            // Without the zeros past the last frame: an open trims the active
            // segment's preallocated tail, which holds nothing.
            let written = bytes.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
            let bytes = &bytes[..written];
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, (bytes.len(), crc32fast::hash(bytes)))
        })
        .collect()
}

/// The segment store files of `dir`, in offset order.
fn sorted_stores(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut stores: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "store"))
        .collect();
    stores.sort();
    stores
}

/// Flips the last byte of the second segment's store: its last frame, which
/// the engine checks when it opens a sealed segment.
fn rot_the_second_segment(dir: &Path) {
    let stores = sorted_stores(dir);
    assert!(stores.len() >= 3, "several sealed segments: {stores:?}");
    let mut bytes = std::fs::read(&stores[1]).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x5a;
    std::fs::write(&stores[1], bytes).unwrap();
}

/// Issue 19 item 15 (a review of a cut at open): a standalone directory
/// with a corrupt sealed segment started with --peers is refused as a
/// standalone log before anything is moved or deleted.
#[test]
fn a_corrupt_standalone_directory_started_with_peers_is_refused_and_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    {
        let node = spawn(dir.path(), &["--max-segment-bytes", "4096"]);
        for i in 0..300 {
            post(&node.url, &format!(r#"{{"standalone":{i}}}"#));
        }
    }
    rot_the_second_segment(dir.path());
    let before = segment_files(dir.path());
    let (status, stderr) = run_until_exit_or_serving(
        dir.path(),
        &["--max-segment-bytes", "4096", "--peers", "http://127.0.0.1:9"],
    )
    .expect("refused before serving");
    assert!(!status.success());
    assert!(
        stderr.contains("standalone log") && stderr.contains("corrupt"),
        "the error says why: {stderr}"
    );
    assert_eq!(
        segment_files(dir.path()),
        before,
        "every segment file is there, unchanged"
    );
    assert!(!dir.path().join("quarantine").exists(), "nothing moved aside");
    assert!(!dir.path().join("raft").exists(), "and it did not become a member's");
}

/// Starts a node on `port` with `args`, writes 300 records through it
/// (retrying until it takes writes, at most 30 s), and kills it.
fn write_300_records_then_kill(port: u16, dir: &Path, args: &[&str]) {
    let node = spawn_on(&format!("127.0.0.1:{port}"), dir, args, |_| {});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut written = 0;
    while written < 300 {
        match reqwest::blocking_post_status(&node.url, &format!(r#"{{"member":{written}}}"#)).0 {
            201 => written += 1,
            _ => {
                assert!(std::time::Instant::now() < deadline, "no write accepted within 30 s");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Issue 19 item 15 (a review of a cut at open): a one-node cluster whose
/// sealed segment rotted holds the only copy of its records: it refuses to
/// start, saying what to do, and moves or deletes nothing.
#[test]
fn a_one_node_cluster_with_a_corrupt_sealed_segment_refuses_and_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = unused_port();
    let url = format!("http://127.0.0.1:{port}");
    let args = ["--max-segment-bytes", "4096", "--peers", &url];
    write_300_records_then_kill(port, dir.path(), &args);
    rot_the_second_segment(dir.path());
    let before = segment_files(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("a one-node cluster with a corrupt sealed segment is still running after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("corrupt") && stderr.contains("no leader") && stderr.contains("nothing was moved"),
        "the error says why and what to do: {stderr}"
    );
    assert_eq!(
        segment_files(dir.path()),
        before,
        "every segment file is there, unchanged"
    );
    assert!(!dir.path().join("quarantine").exists(), "nothing moved aside");
}

/// Review of `sealed`: a one-node cluster whose sealed segment rotted
/// inside (not its last frame, which the open checks: the checksum scan of
/// segments no start has read finds it) holds the only copy of its records
/// as much as one whose last frame rotted. The scan's fault cuts the log
/// before the bad frame (`keep_before`: deleted, not moved aside) and took
/// a new id, whatever the cluster could supply (failed before the cut was
/// gated). With no leader to catch up from, the start is refused and every
/// file is kept.
#[test]
fn a_one_node_cluster_whose_sealed_segment_rotted_inside_keeps_every_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = unused_port();
    let url = format!("http://127.0.0.1:{port}");
    let args = ["--max-segment-bytes", "4096", "--peers", &url];
    write_300_records_then_kill(port, dir.path(), &args);
    let stores = sorted_stores(dir.path());
    assert!(stores.len() >= 3, "several sealed segments: {stores:?}");
    let mut bytes = std::fs::read(&stores[1]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x5a;
    std::fs::write(&stores[1], bytes).unwrap();
    let before = segment_files(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
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
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let after = segment_files(dir.path());
    let gone: Vec<_> = before
        .iter()
        .filter(|(k, v)| after.get(*k) != Some(*v))
        .map(|(k, v)| (k, v, after.get(k)))
        .collect();
    assert!(
        gone.is_empty(),
        "a one-node cluster cut its only copy (served: {serving}); files changed or gone: {gone:?}\n{}",
        stderr
            .lines()
            .filter(|l| l.contains("STORAGE FAULT"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!serving && !output.status.success(), "the start is refused: {stderr}");
    assert!(
        stderr.contains("no leader in touch with a majority answered"),
        "{stderr}"
    );
}

/// Writes 40 records to a one-node cluster started with `args`, kills it,
/// and flips a byte three quarters into its active segment's frames (a bad
/// frame between good ones: what a power cut leaves when the pages of an
/// unsynced batch are written back out of order). Returns the node's id.
fn one_node_cluster_with_a_bad_frame_in_its_active_segment(listen: &str, dir: &Path, args: &[&str]) -> Value {
    let first_id = {
        let node = spawn_on(listen, dir, args, |_| {});
        write_until_taken(&node.url, 40);
        reqwest::blocking_get(&format!("{}/cluster", node.url)).1["node_id"].clone()
    };
    assert!(first_id.is_u64(), "a node id: {first_id}");
    flip_a_byte_among_the_active_segments_frames(dir);
    first_id
}

/// Flips a byte three quarters into the frames of `dir`'s active segment.
fn flip_a_byte_among_the_active_segments_frames(dir: &Path) {
    let stores = sorted_stores(dir);
    let active = stores.last().unwrap();
    let mut bytes = std::fs::read(active).unwrap();
    let written = bytes.iter().rposition(|&b| b != 0).unwrap();
    bytes[written * 3 / 4] ^= 0x5a;
    std::fs::write(active, bytes).unwrap();
}

/// The `raft/last_run` document of `dir`, and `change` made to it written back
/// (with its checksum line), as a reboot between runs would find it.
fn change_last_run(dir: &Path, change: impl FnOnce(&mut Value)) -> Value {
    let path = dir.join("raft").join("last_run");
    let recorded = String::from_utf8(std::fs::read(&path).unwrap()).unwrap();
    let (_, json) = recorded.split_once('\n').unwrap();
    let mut run: Value = serde_json::from_str(json).unwrap();
    let before = run.clone();
    change(&mut run);
    let json = serde_json::to_vec(&run).unwrap();
    let mut document = format!("crc32:{:08x}\n", crc32fast::hash(&json)).into_bytes();
    document.extend_from_slice(&json);
    std::fs::write(&path, document).unwrap();
    before
}

/// Posts `n` records to `url`, each until it is taken (a node that has just
/// started may not lead yet).
fn write_until_taken(url: &str, n: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut written = 0;
    while written < n {
        match reqwest::blocking_post_status(url, &format!(r#"{{"torn":{written}}}"#)).0 {
            201 => written += 1,
            status => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "no write taken within 30 s: {status}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Issue 19 item 3's kind of failure, by a torn batch: under write caching
/// a bad frame in the active segment past every mark, found after the
/// machine went down, is a write the power cut tore, not rot. It was taken
/// for a storage fault that only a live leader may license a cut for: a
/// one-node cluster (and a cluster whose every node lost power) refused to
/// start until an operator acted. Now the start cuts before it, copies what
/// follows aside, and the node leads again under its id. In the same boot
/// (a killed process: the page cache finishes its writes) the same frame
/// is rot, and the start is refused with every file kept.
#[test]
fn a_one_node_cluster_with_write_caching_cuts_a_frame_a_power_cut_tore_and_keeps_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let port = unused_port();
    let (listen, url) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    let args = ["--fsync", "never", "--peers", &url];
    let first_id = one_node_cluster_with_a_bad_frame_in_its_active_segment(&listen, dir.path(), &args);

    let before = segment_files(dir.path());
    let refused = start_and_wait_for_exit(&listen, dir.path(), &args);
    assert!(
        refused.contains("no leader in touch with a majority answered"),
        "the same boot: rot, refused: {refused}"
    );
    assert_eq!(segment_files(dir.path()), before, "every file kept");

    // The reboot a power cut brings: the last run was in another boot.
    let run = change_last_run(dir.path(), |run| run["boot_id"] = "a boot before the power cut".into());
    assert_eq!(run["write_caching"], true, "{run}");
    let node = spawn_on(&listen, dir.path(), &args, |_| {});
    write_until_taken(&node.url, 1);
    let now = reqwest::blocking_get(&format!("{}/cluster", node.url)).1["node_id"].clone();
    assert_eq!(now, first_id, "the node keeps its id");
    let (status, first) = reqwest::blocking_get(&format!("{}/?from=0&limit=1000", node.url));
    assert_eq!(status, 200);
    let kept: Vec<_> = first["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["value"]["torn"].as_u64())
        .collect();
    assert!(
        kept.len() >= 20 && kept.iter().enumerate().take(20).all(|(i, n)| *n == i as u64),
        "the records before the bad frame are kept, in order: {kept:?}"
    );
    let copied: Vec<_> = walk_files(&dir.path().join("quarantine"));
    assert!(
        copied.iter().any(|p| p.extension().is_some_and(|x| x == "store")),
        "what the cut took is copied aside: {copied:?}"
    );
}

/// Starts a node that is expected to refuse its start; its stderr.
fn start_and_wait_for_exit(listen: &str, dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_distlog"))
        .args(["serve", "--listen", listen, "--log-format", "json", "--data-dir"])
        .arg(dir)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(!output.status.success(), "the start is refused: {stderr}");
    stderr
}

/// With `--fsync always` every write a node acknowledged was synced, and its
/// marks (written without a sync) may trail it after a power cut, so the
/// same bad frame stays a storage fault: with no leader to license a cut, a
/// one-node cluster refuses to start and keeps every file.
#[test]
fn a_one_node_cluster_syncing_every_write_refuses_to_cut_a_bad_frame_in_its_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let port = unused_port();
    let (listen, url) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    let args = ["--fsync", "always", "--peers", &url];
    one_node_cluster_with_a_bad_frame_in_its_active_segment(&listen, dir.path(), &args);
    let before = segment_files(dir.path());
    let stderr = start_and_wait_for_exit(&listen, dir.path(), &args);
    assert!(
        stderr.contains("no leader in touch with a majority answered"),
        "{stderr}"
    );
    assert_eq!(segment_files(dir.path()), before, "every file kept");
}

fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .flat_map(|p| if p.is_dir() { walk_files(&p) } else { vec![p] })
        .collect()
}

/// Review of the torn-write rule: a graceful stop syncs the log, so a
/// planned reboot after it (which changes the boot id too) tears nothing,
/// and a bad frame found then is rot. The stop records that the run left
/// nothing unsynced; the next start after a reboot refuses to cut (a
/// one-node cluster has no leader to license it) and keeps every file.
#[test]
fn after_a_graceful_stop_and_a_reboot_a_bad_frame_is_rot_not_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let port = unused_port();
    let (listen, url) = (format!("127.0.0.1:{port}"), format!("http://127.0.0.1:{port}"));
    let args = ["--fsync", "never", "--peers", &url];
    {
        let mut node = spawn_on(&listen, dir.path(), &args, |_| {});
        write_until_taken(&node.url, 40);
        let pid = node.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        assert!(node.child.wait().unwrap().success(), "a graceful stop exits 0");
    }
    let run = change_last_run(dir.path(), |run| run["boot_id"] = "a boot before the reboot".into());
    assert_eq!(run["write_caching"], false, "the stop left nothing unsynced: {run}");
    flip_a_byte_among_the_active_segments_frames(dir.path());

    let before = segment_files(dir.path());
    let stderr = start_and_wait_for_exit(&listen, dir.path(), &args);
    assert!(
        stderr.contains("no leader in touch with a majority answered"),
        "{stderr}"
    );
    assert_eq!(segment_files(dir.path()), before, "every file kept");
}
