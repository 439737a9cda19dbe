//! Log configuration, validated once at open.

use std::time::Duration;

use super::clock::Clock;
use super::error::{LogError, Result};
use super::producers::ProducerLimits;
use super::record::{FRAME_HEADER, MAX_RECORD_CEILING};
use super::segment::index::ENTRY_BYTES;

pub const MIB: u64 = 1024 * 1024;

/// When appended records are forced to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// An append returns once its record is on disk (fdatasync); concurrent
    /// appends share one sync (group commit).
    Always,
    /// A background sync at most every this often.
    Interval(Duration),
    /// The page cache decides. A killed process loses nothing; a power cut may.
    Never,
}

#[derive(Clone, Debug)]
pub struct LogConfig {
    /// A segment's store file rolls once it reaches this size.
    pub max_segment_bytes: u64,
    /// A segment's index file is mapped at this size; full means roll.
    pub max_index_bytes: u64,
    /// The largest value one record may carry.
    pub max_record_bytes: u64,
    /// Delete the oldest sealed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// Delete sealed segments whose newest record is older than this.
    pub retention_ms: Option<u64>,
    pub durability: Durability,
    /// What records are stamped with (the system's clock but in tests).
    pub clock: Clock,
    /// How long and how many idempotent producers are remembered
    /// (`--producer-ttl-ms`, `--max-producers`; see `producers`).
    pub producers: ProducerLimits,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            max_segment_bytes: 256 * MIB,
            max_index_bytes: 12 * MIB,
            max_record_bytes: MIB,
            retention_bytes: None,
            retention_ms: None,
            durability: Durability::Always,
            clock: Clock::system(),
            producers: ProducerLimits::default(),
        }
    }
}

impl LogConfig {
    /// Checks every value against its allowed range, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        check_range("max_segment_bytes", self.max_segment_bytes, 64, 1 << 40)?;
        check_range(
            "max_index_bytes",
            self.max_index_bytes,
            2 * ENTRY_BYTES,
            ENTRY_BYTES * u64::from(u32::MAX),
        )?;
        check_range(
            "max_record_bytes",
            self.max_record_bytes,
            1,
            record_ceiling(self.max_segment_bytes),
        )?;
        if let Some(bytes) = self.retention_bytes {
            check_range("retention_bytes", bytes, 1, u64::MAX)?;
        }
        if let Some(ms) = self.retention_ms {
            check_range("retention_ms", ms, 1, u64::MAX)?;
        }
        if let Durability::Interval(every) = self.durability {
            let ms = every.as_millis() as u64;
            check_range("fsync_interval_ms", ms, 1, 60_000)?;
        }
        Ok(())
    }

    /// Index entries a new segment has room for: as many records as its
    /// store can hold (each frame is at least a `FRAME_HEADER`), but no
    /// more than `max_index_bytes` allows.
    pub fn index_capacity(&self) -> u32 {
        let most_records = self.max_segment_bytes / FRAME_HEADER as u64;
        let allowed = self.max_index_bytes / ENTRY_BYTES;
        most_records.min(allowed).clamp(1, u64::from(u32::MAX)) as u32
    }

    /// Size of a new segment's index file.
    pub fn index_file_bytes(&self) -> u64 {
        u64::from(self.index_capacity()) * ENTRY_BYTES
    }
}

/// The largest record value a segment of `max_segment_bytes` holds: its
/// frame (the value and a `FRAME_HEADER`) must fit in one segment.
pub fn record_ceiling(max_segment_bytes: u64) -> u64 {
    max_segment_bytes
        .saturating_sub(FRAME_HEADER as u64)
        .min(MAX_RECORD_CEILING)
}

/// `max_record_bytes` when none is asked for: the largest record a segment
/// holds, but no more than 1 MiB.
pub fn default_max_record_bytes(max_segment_bytes: u64) -> u64 {
    record_ceiling(max_segment_bytes).min(MIB)
}

fn check_range(key: &'static str, value: u64, min: u64, max: u64) -> Result<()> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(LogError::Config {
            key,
            allowed: format!("between {min} and {max}"),
            value: value.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        LogConfig::default().validate().unwrap();
    }

    #[test]
    fn errors_name_the_key_and_value() {
        let config = LogConfig {
            max_record_bytes: 0,
            ..LogConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("max_record_bytes"), "{message}");
        assert!(message.contains("= 0"), "{message}");
    }

    #[test]
    fn the_default_record_limit_is_what_a_segment_holds_up_to_a_mib() {
        assert_eq!(default_max_record_bytes(4096), 4096 - FRAME_HEADER as u64);
        assert_eq!(default_max_record_bytes(256 * MIB), MIB);
        assert_eq!(default_max_record_bytes(MIB + FRAME_HEADER as u64), MIB);
    }

    #[test]
    fn a_record_must_fit_a_segment() {
        let config = LogConfig {
            max_segment_bytes: 1000,
            max_record_bytes: 1000,
            ..LogConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(LogError::Config {
                key: "max_record_bytes",
                ..
            })
        ));
    }
}
