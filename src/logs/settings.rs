//! A named log's settings: how many replicas hold it, what its retention
//! keeps and how large a record may be. A setting left out (`None`) is the
//! node's flag (`--retention-bytes`, `--retention-ms`, `--max-record-bytes`),
//! so that a log created without settings follows the node's defaults.
//!
//! Stored as JSON in the log's `settings` document (see `catalog`):
//!
//! ```text
//! {"replicas":1,"retention_bytes":null,"retention_ms":86400000,"max_record_bytes":null}
//! ```

use serde::{Deserialize, Serialize};

use crate::log::{LogConfig, Retention, record_ceiling};

/// The replica counts a log may have: a Raft group of 1, 3 or 5 voters.
pub const REPLICA_COUNTS: [u64; 3] = [1, 3, 5];

/// See the module doc.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub replicas: u8,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub max_record_bytes: Option<u64>,
}

/// What a create request asked for (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    pub replicas: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub retention_ms: Option<u64>,
    pub max_record_bytes: Option<u64>,
}

/// A change of retention: `None` leaves a setting as it is, `Some(None)`
/// gives it back to the node's flag.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionChange {
    pub retention_bytes: Option<Option<u64>>,
    pub retention_ms: Option<Option<u64>>,
}

/// Why settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("replicas must be 1, 3 or 5, not {0}")]
    BadReplicas(u64),
    #[error("replicas {replicas} is more than the {nodes} node(s) of this cluster")]
    NotEnoughNodes { replicas: u64, nodes: u64 },
    #[error("{key} must be between {min} and {max}, not {value}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

impl Requested {
    /// The settings these ask for on a node set of `nodes`, checked against
    /// the node's `base` log configuration.
    pub fn resolve(&self, nodes: u64, base: &LogConfig) -> Result<Settings, SettingsError> {
        // min(3, nodes), as far as a group may have that many voters: two
        // nodes give one replica, not two (a pair stops at either's loss).
        let replicas = self.replicas.unwrap_or(if nodes >= 3 { 3 } else { 1 });
        if !REPLICA_COUNTS.contains(&replicas) {
            return Err(SettingsError::BadReplicas(replicas));
        }
        if replicas > nodes {
            return Err(SettingsError::NotEnoughNodes { replicas, nodes });
        }
        let settings = Settings {
            replicas: replicas as u8,
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            max_record_bytes: self.max_record_bytes,
        };
        settings.check(base)?;
        Ok(settings)
    }
}

impl Settings {
    /// Every value within what the log engine takes.
    pub fn check(&self, base: &LogConfig) -> Result<(), SettingsError> {
        let ceiling = record_ceiling(base.max_segment_bytes);
        for (key, value, min, max) in [
            ("retention_bytes", self.retention_bytes, 1, u64::MAX),
            ("retention_ms", self.retention_ms, 1, u64::MAX),
            ("max_record_bytes", self.max_record_bytes, 1, ceiling),
        ] {
            if let Some(value) = value
                && !(min..=max).contains(&value)
            {
                return Err(SettingsError::OutOfRange { key, value, min, max });
            }
        }
        Ok(())
    }

    /// These settings with `change` made.
    pub fn changed(&self, change: &RetentionChange) -> Settings {
        Settings {
            retention_bytes: change.retention_bytes.unwrap_or(self.retention_bytes),
            retention_ms: change.retention_ms.unwrap_or(self.retention_ms),
            ..self.clone()
        }
    }

    /// The log configuration a log with these settings opens with.
    pub fn log_config(&self, base: &LogConfig) -> LogConfig {
        let retention = self.retention(base);
        LogConfig {
            max_record_bytes: self.max_record_bytes.unwrap_or(base.max_record_bytes),
            retention_bytes: retention.bytes,
            retention_ms: retention.ms,
            ..base.clone()
        }
    }

    /// What retention keeps, the node's flags filling what is left out.
    pub fn retention(&self, base: &LogConfig) -> Retention {
        Retention {
            bytes: self.retention_bytes.or(base.retention_bytes),
            ms: self.retention_ms.or(base.retention_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_default_to_what_the_nodes_allow() {
        let base = LogConfig::default();
        let on = |nodes| Requested::default().resolve(nodes, &base).unwrap().replicas;
        assert_eq!((on(1), on(2), on(3), on(7)), (1, 1, 3, 3));
        let asked = |replicas, nodes| {
            Requested {
                replicas: Some(replicas),
                ..Requested::default()
            }
            .resolve(nodes, &base)
        };
        assert_eq!(asked(2, 5), Err(SettingsError::BadReplicas(2)));
        assert_eq!(
            asked(3, 1),
            Err(SettingsError::NotEnoughNodes { replicas: 3, nodes: 1 })
        );
        assert_eq!(asked(5, 5).unwrap().replicas, 5);
    }

    #[test]
    fn values_are_bounded_and_defaults_come_from_the_node() {
        let base = LogConfig {
            retention_ms: Some(60_000),
            ..LogConfig::default()
        };
        let zero = Requested {
            retention_bytes: Some(0),
            ..Requested::default()
        };
        assert!(matches!(
            zero.resolve(1, &base),
            Err(SettingsError::OutOfRange {
                key: "retention_bytes",
                ..
            })
        ));
        let huge = Requested {
            max_record_bytes: Some(u64::MAX),
            ..Requested::default()
        };
        assert!(huge.resolve(1, &base).is_err());
        let settings = Requested {
            retention_bytes: Some(4096),
            ..Requested::default()
        }
        .resolve(1, &base)
        .unwrap();
        let config = settings.log_config(&base);
        assert_eq!(config.retention_bytes, Some(4096));
        assert_eq!(config.retention_ms, Some(60_000), "the node's flag fills the gap");
        assert_eq!(config.max_record_bytes, base.max_record_bytes);
        let changed = settings.changed(&RetentionChange {
            retention_bytes: Some(None),
            retention_ms: Some(Some(5)),
        });
        assert_eq!((changed.retention_bytes, changed.retention_ms), (None, Some(5)));
        assert_eq!(changed.replicas, settings.replicas);
    }
}
