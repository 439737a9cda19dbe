//! Every change the engine makes to the data directory outside the append
//! hot path goes through here: creating, sizing, syncing, rewriting and
//! removing segment files, and syncing the directory; and so does every
//! write of the small files Raft keeps beside the log (`cluster::durable`:
//! a temporary file written, synced and renamed over the document;
//! `cluster::marks`: a slot written in place). The crash-safety order of a
//! cut, a purge, a reset, a roll or a document's replacement lives in the
//! callers; this module only names each step (`Step`), so that tests can
//! watch every step of those changes (to rebuild what a power cut could
//! leave on disk) or fail any one of them (to check what an error leaves
//! behind), and adds the file's path to every error it returns.
//!
//! Watching costs one relaxed atomic load per step while nobody watches.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use memmap2::MmapMut;

/// One change to the data directory, told to watchers before it is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// A file (a segment's, the lock file, a mark file) is opened, and
    /// created if it is missing.
    Open(&'a Path),
    /// A file is created, or emptied if it is there (a document's temporary file).
    Create(&'a Path),
    /// Bytes are written at this position, by a plain write rather than
    /// the append path (a document, or a mark's slot).
    Write(&'a Path, u64),
    /// The first file is renamed over the second (both in one directory);
    /// the new name is durable once the directory is synced.
    Rename(&'a Path, &'a Path),
    /// The data directory is created, with any missing parent.
    CreateDir(&'a Path),
    Remove(&'a Path),
    SetLen(&'a Path, u64),
    /// Blocks are allocated up to this size (fallocate), growing the file.
    Allocate(&'a Path, u64),
    /// fdatasync: the file's data and size are durable once it returns.
    SyncData(&'a Path),
    /// fsync: as `SyncData`, and the rest of the file's metadata.
    SyncAll(&'a Path),
    /// msync of a mapped file: its mapped pages are durable once it returns.
    FlushMap(&'a Path),
    /// The directory's entries (creations, removals) are durable once it returns.
    SyncDir(&'a Path),
    /// Bytes already written are overwritten in place (at this position).
    Rewrite(&'a Path, u64),
}

impl Step<'_> {
    /// The file or directory the step changes (for a rename, the file renamed).
    pub fn path(&self) -> &Path {
        match self {
            Step::Open(p)
            | Step::Create(p)
            | Step::Write(p, _)
            | Step::Rename(p, _)
            | Step::CreateDir(p)
            | Step::Remove(p)
            | Step::SetLen(p, _)
            | Step::Allocate(p, _)
            | Step::SyncData(p)
            | Step::SyncAll(p)
            | Step::FlushMap(p)
            | Step::SyncDir(p)
            | Step::Rewrite(p, _) => p,
        }
    }
}

/// Called before each step under the watched directory; an error fails
/// the step (it is not made) with that error.
pub type Observer = Arc<dyn Fn(&Step<'_>) -> io::Result<()> + Send + Sync>;

struct Watcher {
    id: u64,
    dir: PathBuf,
    observer: Observer,
}

static WATCHERS: Mutex<Vec<Watcher>> = Mutex::new(Vec::new());
static WATCHING: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Watching a directory until dropped.
#[must_use = "the watch ends when this is dropped"]
pub struct Watch {
    id: u64,
}

/// Calls `observer` before every step on a path under `dir` (for tests:
/// several logs in other directories may run in the same process).
pub fn watch(dir: &Path, observer: Observer) -> Watch {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut watchers = WATCHERS.lock().unwrap_or_else(PoisonError::into_inner);
    watchers.push(Watcher {
        id,
        dir: dir.to_path_buf(),
        observer,
    });
    WATCHING.store(watchers.len(), Ordering::Release);
    Watch { id }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut watchers = WATCHERS.lock().unwrap_or_else(PoisonError::into_inner);
        watchers.retain(|w| w.id != self.id);
        WATCHING.store(watchers.len(), Ordering::Release);
    }
}

fn before(step: Step<'_>) -> io::Result<()> {
    if WATCHING.load(Ordering::Acquire) == 0 {
        return Ok(());
    }
    let observers: Vec<Observer> = {
        let watchers = WATCHERS.lock().unwrap_or_else(PoisonError::into_inner);
        watchers
            .iter()
            .filter(|w| step.path().starts_with(&w.dir))
            .map(|w| w.observer.clone())
            .collect()
    };
    // Outside the registry's lock: an observer may read the directory or
    // take as long as it likes.
    observers.iter().try_for_each(|observer| observer(&step))
}

/// The error with the path it concerns, keeping its kind (a full disk stays
/// a full disk).
pub fn naming(path: &Path, error: io::Error) -> io::Error {
    io::Error::new(error.kind(), format!("{}: {error}", path.display()))
}

fn step<T>(step: Step<'_>, op: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    before(step).and_then(|()| op()).map_err(|e| naming(step.path(), e))
}

/// Opens a segment file for reading and writing, creating it if missing.
pub fn open(path: &Path) -> io::Result<File> {
    step(Step::Open(path), || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
    })
}

/// Creates a file for writing, emptying it if it is there.
pub fn create(path: &Path) -> io::Result<File> {
    step(Step::Create(path), || File::create(path))
}

/// Writes all of `bytes` at `pos`.
pub fn write(file: &File, path: &Path, pos: u64, bytes: &[u8]) -> io::Result<()> {
    step(Step::Write(path, pos), || file.write_all_at(bytes, pos))
}

/// Renames `from` over `to`, which it replaces atomically if it is there.
pub fn rename(from: &Path, to: &Path) -> io::Result<()> {
    step(Step::Rename(from, to), || fs::rename(from, to))
}

pub fn remove(path: &Path) -> io::Result<()> {
    step(Step::Remove(path), || fs::remove_file(path))
}

/// Creates the data directory and any missing parent.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    step(Step::CreateDir(dir), || fs::create_dir_all(dir))
}

/// Removes an empty directory (one a failed open created).
pub fn remove_dir(dir: &Path) -> io::Result<()> {
    step(Step::Remove(dir), || fs::remove_dir(dir))
}

/// Opens (creating it if missing) the file whose lock marks a data
/// directory as in use. Returns whether this call created it.
pub fn open_lock_file(path: &Path) -> io::Result<(File, bool)> {
    step(Step::Open(path), || {
        match OpenOptions::new().create_new(true).write(true).open(path) {
            Ok(file) => Ok((file, true)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                OpenOptions::new().write(true).open(path).map(|file| (file, false))
            }
            Err(e) => Err(e),
        }
    })
}

/// Whether `path` still names `file` (same device and inode): a lock taken
/// on a file that was unlinked or replaced meanwhile locks nothing anyone
/// else will find.
pub fn still_names(path: &Path, file: &File) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata().map_err(|e| naming(path, e))?;
    match fs::metadata(path) {
        Ok(named) => Ok(named.dev() == held.dev() && named.ino() == held.ino()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(naming(path, e)),
    }
}

/// Space on the filesystem holding a path (statvfs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Space {
    /// Bytes an unprivileged writer may still allocate: available blocks
    /// times the fragment size.
    pub available: u64,
    /// The filesystem's size.
    pub total: u64,
}

pub fn space(path: &Path) -> io::Result<Space> {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| naming(path, io::Error::other("path holds a NUL byte")))?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer statvfs fills on success.
    let rc = unsafe { libc::statvfs(name.as_ptr(), stats.as_mut_ptr()) };
    if rc != 0 {
        return Err(naming(path, io::Error::last_os_error()));
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let stats = unsafe { stats.assume_init() };
    Ok(Space {
        available: stats.f_bavail.saturating_mul(stats.f_frsize),
        total: stats.f_blocks.saturating_mul(stats.f_frsize),
    })
}

pub fn set_len(file: &File, path: &Path, len: u64) -> io::Result<()> {
    step(Step::SetLen(path, len), || file.set_len(len))
}

pub fn sync_data(file: &File, path: &Path) -> io::Result<()> {
    step(Step::SyncData(path), || file.sync_data())
}

pub fn sync_all(file: &File, path: &Path) -> io::Result<()> {
    step(Step::SyncAll(path), || file.sync_all())
}

pub fn flush_map(map: &MmapMut, path: &Path) -> io::Result<()> {
    step(Step::FlushMap(path), || map.flush())
}

/// Makes the directory's entries durable: files created, renamed or removed in it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    step(Step::SyncDir(dir), || File::open(dir)?.sync_all())
}

pub fn rewrite(file: &File, path: &Path, pos: u64, bytes: &[u8]) -> io::Result<()> {
    step(Step::Rewrite(path, pos), || file.write_all_at(bytes, pos))
}

/// Allocates the bytes of `file` from `from` up to `to` now, growing the
/// file to `to` if it is shorter (the step is told as `Allocate(path, to)`).
/// Returns false where the filesystem cannot, so that callers fall back to
/// sparse files.
pub fn allocate(file: &File, path: &Path, from: u64, to: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    debug_assert!(from <= to, "an allocation runs forwards");
    step(Step::Allocate(path, to), || {
        let too_large = || io::Error::other("file size too large");
        let offset = libc::off_t::try_from(from).map_err(|_| too_large())?;
        let len = libc::off_t::try_from(to.saturating_sub(from)).map_err(|_| too_large())?;
        if len == 0 {
            return Ok(true);
        }
        // SAFETY: a plain syscall on a descriptor this function borrows.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, offset, len) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EOPNOTSUPP) => Ok(false),
            _ => Err(err),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchers_see_steps_under_their_directory_and_can_fail_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = tempfile::tempdir().expect("tempdir");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_by_watcher = seen.clone();
        let watch = watch(
            dir.path(),
            Arc::new(move |step| {
                seen_by_watcher.lock().expect("lock").push(format!("{step:?}"));
                match step {
                    Step::Remove(_) => Err(io::Error::other("injected")),
                    _ => Ok(()),
                }
            }),
        );
        let path = dir.path().join("a");
        let file = open(&path).expect("open");
        sync_all(&file, &path).expect("sync");
        let error = remove(&path).expect_err("the watcher fails removals");
        assert!(error.to_string().contains("injected"), "{error}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "names the file: {error}"
        );
        assert!(path.exists(), "a failed step is not made");
        open(&other.path().join("b")).expect("open elsewhere");
        assert_eq!(
            seen.lock().expect("lock").len(),
            3,
            "only steps under the watched directory"
        );
        drop(watch);
        remove(&path).expect("no watcher, no failure");
    }

    #[test]
    fn a_lock_file_unlinked_or_replaced_is_no_longer_named_by_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("LOCK");
        let (first, created) = open_lock_file(&path).expect("open");
        assert!(created);
        assert!(still_names(&path, &first).expect("stat"));
        let (again, created) = open_lock_file(&path).expect("open");
        assert!(!created, "an existing lock file is opened, not created");
        assert!(still_names(&path, &again).expect("stat"));
        remove(&path).expect("remove");
        assert!(!still_names(&path, &first).expect("stat"), "unlinked");
        let (replacement, created) = open_lock_file(&path).expect("open");
        assert!(created);
        assert!(!still_names(&path, &first).expect("stat"), "replaced");
        assert!(still_names(&path, &replacement).expect("stat"));
    }
}
