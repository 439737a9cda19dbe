//! The wall clock records are stamped with: the system's, or one a test
//! sets (`ManualClock`) or shifts (`Clock::skewed`), to step time back and
//! see that stamps still never go backwards in log order. The log's writer
//! stamps with its config's clock, and a cluster's leader with the same.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, by the system's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A source of wall-clock milliseconds; clones share it.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<dyn Fn() -> u64 + Send + Sync>>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(None)
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(f)))
    }

    /// The system's clock, `skew_ms` ahead (or behind, when negative).
    pub fn skewed(skew_ms: i64) -> Clock {
        if skew_ms == 0 {
            return Clock::system();
        }
        Clock::from_fn(move || now_ms().saturating_add_signed(skew_ms))
    }

    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            None => now_ms(),
            Some(f) => f(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_none() {
            "Clock(system)"
        } else {
            "Clock(set)"
        })
    }
}

/// A clock that says what it was last set to, for tests.
#[derive(Clone, Debug, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn at(ms: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(ms)))
    }

    pub fn set(&self, ms: u64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// A `Clock` that reads this one.
    pub fn clock(&self) -> Clock {
        let time = self.0.clone();
        Clock::from_fn(move || time.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_says_what_it_was_set_to_and_a_skewed_one_is_shifted() {
        let manual = ManualClock::at(1_000);
        let clock = manual.clock();
        assert_eq!(clock.now_ms(), 1_000);
        manual.set(10);
        assert_eq!(clock.now_ms(), 10, "stepped back");
        let behind = Clock::skewed(-3_600_000).now_ms();
        let now = now_ms();
        assert!(
            behind + 3_500_000 < now && behind + 3_700_000 > now,
            "{behind} vs {now}"
        );
    }
}
