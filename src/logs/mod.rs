//! Named logs: many logs on one node, each with its own settings, offsets,
//! consumer positions and producers table (issue 22; `docs/named-logs.md`).
//! `name` says what a name may be, `settings` what a log is configured
//! with, `catalog` keeps them on disk and open. The HTTP layer finds a log
//! here and serves it with the same handlers as the default log.

mod catalog;
mod name;
mod placed;
mod settings;

pub use catalog::{Catalog, CatalogConfig, CatalogError, Created, DEFAULT_MAX_LOGS, Found, NamedLog, Remote};
pub use name::{DEFAULT_LOG, InvalidName, LogName, MAX_NAME_LEN, check as check_name};
pub use settings::{REPLICA_COUNTS, Requested, RetentionChange, Settings, SettingsError};

/// Where a node keeps its named logs, under its data directory.
pub const LOGS_DIR: &str = "logs";

/// Where a cluster member keeps its replicas of named logs (by group id;
/// see `placed`), under its data directory.
pub const GROUPS_DIR: &str = "groups";
