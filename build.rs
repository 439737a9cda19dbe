//! Sets `DISTLOG_REVISION`, the commit the binary is built from (shown by
//! `distlog_build_info` on /metrics): `DISTLOG_REVISION` from the
//! environment if set (an image built without `.git`), else `git
//! rev-parse`, else "unknown". Never fails the build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=DISTLOG_REVISION");
    let revision = std::env::var("DISTLOG_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Only what the value can be made of: it lands in a Prometheus label.
    let revision: String = revision
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .take(64)
        .collect();
    println!("cargo:rustc-env=DISTLOG_REVISION={revision}");
    watch_head();
}

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    (output.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

/// Rebuilds when HEAD moves. Only paths that exist are named: a missing one
/// would make cargo run this script on every build.
fn watch_head() {
    let mut watched = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        watched.push(Path::new(&dir).join("HEAD"));
    }
    if let (Some(common), Some(head)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["rev-parse", "--symbolic-full-name", "HEAD"]),
    ) {
        watched.push(Path::new(&common).join(head));
        watched.push(Path::new(&common).join("packed-refs"));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    // Without any watched path cargo would rerun this on every change of
    // the package; this file keeps it to changes of the script itself.
    println!("cargo:rerun-if-changed=build.rs");
}
