//! Crash points in multi-step cluster changes, for the fault tests: a
//! test stops a change between two of its steps, as a crash or a lost
//! connection would, and checks that the cluster finishes it anyway.
//!
//! `DISTLOG_FAILPOINT=<point>:<action>`, read once per process, where
//! `<point>` is one of `POINTS` and `<action>` is `error` (the step fails,
//! as if its answer was lost), `hang` (the step never ends, as a request cut
//! off mid-way leaves it), `abort` (the process dies on the spot) or
//! `until=<path>` (the step waits until the file `<path>` exists, as a slow
//! disk makes it wait, for as long as the test wants). `error`, `hang` and
//! `until` act once per process. Unset, every check is one load of a
//! cell. Only debug builds (the tests' binary) read the variable: a release
//! build has no crash points whatever its environment says.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

/// The variable tests set.
pub const FAILPOINT_ENV: &str = "DISTLOG_FAILPOINT";

/// The points there are: after a join added its learner (before the
/// learner is made a voter in place of its stale twin).
pub const JOIN_AFTER_LEARNER: &str = "join-after-learner";
/// A named log's creation, after its settings are written in
/// `.creating.<name>` (before the rename that makes it exist).
pub const LOG_CREATE_BEFORE_RENAME: &str = "log-create-before-rename";
/// A named log's creation, after the rename (before the log is opened).
pub const LOG_CREATE_AFTER_RENAME: &str = "log-create-after-rename";
/// A named log's deletion, after the rename to `.deleting.<name>.<n>`
/// (before the directory is removed).
pub const LOG_DELETE_AFTER_RENAME: &str = "log-delete-after-rename";
/// A named log's replica in a cluster (`logs::placed`): the catalogue
/// placed it here, before its directory is made.
pub const GROUP_CREATE_BEFORE_DIR: &str = "group-create-before-dir";
/// ... after its directory is made, before its group starts.
pub const GROUP_CREATE_AFTER_DIR: &str = "group-create-after-dir";
/// ... after its group started, before the first placed node initializes it.
pub const GROUP_CREATE_AFTER_START: &str = "group-create-after-start";
/// A deleted named log's replica: after its group stopped and its log
/// closed, before its directory is renamed to `.deleting.<group>`.
pub const GROUP_DELETE_AFTER_CLOSE: &str = "group-delete-after-close";
/// ... after the rename, before the directory is removed.
pub const GROUP_DELETE_AFTER_RENAME: &str = "group-delete-after-rename";
/// A cluster node's start, before it checks the frames of its log (see
/// `repair`): the check is as slow as the test makes it.
pub const STARTUP_CHECK: &str = "startup-check";
const POINTS: &[&str] = &[
    JOIN_AFTER_LEARNER,
    STARTUP_CHECK,
    LOG_CREATE_BEFORE_RENAME,
    LOG_CREATE_AFTER_RENAME,
    LOG_DELETE_AFTER_RENAME,
    GROUP_CREATE_BEFORE_DIR,
    GROUP_CREATE_AFTER_DIR,
    GROUP_CREATE_AFTER_START,
    GROUP_DELETE_AFTER_CLOSE,
    GROUP_DELETE_AFTER_RENAME,
];

#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Error,
    Hang,
    Abort,
    Until(std::path::PathBuf),
}

fn armed() -> Option<&'static (String, Action)> {
    static ARMED: OnceLock<Option<(String, Action)>> = OnceLock::new();
    ARMED
        .get_or_init(|| match cfg!(debug_assertions) {
            true => std::env::var(FAILPOINT_ENV).ok().and_then(|v| parse(&v)),
            false => None,
        })
        .as_ref()
}

/// Says at startup which crash point is armed, if one is.
pub fn announce() {
    if let Some((point, action)) = armed() {
        tracing::warn!(%point, ?action, "a crash point is armed ({FAILPOINT_ENV}): for tests only");
    }
}

fn parse(value: &str) -> Option<(String, Action)> {
    let (point, action) = value.split_once(':')?;
    let action = match action {
        "error" => Action::Error,
        "hang" => Action::Hang,
        "abort" => Action::Abort,
        _ => Action::Until(action.strip_prefix("until=").filter(|p| !p.is_empty())?.into()),
    };
    POINTS.contains(&point).then(|| (point.to_string(), action))
}

/// What `point` does when armed (see the module doc); Ok when it is not.
pub async fn hit(point: &str) -> Result<(), String> {
    static FIRED: AtomicBool = AtomicBool::new(false);
    let Some((armed, action)) = armed().filter(|(armed, _)| armed == point) else {
        return Ok(());
    };
    if *action == Action::Abort {
        tracing::error!(point = %armed, "failpoint: aborting");
        std::process::abort();
    }
    if FIRED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    tracing::warn!(point = %armed, ?action, "failpoint: stopping this step");
    match action {
        Action::Hang => std::future::pending::<()>().await,
        Action::Until(path) => {
            while !path.exists() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            tracing::warn!(point = %armed, "failpoint: going on");
            return Ok(());
        }
        _ => {}
    }
    Err(format!("failpoint {point}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_points_and_actions_arm() {
        assert_eq!(
            parse("join-after-learner:abort"),
            Some((JOIN_AFTER_LEARNER.to_string(), Action::Abort))
        );
        assert_eq!(parse("join-after-learner:error").map(|(_, a)| a), Some(Action::Error));
        assert_eq!(parse("join-after-learner:hang").map(|(_, a)| a), Some(Action::Hang));
        assert_eq!(
            parse("startup-check:until=/tmp/go").map(|(_, a)| a),
            Some(Action::Until("/tmp/go".into()))
        );
        assert_eq!(parse("startup-check:until="), None);
        assert_eq!(parse("join-after-learner"), None);
        assert_eq!(parse("no-such-point:error"), None);
        assert_eq!(parse("join-after-learner:explode"), None);
        assert_eq!(parse(""), None);
    }
}
