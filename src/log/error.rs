//! The storage engine's error type.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("offset {offset} is not in the log (lowest {lowest}, next {next})")]
    OutOfRange { offset: u64, lowest: u64, next: u64 },

    #[error("{what} of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { what: &'static str, size: u64, max: u64 },

    #[error("a batch needs at least one record")]
    EmptyBatch,

    #[error("corrupt data in {} at byte {position}{}: {reason}", file.display(), offset.map(|o| format!(" (offset {o})")).unwrap_or_default())]
    Corrupt {
        file: PathBuf,
        position: u64,
        offset: Option<u64>,
        reason: String,
    },

    #[error("invalid {key} = {value}: must be {allowed}")]
    Config {
        key: &'static str,
        allowed: String,
        value: String,
    },

    #[error("data directory {} is locked by another process", .0.display())]
    Locked(PathBuf),

    #[error("record carries offset {found}, but the log expects {expected} next")]
    OffsetMismatch { expected: u64, found: u64 },

    #[error("creating segment {base} failed ({error}), and removing what was created failed too: {left}")]
    PartlyCreated {
        base: u64,
        error: Box<LogError>,
        left: String,
    },

    /// A conditional append found the log elsewhere: nothing was written.
    #[error("the log's next offset is {next}, not {expected}")]
    NotNext { expected: u64, next: u64 },

    #[error("the log is closed")]
    Closed,

    #[error("appends are refused until a restart: {0}")]
    WriterFailed(String),

    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

impl LogError {
    /// True for errors that mean the disk, not the caller, is at fault.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            LogError::Io(_) | LogError::Closed | LogError::WriterFailed(_) | LogError::PartlyCreated { .. }
        )
    }

    /// True when the disk has no room left (ENOSPC or a quota).
    pub fn is_disk_full(&self) -> bool {
        match self {
            LogError::Io(e) => matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded),
            LogError::PartlyCreated { error, .. } => error.is_disk_full(),
            _ => false,
        }
    }
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;
