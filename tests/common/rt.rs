//! The fault-test harness's own runtime, HTTP client and seeded randomness.
//!
//! Proxies, load writers and monitors run on one process-wide tokio runtime
//! that is never shut down, so the harness works the same from a plain
//! `#[test]` and from `#[tokio::test]` (of either flavour): nothing the
//! harness spawns depends on the test's runtime, and no runtime is dropped
//! inside an async context. The shared HTTP client is only ever used on
//! that runtime (see `on_harness`), so its pooled connections never outlive
//! the runtime that opened them.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

/// The harness runtime (two workers; created on first use, never dropped).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("distlog-harness")
            .enable_all()
            .build()
            .expect("the harness runtime starts")
    })
}

/// Runs `future` on the harness runtime and waits for it from any async
/// context; a panic inside it is re-raised here.
pub async fn on_harness<T, F>(future: F) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    match runtime().spawn(future).await {
        Ok(value) => value,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => panic!("harness task cancelled: {error}"),
    }
}

/// Runs `future` to completion from a plain `#[test]` (not from inside an
/// async context: there, `.await` the harness's futures instead).
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// The harness's HTTP client: no redirects followed (a 307 is an answer the
/// tests look at), short connect timeout, a per-request timeout of 5 s.
/// Use it only on the harness runtime.
pub fn http() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5));
        for (host, addr) in HOSTS.get().into_iter().flatten() {
            builder = builder.resolve(host, *addr);
        }
        builder.build().expect("the harness HTTP client builds")
    })
}

static HOSTS: OnceLock<Vec<(String, std::net::SocketAddr)>> = OnceLock::new();

/// Host names the harness client resolves to fixed addresses (the port of a URL still wins), e.g.
/// container service names published on the host's loopback. Call it before the first `http()`
/// (later calls change nothing); false if already set.
pub fn resolve_hosts(hosts: Vec<(String, std::net::SocketAddr)>) -> bool {
    HOSTS.set(hosts).is_ok()
}

/// xorshift64*: small, seedable, good enough to pick orders and victims.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        // Zero is xorshift's fixed point; mix the seed so nearby seeds differ.
        XorShift(splitmix(seed) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0)");
        self.next_u64() % n
    }

    /// An index into a collection of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed for this test: `DISTLOG_TEST_SEED` if set, else from the clock
/// and the process id. Printed, so a failing run can be replayed.
pub fn test_seed(what: &str) -> u64 {
    let seed = match std::env::var("DISTLOG_TEST_SEED") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("DISTLOG_TEST_SEED={text:?} is not a u64")),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            splitmix(nanos ^ (u64::from(std::process::id()) << 32))
        }
    };
    eprintln!("{what}: seed {seed} (replay with DISTLOG_TEST_SEED={seed})");
    seed
}
