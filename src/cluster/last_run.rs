//! What this node's previous run was: the machine's boot it ran in and
//! whether it cached writes (`--fsync never|interval`). A frame a write
//! tore (pages of an unsynced batch written back out of order) can only be
//! found after the machine went down (a power cut, an OS crash): a killed
//! or stopped process leaves the page cache to finish its writes. So a bad
//! frame found after a start in the same boot is rot, whatever the marks
//! say, and a torn write is considered only when the boot changed since a
//! run that cached writes (`repair::is_torn_tail`).
//!
//! Disk format: `raft/last_run`, a `durable` document,
//! `{"boot_id": "<the kernel's boot id, or null>", "write_caching": <bool>}`,
//! written (synced) at each start once the log is checked (unless it says
//! that already: `record`), and again with
//! `write_caching` false at a graceful stop once the log is synced (nothing
//! left to tear: a planned reboot after it changes the boot id, yet a bad
//! frame then is rot). A missing or unreadable one says nothing, and
//! nothing is taken for a torn write.

use std::io;

use serde::{Deserialize, Serialize};

use super::durable::Durable;

const LAST_RUN: &str = "last_run";
/// Linux's id of the running boot, new at each boot.
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    pub boot_id: Option<String>,
    pub write_caching: bool,
}

impl LastRun {
    /// This run, as the next start will read it.
    pub fn now(write_caching: bool) -> LastRun {
        LastRun {
            boot_id: current_boot_id(),
            write_caching,
        }
    }

    /// Whether that run was in this boot: whatever it wrote, synced or
    /// not, is on disk or in the page cache now (a process crash or a stop
    /// since, not a power cut). An unreadable boot id says no.
    pub fn in_this_boot(&self) -> bool {
        matches!((&self.boot_id, current_boot_id()), (Some(then), Some(now)) if *then == now)
    }

    /// Whether that run cached writes and the machine went down since: only
    /// then can a frame be torn rather than rotten.
    pub fn may_have_torn_writes(&self) -> bool {
        match (&self.boot_id, current_boot_id()) {
            (Some(then), Some(now)) => self.write_caching && *then != now,
            _ => false,
        }
    }
}

/// The previous run, if one was recorded and can be read.
pub fn previous(durable: &Durable) -> Option<LastRun> {
    warn_once_without_a_boot_id();
    recorded(durable)
}

/// A machine without a boot id is said once a process (a node of many
/// named logs reads the previous run of each).
fn warn_once_without_a_boot_id() {
    static SAID: std::sync::Once = std::sync::Once::new();
    if current_boot_id().is_none() {
        SAID.call_once(|| {
            tracing::warn!(
                "{BOOT_ID} cannot be read: a bad frame a power cut tore is taken for rot (a live leader must license its cut)"
            );
        });
    }
}

fn recorded(durable: &Durable) -> Option<LastRun> {
    durable.read::<LastRun>(LAST_RUN).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "raft/{LAST_RUN} cannot be read: no bad frame is taken for a torn write");
        None
    })
}

/// Records this run. One that cannot be written is removed, so that the
/// next start does not take an older run for this one.
///
/// One that is there already, the same, is not written again: a restart
/// in the same boot with `--fsync always`, or after a crash, rewrote it
/// with two disk cache flushes a replica, thousands for a node of many
/// named logs. Its directory is still synced (one flush): the run that
/// wrote it may have died between the rename and that sync, and a power
/// cut in this run must not bring back an older run's record (one that
/// cached writes would have a rotten frame cut as torn).
pub fn record(durable: &Durable, run: &LastRun) -> io::Result<()> {
    if matches!(durable.read::<LastRun>(LAST_RUN), Ok(Some(recorded)) if recorded == *run) {
        match durable.sync_names() {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, "raft/ could not be synced; writing raft/{LAST_RUN} again"),
        }
    }
    match durable.write(LAST_RUN, run, true) {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "raft/{LAST_RUN} could not be written");
            durable.remove(LAST_RUN)
        }
    }
}

fn current_boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_run_again_is_not_rewritten_and_another_is() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let durable = Durable::open(dir.path().join("raft")).expect("opens");
        let inode = || std::fs::metadata(durable.dir().join(LAST_RUN)).expect("recorded").ino();
        let run = LastRun {
            boot_id: Some("boot-a".into()),
            write_caching: false,
        };
        record(&durable, &run).expect("recorded");
        let first = inode();
        record(&durable, &run).expect("recorded");
        assert_eq!(inode(), first, "the same run is left as it was, not written again");
        let caching = LastRun {
            write_caching: true,
            ..run
        };
        record(&durable, &caching).expect("recorded");
        assert_ne!(inode(), first, "another run replaces the record");
        assert_eq!(previous(&durable), Some(caching));
    }

    #[test]
    fn only_a_run_that_cached_writes_in_another_boot_may_have_torn_writes() {
        let now = LastRun::now(true);
        if now.boot_id.is_none() {
            eprintln!("SKIPPED: no {BOOT_ID} here");
            return;
        }
        assert!(
            !now.may_have_torn_writes(),
            "the same boot: the page cache finished the writes"
        );
        let other_boot = LastRun {
            boot_id: Some("another boot".into()),
            ..now.clone()
        };
        assert!(other_boot.may_have_torn_writes());
        let syncing = LastRun {
            write_caching: false,
            ..other_boot.clone()
        };
        assert!(
            !syncing.may_have_torn_writes(),
            "--fsync always: every acknowledged write was synced"
        );
        let unknown = LastRun {
            boot_id: None,
            ..other_boot
        };
        assert!(!unknown.may_have_torn_writes());
    }

    #[test]
    fn a_run_is_read_back_and_one_that_cannot_be_written_is_not_left_behind() {
        let dir = tempfile::tempdir().expect("temp dir");
        let durable = Durable::open(dir.path().join("raft")).expect("raft");
        assert_eq!(previous(&durable), None);
        let run = LastRun::now(true);
        record(&durable, &run).expect("recorded");
        assert_eq!(previous(&durable), Some(run));
        std::fs::write(dir.path().join("raft").join(LAST_RUN), b"garbage").expect("garbled");
        assert_eq!(previous(&durable), None, "unreadable: says nothing");
    }
}
