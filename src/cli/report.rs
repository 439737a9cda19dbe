//! How a start that fails is told: one line on stderr, each cause once, no
//! backtrace (whatever `RUST_BACKTRACE` says: the message names the flag
//! or the file, a backtrace only buries it), and a hint where the fix is
//! known (a data directory distlog may not write to: the `chown` to run).

use std::path::Path;

/// The error as one line: its causes joined by ": ", leaving out a cause
/// whose text the line already holds (an I/O error wrapped with its path
/// repeats it), then a hint if one applies.
pub fn failure_line(error: &anyhow::Error, data_dir: &Path) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    let line = line.replace('\n', " ");
    match hint(error, data_dir) {
        Some(hint) => format!("{line} ({hint})"),
        None => line,
    }
}

fn hint(error: &anyhow::Error, data_dir: &Path) -> Option<String> {
    let denied = error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    if !denied {
        return None;
    }
    // SAFETY: getuid and getgid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let dir = data_dir.display();
    Some(format!(
        "distlog runs as uid {uid}, gid {gid}: make --data-dir {dir} writable by it, e.g. \
         `chown -R {uid}:{gid} {dir}`; the container image runs as 10001:10001, so a volume needs \
         `chown -R 10001:10001` on the host"
    ))
}

#[cfg(test)]
mod tests {
    use anyhow::Context;

    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "/d/LOCK: not found");
        let error = Err::<(), _>(io)
            .context("I/O error: /d/LOCK: not found")
            .context("cannot start distlog on 127.0.0.1:1")
            .unwrap_err();
        assert_eq!(
            failure_line(&error, Path::new("/d")),
            "cannot start distlog on 127.0.0.1:1: I/O error: /d/LOCK: not found"
        );
    }

    #[test]
    fn permission_denied_says_what_to_chown() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "/d/LOCK: Permission denied");
        let error = Err::<(), _>(io).context("cannot start").unwrap_err();
        let line = failure_line(&error, Path::new("/d"));
        assert!(
            line.starts_with("cannot start: /d/LOCK: Permission denied (distlog runs as uid "),
            "{line}"
        );
        assert!(line.contains("chown -R 10001:10001"), "{line}");
        assert!(!line.contains('\n'));
    }
}
