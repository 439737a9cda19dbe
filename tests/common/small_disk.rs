//! A small filesystem of a node's own: a tmpfs of a given size mounted
//! on its data directory, so that a test can fill it for real (ENOSPC from
//! the kernel, not injected). Mounting needs root; `SmallDisk::mount`
//! answers `None` elsewhere and the caller says what it skips.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted at `path`, unmounted on drop (a mount left behind
/// would keep the cluster's temporary directory from being deleted).
pub struct SmallDisk {
    path: PathBuf,
    /// Where its contents are copied before unmounting (the cluster's
    /// files are being kept for a look at a failure); None: not kept.
    keep_in: Option<PathBuf>,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. "128m") on the
    /// empty or missing directory `path`; None when it cannot be mounted.
    pub fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| SmallDisk {
            path: path.to_path_buf(),
            keep_in: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the contents out to `<path>.kept` before unmounting.
    pub fn keep_on_unmount(&mut self) {
        self.keep_in = Some(self.path.with_extension("kept"));
    }

    /// Fills the filesystem with one file (dd stops at ENOSPC: that is the
    /// point); returns it.
    pub fn fill(&self) -> PathBuf {
        let filler = self.path.join("filler");
        let _ = Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", filler.display()))
            .args(["bs=1M", "status=none"])
            .stderr(std::process::Stdio::null())
            .status();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        if let Some(kept) = &self.keep_in {
            let _ = Command::new("cp").arg("-a").arg(&self.path).arg(kept).status();
            eprintln!("small disk {} copied to {}", self.path.display(), kept.display());
        }
        // Lazy: a process still holding a file in it must not keep it mounted.
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}
