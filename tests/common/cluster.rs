//! `TestCluster`: N real `distlog serve` processes in cluster mode, with a
//! fault-injecting proxy on every directed link between them.
//!
//! Node `i` advertises `http://127.0.0.1:PORT_i` (ports picked up front, so
//! a restarted node comes back on the same URL) and reaches node `j` only
//! through `proxy(i -> j)`, by `--peer-route URL_j=PROXY_URL`. Tests and
//! the load generator talk to the nodes directly. Each node logs to
//! `node<i>.log` in the cluster's temporary directory; when a test panics,
//! dropping the cluster prints the tail of every node's log. Dropping it
//! always SIGKILLs every node.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::checker;
use super::fault_proxy::{FaultProxy, Mode};
use super::rt::{self, XorShift};
use super::small_disk::SmallDisk;
use super::writer::History;

/// Node `i`'s own seed list, from the cluster's (`ClusterConfig::seeds_for`).
pub type SeedsFor = fn(usize, &[String]) -> Vec<String>;
/// The nodes not started at first, from the seed list (`ClusterConfig::held`).
pub type Held = fn(&[String]) -> Vec<usize>;

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub nodes: usize,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_ms: u64,
    /// More flags for every node (e.g. `--fsync never`).
    pub extra_args: Vec<String>,
    /// `RUST_LOG` of every node.
    pub rust_log: String,
    /// More environment variables for every node (the test process's own
    /// environment is shared by every test thread, so it is not the place).
    pub env: Vec<(String, String)>,
    /// How long a node may take to answer HTTP after it is spawned.
    pub ready_timeout: Duration,
    /// Node `i`'s `--peers`, from the seed list (None: the list itself):
    /// formation tests give one node another list.
    pub seeds_for: Option<SeedsFor>,
    /// The nodes `start` does not start, from the seed list (`restart`
    /// starts one later).
    pub held: Option<Held>,
    /// A tmpfs of this size (`mount -o size=`, e.g. "128m") on each node's
    /// data directory, for tests that fill a node's disk (`fill_disk`).
    /// Needs root: where it cannot be mounted the node runs on the
    /// cluster's own filesystem and `on_small_disk` says so.
    pub disk: Option<String>,
}

impl Default for ClusterConfig {
    fn default() -> ClusterConfig {
        ClusterConfig {
            nodes: 3,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_ms: 75,
            extra_args: Vec::new(),
            rust_log: "info".into(),
            env: Vec::new(),
            ready_timeout: Duration::from_secs(20),
            seeds_for: None,
            held: None,
            disk: None,
        }
    }
}

/// A node's `GET /cluster`, parsed leniently (ids are kept as JSON, since
/// their type is the cluster's business); `raw` is the whole answer.
#[derive(Clone, Debug)]
pub struct ClusterStatus {
    pub node_id: Value,
    pub url: String,
    pub term: u64,
    pub leader_id: Option<Value>,
    pub leader_url: Option<String>,
    pub commit_offset: Option<u64>,
    pub members: Vec<Member>,
    pub raw: Value,
}

#[derive(Clone, Debug)]
pub struct Member {
    pub id: Value,
    pub url: String,
    pub voter: bool,
    pub match_offset: Option<u64>,
    pub reachable: bool,
}

impl ClusterStatus {
    pub fn parse(raw: Value) -> Result<ClusterStatus, String> {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let present = |v: &Value| (!v.is_null()).then(|| v.clone());
        let members = raw["members"]
            .as_array()
            .ok_or_else(|| format!("no members array in {raw}"))?
            .iter()
            .map(|m| Member {
                id: m["id"].clone(),
                url: text(&m["url"]).unwrap_or_default(),
                voter: m["voter"].as_bool().unwrap_or(false),
                match_offset: m["match_offset"].as_u64(),
                reachable: m["reachable"].as_bool().unwrap_or(false),
            })
            .collect();
        Ok(ClusterStatus {
            node_id: raw["node_id"].clone(),
            url: text(&raw["url"]).ok_or_else(|| format!("no url in {raw}"))?,
            term: raw["term"].as_u64().ok_or_else(|| format!("no term in {raw}"))?,
            leader_id: present(&raw["leader_id"]),
            leader_url: text(&raw["leader_url"]),
            commit_offset: raw["commit_offset"].as_u64(),
            members,
            raw,
        })
    }
}

struct Node {
    port: u16,
    url: String,
    /// The current data directory (a new one after each wipe).
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    stopped: bool,
    /// Incremented on every (re)start; marks the log file.
    generation: u32,
    wipes: u32,
    /// Environment for this node alone, over `ClusterConfig::env`.
    env: Vec<(String, String)>,
    /// The tmpfs on `data_dir` (`ClusterConfig::disk`), once mounted.
    disk: Option<SmallDisk>,
}

/// One cluster of real processes at a time in a test binary. Test threads
/// run in parallel under plain `cargo test`, and two clusters at once on a
/// small machine starve each other's elections and heartbeats: a test that
/// runs several `distlog` processes holds this (`TestCluster` does, until it
/// is dropped). A tokio semaphore, not a `std` mutex: it is awaited from
/// many runtimes, and a test that panics holding it just gives it back.
static EXCLUSIVE: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Waits until no other test of this binary runs a cluster, and holds that
/// until the permit is dropped (for tests that spawn their nodes without
/// `TestCluster`).
pub async fn exclusive() -> tokio::sync::SemaphorePermit<'static> {
    match EXCLUSIVE.try_acquire() {
        Ok(permit) => permit,
        Err(_) => {
            let waited = Instant::now();
            let permit = EXCLUSIVE
                .acquire()
                .await
                .expect("the cluster semaphore is never closed");
            eprintln!("cluster: waited {:?} for another test's cluster", waited.elapsed());
            permit
        }
    }
}

pub struct TestCluster {
    /// Held until the cluster is dropped; `Drop` kills the nodes first.
    _exclusive: tokio::sync::SemaphorePermit<'static>,
    config: ClusterConfig,
    seed: u64,
    rng: XorShift,
    /// Deleted on drop, unless the test panicked.
    root: Option<tempfile::TempDir>,
    root_path: PathBuf,
    nodes: Vec<Node>,
    /// `links[from][to]`: the proxy `from` uses to reach `to` (None when equal).
    links: Vec<Vec<Option<FaultProxy>>>,
    partitioned: Vec<bool>,
    /// The `--peers` seed list: the first `config.nodes` nodes' URLs, the
    /// same for every node (nodes added later join through a seed).
    seeds: Vec<String>,
    /// More flags for one node, from its next start on (`set_node_args`).
    node_args: Vec<Vec<String>>,
}

impl TestCluster {
    /// Starts `config.nodes` nodes in a random (seeded) order and waits
    /// until each answers HTTP (not for a leader: see `wait_for_leader`).
    pub async fn start(config: ClusterConfig) -> TestCluster {
        let exclusive = exclusive().await;
        let seed = rt::test_seed("distlog test cluster");
        let mut rng = XorShift::new(seed);
        let root = tempfile::tempdir().expect("a temporary directory for the cluster");
        let ports = free_ports(config.nodes);
        let nodes: Vec<Node> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| Node {
                port: *port,
                url: format!("http://127.0.0.1:{port}"),
                data_dir: root.path().join(format!("node{i}-data")),
                log_path: root.path().join(format!("node{i}.log")),
                child: None,
                stopped: false,
                generation: 0,
                wipes: 0,
                env: Vec::new(),
                disk: None,
            })
            .collect();
        let links = (0..config.nodes)
            .map(|from| {
                (0..config.nodes)
                    .map(|to| {
                        (from != to).then(|| {
                            let target = SocketAddr::from(([127, 0, 0, 1], ports[to]));
                            FaultProxy::start(target).expect("a link proxy starts")
                        })
                    })
                    .collect()
            })
            .collect();
        let mut order: Vec<usize> = (0..config.nodes).collect();
        rng.shuffle(&mut order);
        let seeds = nodes.iter().map(|n| n.url.clone()).collect();
        let mut cluster = TestCluster {
            _exclusive: exclusive,
            seeds,
            partitioned: vec![false; config.nodes],
            node_args: vec![Vec::new(); config.nodes],
            config,
            seed,
            rng,
            root_path: root.path().to_path_buf(),
            root: Some(root),
            nodes,
            links,
        };
        for (i, node) in cluster.nodes.iter().enumerate() {
            eprintln!("cluster node {i}: {} (log {})", node.url, node.log_path.display());
        }
        let held = cluster.config.held.map(|held| held(&cluster.seeds)).unwrap_or_default();
        order.retain(|i| !held.contains(i));
        eprintln!("cluster start order: {order:?} (held: {held:?})");
        for &i in &order {
            cluster.spawn(i);
        }
        for &i in &order {
            cluster.wait_ready(i).await;
        }
        cluster
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The cluster's seeded randomness, for tests' own choices.
    pub fn rng(&mut self) -> &mut XorShift {
        &mut self.rng
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url.clone()
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url.clone()).collect()
    }

    /// Running, not stopped nodes.
    pub fn live(&self) -> Vec<usize> {
        (0..self.len())
            .filter(|&i| self.nodes[i].child.is_some() && !self.nodes[i].stopped)
            .collect()
    }

    pub fn live_urls(&self) -> Vec<String> {
        self.live().into_iter().map(|i| self.url(i)).collect()
    }

    /// Live nodes that are not partitioned: those expected to agree.
    pub fn reachable(&self) -> Vec<usize> {
        self.live().into_iter().filter(|&i| !self.partitioned[i]).collect()
    }

    /// The node whose advertised URL is `url`.
    pub fn index_of(&self, url: &str) -> Option<usize> {
        let url = url.trim_end_matches('/');
        self.nodes.iter().position(|n| n.url == url)
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(Child::id)
    }

    pub fn data_dir(&self, i: usize) -> &Path {
        &self.nodes[i].data_dir
    }

    pub fn log_path(&self, i: usize) -> &Path {
        &self.nodes[i].log_path
    }

    /// The proxy `from` uses to reach `to`.
    pub fn link(&self, from: usize, to: usize) -> &FaultProxy {
        self.links[from][to].as_ref().expect("no link from a node to itself")
    }

    pub fn set_link(&self, from: usize, to: usize, mode: Mode) {
        self.link(from, to).set_mode(mode);
    }

    /// Every link to and from node `i` in `mode` (`Drop` or `Sever` to
    /// partition it, `Stall` to delay it).
    pub fn partition(&mut self, i: usize, mode: Mode) {
        for j in 0..self.len() {
            if j != i {
                self.set_link(i, j, mode);
                self.set_link(j, i, mode);
            }
        }
        self.partitioned[i] = mode != Mode::Pass;
        eprintln!("cluster: node {i} partitioned ({mode:?})");
    }

    /// Every link back to `Pass`.
    pub fn heal(&mut self) {
        for row in &self.links {
            for proxy in row.iter().flatten() {
                proxy.set_mode(Mode::Pass);
            }
        }
        self.partitioned.fill(false);
        eprintln!("cluster: healed");
    }

    /// Sets an environment variable of node `i` alone, from its next start.
    pub fn set_env(&mut self, i: usize, key: &str, value: &str) {
        let env = &mut self.nodes[i].env;
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value.to_string()));
    }

    /// Whether node `i`'s process has exited (reaping it if so).
    pub fn exited(&mut self, i: usize) -> bool {
        match self.nodes[i].child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(_))) => {
                self.nodes[i].child = None;
                true
            }
            Some(_) => false,
            None => true,
        }
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("cluster: node {i} killed");
        }
        node.stopped = false;
    }

    /// Starts again every node whose process exited by itself (a member
    /// that stops to be started again: `cluster::contradiction`), as its
    /// supervisor would, and waits until each answers; which.
    pub async fn start_exited(&mut self) -> Vec<usize> {
        let mut started = Vec::new();
        for i in 0..self.nodes.len() {
            let gone = matches!(self.nodes[i].child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
            if gone {
                self.nodes[i].child = None;
                eprintln!("cluster: node {i} exited by itself; starting it again");
                self.spawn(i);
                self.wait_ready(i).await;
                started.push(i);
            }
        }
        started
    }

    /// SIGTERM (a graceful stop), then waits up to `within` for the exit;
    /// whether it exited (reaped).
    pub async fn terminate(&mut self, i: usize, within: Duration) -> bool {
        self.signal(i, libc::SIGTERM);
        let deadline = Instant::now() + within;
        while !self.exited(i) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        eprintln!("cluster: node {i} stopped by SIGTERM");
        self.nodes[i].stopped = false;
        true
    }

    /// SIGSTOP: the process freezes, its sockets stay open.
    pub fn stop(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        self.nodes[i].stopped = true;
        eprintln!("cluster: node {i} stopped");
    }

    /// SIGCONT after `stop`.
    pub fn cont(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.nodes[i].stopped = false;
        eprintln!("cluster: node {i} continued");
    }

    fn signal(&self, i: usize, signal: libc::c_int) {
        let pid = self.pid(i).unwrap_or_else(|| panic!("node {i} is not running"));
        let pid = libc::pid_t::try_from(pid).expect("a pid fits pid_t");
        // SAFETY: kill(2) on our own child's pid; it has not been reaped, so
        // the pid cannot have been reused.
        let result = unsafe { libc::kill(pid, signal) };
        assert_eq!(
            result,
            0,
            "signal {signal} to node {i}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// More flags for node `i` alone (after `ClusterConfig::extra_args`),
    /// from its next start on (e.g. `restart`).
    pub fn set_node_args(&mut self, i: usize, args: Vec<String>) {
        if self.node_args.len() <= i {
            self.node_args.resize(i + 1, Vec::new());
        }
        self.node_args[i] = args;
    }

    /// Kills node `i` if it runs, then starts it again on the same data
    /// directory and URL, and waits until it answers HTTP.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// Kills node `i` if it runs and starts it again, without waiting for it
    /// to answer: for a start that may stop by itself before the harness
    /// sees it up (a node that finds it must repair itself; see `exited`).
    pub fn restart_unwatched(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Kills node `i` and starts it on a new, empty data directory, same URL.
    /// `on_wiped` runs with the node's URL after the old process is dead and
    /// before the new one starts: whoever watches the node (a
    /// `VisibleMonitor`) must hear of the wipe before it can read the new,
    /// empty node, or it sees the log go back to nothing.
    pub async fn wipe_and_restart(&mut self, i: usize, on_wiped: impl FnOnce(&str)) {
        self.kill(i);
        on_wiped(&self.nodes[i].url);
        let node = &mut self.nodes[i];
        node.wipes += 1;
        // Its tmpfs goes with its data (the new directory gets a new one).
        node.disk = None;
        let _ = std::fs::remove_dir_all(&node.data_dir);
        node.data_dir = self.root_path.join(format!("node{i}-data-wipe{}", node.wipes));
        eprintln!("cluster: node {i} wiped");
        self.spawn(i);
        self.wait_ready(i).await;
    }

    /// Starts one more node (not a seed: `--peers` is the seed list, its
    /// own URL only in `--advertise-url`), with proxies on its links to and
    /// from every node, and waits until it answers HTTP. It joins through a
    /// seed on its own. Nodes already running reach it directly (they have
    /// no route for it) until they are restarted. Returns its index.
    pub async fn add_node(&mut self) -> usize {
        self.add_node_on(None).await
    }

    /// Like `add_node`, on a copy (`cp -a`) of node `from`'s data
    /// directory, as an operator seeding a new node from a member's disk
    /// would make it. Node `from` should be stopped while it is copied.
    pub async fn add_node_copying(&mut self, from: usize) -> usize {
        self.add_node_on(Some(from)).await
    }

    async fn add_node_on(&mut self, copy_of: Option<usize>) -> usize {
        let i = self.nodes.len();
        let port = free_ports(1)[0];
        let node = Node {
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: self.root_path.join(format!("node{i}-data")),
            log_path: self.root_path.join(format!("node{i}.log")),
            child: None,
            stopped: false,
            generation: 0,
            wipes: 0,
            env: Vec::new(),
            disk: None,
        };
        eprintln!(
            "cluster node {i} (added): {} (log {})",
            node.url,
            node.log_path.display()
        );
        self.nodes.push(node);
        let new_target = SocketAddr::from(([127, 0, 0, 1], port));
        for row in &mut self.links {
            row.push(Some(FaultProxy::start(new_target).expect("a link proxy starts")));
        }
        let row = (0..=i)
            .map(|to| {
                (to != i).then(|| {
                    let target = SocketAddr::from(([127, 0, 0, 1], self.nodes[to].port));
                    FaultProxy::start(target).expect("a link proxy starts")
                })
            })
            .collect();
        self.links.push(row);
        self.partitioned.push(false);
        if let Some(from) = copy_of {
            let copied = Command::new("cp")
                .arg("-a")
                .arg(&self.nodes[from].data_dir)
                .arg(&self.nodes[i].data_dir)
                .status()
                .expect("cp runs");
            assert!(copied.success(), "cp -a of node {from}'s data directory failed");
        }
        self.spawn(i);
        self.wait_ready(i).await;
        i
    }

    /// Whether node `i`'s data directory is on a small tmpfs of its own
    /// (`ClusterConfig::disk`).
    pub fn on_small_disk(&self, i: usize) -> bool {
        self.nodes[i].disk.is_some()
    }

    /// Fills node `i`'s small disk with one file and returns it (delete it
    /// to free the space); None when it has no small disk of its own.
    pub fn fill_disk(&self, i: usize) -> Option<PathBuf> {
        self.nodes[i].disk.as_ref().map(SmallDisk::fill)
    }

    /// Mounts node `i`'s tmpfs (`ClusterConfig::disk`) on its data
    /// directory if it has none there yet; says so loudly when it cannot.
    fn mount_disk(&mut self, i: usize) {
        let Some(size) = self.config.disk.clone() else { return };
        let node = &mut self.nodes[i];
        if node.disk.as_ref().is_some_and(|d| d.path() == node.data_dir) {
            return;
        }
        node.disk = SmallDisk::mount(&node.data_dir, &size);
        if node.disk.is_none() {
            eprintln!(
                "cluster: NO SMALL DISK for node {i}: cannot mount a tmpfs on {} (not root?); it runs on the cluster's filesystem",
                node.data_dir.display()
            );
        }
    }

    fn spawn(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is already running");
        self.mount_disk(i);
        let peers = match self.config.seeds_for {
            Some(seeds_for) if i < self.seeds.len() => seeds_for(i, &self.seeds).join(","),
            _ => self.seeds.join(","),
        };
        let routes: Vec<String> = (0..self.len())
            .filter(|&j| j != i)
            .map(|j| format!("{}={}", self.nodes[j].url, self.link(i, j).url()))
            .collect();
        let config = &self.config;
        let node = &mut self.nodes[i];
        node.generation += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("a node log file");
        let _ = writeln!(
            log,
            "==== harness: node {i} start #{} on {} ====",
            node.generation,
            node.data_dir.display()
        );
        let mut command = Command::new(env!("CARGO_BIN_EXE_distlog"));
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", node.port))
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--peers")
            .arg(&peers)
            .arg("--advertise-url")
            .arg(&node.url)
            .arg("--election-timeout-min-ms")
            .arg(config.election_timeout_min_ms.to_string())
            .arg("--election-timeout-max-ms")
            .arg(config.election_timeout_max_ms.to_string())
            .arg("--heartbeat-ms")
            .arg(config.heartbeat_ms.to_string());
        for route in &routes {
            command.arg("--peer-route").arg(route);
        }
        let node_args = self.node_args.get(i).cloned().unwrap_or_default();
        command
            .args(&config.extra_args)
            .args(&node_args)
            .env("RUST_LOG", &config.rust_log)
            .envs(config.env.iter().map(|(k, v)| (k, v)))
            .envs(node.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().expect("a node log file handle")))
            .stderr(Stdio::from(log));
        let child = command.spawn().expect("distlog starts");
        node.child = Some(child);
        node.stopped = false;
    }

    /// Waits until node `i` answers `GET /cluster` (with any status but
    /// the 503 `starting` of a member whose start has not finished).
    pub async fn wait_ready(&mut self, i: usize) {
        let url = self.url(i);
        let deadline = Instant::now() + self.config.ready_timeout;
        loop {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.nodes[i].child = None;
                panic!(
                    "node {i} ({url}) exited while starting: {status}\n{}",
                    self.log_tail(i, 40)
                );
            }
            let probe = url.clone();
            let answered = rt::on_harness(async move {
                let Ok(response) = rt::http()
                    .get(format!("{probe}/cluster"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await
                else {
                    return false;
                };
                // A member answers while it starts (503 `starting`): not yet.
                let status = response.status().as_u16();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                !(status == 503 && body["code"] == "starting")
            })
            .await;
            if answered {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {i} ({url}) did not answer HTTP within {:?}\n{}",
                    self.config.ready_timeout,
                    self.log_tail(i, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Node `i`'s `GET /cluster`.
    pub async fn cluster_status(&self, i: usize) -> Result<ClusterStatus, String> {
        fetch_status(self.url(i)).await
    }

    /// The node all reachable nodes (live, not partitioned) agree leads,
    /// asking each once; None without agreement.
    pub async fn leader(&self) -> Option<usize> {
        self.agreed_leader().await.ok()
    }

    /// Polls until all reachable nodes agree on a leader that says it
    /// leads; panics with what each node last said after `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let why = match self.agreed_leader().await {
                Ok(leader) => return leader,
                Err(why) => why,
            };
            if Instant::now() >= deadline {
                panic!("no agreed leader within {timeout:?}: {why}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn agreed_leader(&self) -> Result<usize, String> {
        let reachable = self.reachable();
        if reachable.is_empty() {
            return Err("no reachable node".into());
        }
        let mut statuses = Vec::new();
        for &i in &reachable {
            match self.cluster_status(i).await {
                Ok(status) => statuses.push((i, status)),
                Err(error) => return Err(format!("node {i}: {error}")),
            }
        }
        let said = || {
            statuses
                .iter()
                .map(|(i, s)| format!("node {i} (term {}) says {:?}", s.term, s.leader_url))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let Some(leader_url) = statuses[0].1.leader_url.clone() else {
            return Err(said());
        };
        if statuses
            .iter()
            .any(|(_, s)| s.leader_url.as_deref() != Some(leader_url.as_str()))
        {
            return Err(said());
        }
        let Some(leader) = self.index_of(&leader_url) else {
            return Err(format!("the leader URL {leader_url} is no node's; {}", said()));
        };
        // The leader itself must be among them and claim it.
        if !statuses.iter().any(|(i, _)| *i == leader) {
            return Err(format!(
                "node {leader} is named leader but is not reachable; {}",
                said()
            ));
        }
        Ok(leader)
    }

    /// Waits (up to `timeout`) for the reachable nodes to converge, then
    /// checks `history` against them (see `checker::check_cluster`).
    pub async fn check(&self, history: &History, timeout: Duration) -> Vec<String> {
        let urls: Vec<String> = self.reachable().into_iter().map(|i| self.url(i)).collect();
        checker::check_cluster(&urls, history, timeout).await
    }

    /// Keeps the cluster's logs and data after it is dropped (as a panic
    /// does), for a look at a failure that is reported without panicking.
    pub fn keep_files(&mut self) -> PathBuf {
        if let Some(root) = self.root.take() {
            let _ = root.keep();
        }
        for disk in self.nodes.iter_mut().filter_map(|n| n.disk.as_mut()) {
            disk.keep_on_unmount();
        }
        self.root_path.clone()
    }

    /// The last `lines` lines of node `i`'s log file.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let path = &self.nodes[i].log_path;
        let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
        match text {
            Ok(text) => {
                let all: Vec<&str> = text.lines().collect();
                let tail = &all[all.len().saturating_sub(lines)..];
                format!(
                    "---- node {i} log ({}), last {} lines:\n{}",
                    path.display(),
                    tail.len(),
                    tail.join("\n")
                )
            }
            Err(error) => format!("---- node {i} log ({}): {error}", path.display()),
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("cluster seed was {} (DISTLOG_TEST_SEED={})", self.seed, self.seed);
            for i in 0..self.nodes.len() {
                eprintln!("{}", self.log_tail(i, 30));
            }
            // Keep the logs and data for a look after the run.
            if let Some(root) = self.root.take() {
                eprintln!("cluster files kept in {}", root.keep().display());
                for disk in self.nodes.iter_mut().filter_map(|n| n.disk.as_mut()) {
                    disk.keep_on_unmount();
                }
            }
        }
        // Unmounted before the temporary directory is deleted (the nodes
        // are dead: nothing holds a file there).
        for node in &mut self.nodes {
            node.disk = None;
        }
    }
}

async fn fetch_status(url: String) -> Result<ClusterStatus, String> {
    rt::on_harness(async move {
        let response = rt::http()
            .get(format!("{url}/cluster"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(|e| format!("{url}/cluster: {e}"))?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .map_err(|e| format!("{url}/cluster: {status}, not JSON: {e}"))?;
        if status != 200 {
            return Err(format!("{url}/cluster: {status} {body}"));
        }
        ClusterStatus::parse(body)
    })
    .await
}

/// `n` ports for processes that bind them later (a node's `--listen`).
///
/// They come from below the kernel's ephemeral range (32768-60999 on
/// Linux), never from it: a port the kernel handed out for `bind(0)` and
/// that was closed again could be given to the next `bind(0)` (a fault
/// proxy, another test's client) before the node binds it, and the node
/// then fails with "Address already in use" (seen with eleven clusters
/// starting at once). Ports below the range are only ever taken by
/// whoever names them: this counter, which never hands one out twice in
/// a process, starting at an offset from the process id so that two test
/// processes at once are unlikely to meet; each is checked free first.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const LAST: u32 = 32_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = FIRST + (std::process::id() % 64) * 300;
    let mut ports = Vec::with_capacity(n);
    while ports.len() < n {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (start - FIRST + step) % (LAST - FIRST);
        let port = u16::try_from(port).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
        assert!(step < 4 * (LAST - FIRST), "no free port below the ephemeral range");
    }
    ports
}
