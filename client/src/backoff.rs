//! Back-off: how long to leave a member alone after it failed, and how
//! long to wait between retries. Exponential (doubling from `base`),
//! capped at `cap`, with "full jitter" (a uniform time between half the
//! step and the step), so that many clients that saw the same failure do
//! not come back in step.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The wait after `failures` failures in a row (1 = the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(20);
        let step = self.base.saturating_mul(1 << doublings).min(self.cap);
        let half = step / 2;
        half + half.mul_f64(unit_random())
    }
}

/// A number in [0, 1) from a process-wide xorshift: jitter needs no more.
fn unit_random() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64);
        x = nanos | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A random 64-bit number (for producer ids).
pub(crate) fn random_u64() -> u64 {
    let high = (unit_random() * (1u64 << 32) as f64) as u64;
    let low = (unit_random() * (1u64 << 32) as f64) as u64;
    (high << 32) | low
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        };
        for _ in 0..100 {
            let first = backoff.delay(1);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = backoff.delay(3);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(backoff.delay(40) <= Duration::from_secs(2));
            assert!(backoff.delay(40) >= Duration::from_secs(1));
        }
    }
}
