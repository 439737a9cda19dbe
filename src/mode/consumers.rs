//! Where consumer positions (`log::consumers`) are kept, by mode:
//!
//! - **standalone**: in memory, and in `<data dir>/consumers/` (a table and
//!   a journal of changes since, see `journal`), written before a change is
//!   answered;
//! - **member**: in the cluster's tables, changed through Raft
//!   (`cluster::consumers`); any member reads what it applied, changes go
//!   to the leader as appends do;
//! - **replica** (`--follow`): not kept. A standalone leader's positions
//!   are not in its log, and a cluster's are control entries a replica
//!   only skips; reads and changes are sent to the leader.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::journal::Journal;
use super::{AppendError, Mode};
use crate::cluster::Cluster;
use crate::log::LogError;
use crate::log::consumers::{Change, Position, Positions, Refusal};
use crate::replication::FollowerStatus;

const DIR: &str = "consumers";

/// What applying a change gave: the position stored (`None`: deleted), or
/// why its rules refused it.
pub type Outcome = Result<Option<Position>, Refusal>;

/// See the module doc. Cloning is cheap (shared handles).
#[derive(Clone, Debug)]
pub struct Consumers(Kept);

#[derive(Clone, Debug)]
enum Kept {
    Local(Arc<Local>),
    Member(Cluster),
    Replica(Arc<FollowerStatus>),
}

#[derive(Debug)]
struct Local {
    /// The journal is held with the table: one change at a time.
    table: Mutex<(Positions, Journal)>,
    /// Set under the table's lock by `close`: no change is written after.
    closed: AtomicBool,
}

impl Consumers {
    /// The positions of `mode`'s node; a standalone node reads its file
    /// from `data_dir`.
    pub fn open(mode: &Mode, data_dir: &Path) -> io::Result<Consumers> {
        Ok(Consumers(match mode {
            Mode::Standalone(_) => {
                let (journal, table) = Journal::open(&data_dir.join(DIR))?;
                Kept::Local(Arc::new(Local {
                    table: Mutex::new((table, journal)),
                    closed: AtomicBool::new(false),
                }))
            }
            Mode::Member(cluster) => Kept::Member(cluster.clone()),
            Mode::Replica(status) => Kept::Replica(status.clone()),
        }))
    }

    /// Refuses every later change (a deleted named log's positions: its
    /// journal is not written once its directory is going).
    pub fn close(&self) {
        if let Kept::Local(local) = &self.0 {
            let _held = local.table.lock().unwrap_or_else(PoisonError::into_inner);
            local.closed.store(true, Ordering::Release);
        }
    }

    /// Reads the positions as this node holds them.
    pub fn read<R>(&self, read: impl FnOnce(&Positions) -> R) -> Result<R, AppendError> {
        match &self.0 {
            Kept::Local(local) => Ok(read(&local.table.lock().unwrap_or_else(PoisonError::into_inner).0)),
            Kept::Member(cluster) => Ok(cluster.positions(read)),
            Kept::Replica(status) => Err(read_only(status)),
        }
    }

    /// Makes `change` if its rules allow, durably (standalone: on disk
    /// before the answer; member: committed and applied).
    pub async fn change(&self, change: Change) -> Result<Outcome, AppendError> {
        match &self.0 {
            Kept::Local(local) => {
                let local = local.clone();
                tokio::task::spawn_blocking(move || local.change(&change))
                    .await
                    .map_err(|e| LogError::Io(io::Error::other(e.to_string())))?
            }
            Kept::Member(cluster) => Ok(cluster.change_position(change).await?),
            Kept::Replica(status) => Err(read_only(status)),
        }
    }
}

impl Local {
    /// Decides, then records the effect before the answer; a change the
    /// journal could not record is undone.
    fn change(&self, change: &Change) -> Result<Outcome, AppendError> {
        let mut kept = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed.into());
        }
        let (table, journal) = &mut *kept;
        let name = match change {
            Change::Set { name, .. } | Change::Delete { name } => name,
        };
        let before = table.get(name);
        let outcome = table.apply(change);
        if outcome.is_ok()
            && let Err(e) = journal.record(table, name, table.get(name))
        {
            table.restore(name.clone(), before);
            return Err(LogError::Io(e).into());
        }
        Ok(outcome)
    }
}

fn read_only(status: &FollowerStatus) -> AppendError {
    AppendError::ReadOnlyReplica {
        leader: status.leader.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::consumers::Expect;

    fn set(offset: u64) -> Change {
        Change::Set {
            name: "a".into(),
            offset,
            expected: Expect::Anything,
            max: 10,
            at_ms: 5,
        }
    }

    #[tokio::test]
    async fn a_standalone_nodes_positions_outlive_it() {
        let dir = tempfile::tempdir().unwrap();
        let consumers = Consumers::open(&Mode::Standalone(Default::default()), dir.path()).unwrap();
        assert!(consumers.change(set(3)).await.unwrap().is_ok());
        let again = Consumers::open(&Mode::Standalone(Default::default()), dir.path()).unwrap();
        assert_eq!(again.read(|t| t.get("a")).unwrap().map(|p| p.offset), Some(3));
    }

    #[tokio::test]
    async fn a_refused_change_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let consumers = Consumers::open(&Mode::Standalone(Default::default()), dir.path()).unwrap();
        let delete = Change::Delete { name: "a".into() };
        assert_eq!(consumers.change(delete).await.unwrap(), Err(Refusal::Unknown));
        assert_eq!(
            std::fs::metadata(dir.path().join(DIR).join("journal")).unwrap().len(),
            0
        );
    }
}
