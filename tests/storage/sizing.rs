//! How much disk the engine takes ahead of its data: the active store is
//! allocated in bounded chunks (never the whole segment), a full disk while
//! it grows is an error naming the file, index files are sized from the
//! segment size and cut to their entries once sealed, and a segment larger
//! than the free space is refused at open.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use distlog::log::fsops::{self, Step};
use distlog::log::{Durability, Log, LogConfig, LogError, MIB};

use crate::fixtures::{INDEX_ENTRY, index_name, store_name};

/// Bytes the file system holds for `path` (not its length: a sparse or
/// cut file holds fewer, an allocated one more).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

fn allocated_in(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| allocated(&entry.unwrap().path()))
        .sum()
}

fn never(max_segment_bytes: u64) -> LogConfig {
    LogConfig {
        max_segment_bytes,
        durability: Durability::Never,
        ..LogConfig::default()
    }
}

#[test]
fn the_active_store_is_allocated_a_few_mib_ahead_of_its_data_not_to_the_segment_size() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), never(1 << 30)).unwrap();
    let store = dir.path().join(store_name(0));
    assert!(
        allocated(&store) <= 8 * MIB,
        "an empty 1 GiB segment holds {} bytes of disk",
        allocated(&store)
    );
    let value = vec![b'x'; 64 << 10];
    let mut written = 0u64;
    while written < 20 * MIB {
        log.append(&value).unwrap();
        written += value.len() as u64;
    }
    let (data, held) = (log.stats().size_bytes, allocated(&store));
    // Up to two chunks of 4 MiB ahead, and a few blocks of file-system metadata.
    assert!(
        held >= data && held <= data + 8 * MIB + (64 << 10),
        "{data} bytes of frames, {held} allocated"
    );
    assert_eq!(
        log.read(300).unwrap().value,
        value,
        "appends past the first chunk read back"
    );
    drop(log);
    let log = Log::open(dir.path(), never(1 << 30)).unwrap();
    assert_eq!(log.next_offset(), written / value.len() as u64, "reopens whole");
}

/// Fails every allocation of `file` while `full` is set, as a full disk would.
fn disk_full_for(dir: &Path, file: &Path, full: Arc<AtomicBool>) -> fsops::Watch {
    let file = file.to_path_buf();
    fsops::watch(
        dir,
        Arc::new(move |step: &Step<'_>| match step {
            Step::Allocate(path, _) if *path == file && full.load(Ordering::SeqCst) => {
                Err(io::Error::from_raw_os_error(libc::ENOSPC))
            }
            _ => Ok(()),
        }),
    )
}

/// A full disk while the store grows fails that append with ENOSPC naming
/// the store, and nothing else: no byte of it was written (the allocation
/// comes first), so the log stays as it was and takes appends again once
/// there is room. Failing the writer would turn a full disk, which an
/// operator fixes by freeing space, into a restart.
#[test]
fn a_full_disk_while_the_store_grows_fails_the_append_naming_the_file_and_appends_resume_with_room() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), never(256 * MIB)).unwrap();
    let store = dir.path().join(store_name(0));
    let full = Arc::new(AtomicBool::new(true));
    let _watch = disk_full_for(dir.path(), &store, full.clone());
    let value = vec![b'y'; 64 << 10];
    let mut refused = None;
    for offset in 0..(64 * MIB / value.len() as u64) {
        match log.append(&value) {
            Ok(at) => assert_eq!(at, offset),
            Err(e) => {
                refused = Some((offset, e));
                break;
            }
        }
    }
    let (next, error) = refused.expect("the store grows within 64 MiB of appends");
    assert!(error.is_disk_full(), "ENOSPC stays a full disk: {error}");
    assert!(
        error.to_string().contains(&store.display().to_string()),
        "names the file: {error}"
    );
    assert_eq!(log.next_offset(), next, "the refused append left nothing");
    assert_eq!(log.failure(), None, "a full disk does not fail the writer");
    assert!(matches!(log.append(&value), Err(LogError::Io(_))), "still full");
    full.store(false, Ordering::SeqCst);
    assert_eq!(log.append(&value).unwrap(), next, "room again: appends resume");
    for offset in 0..=next {
        assert_eq!(log.read(offset).unwrap().value, value);
    }
}

#[test]
fn small_segments_use_little_disk_and_sealed_indexes_are_cut_to_their_entries() {
    for durability in [Durability::Always, Durability::Never] {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            max_segment_bytes: 4096,
            max_record_bytes: 1024,
            durability,
            ..LogConfig::default()
        };
        let log = Log::open(dir.path(), config.clone()).unwrap();
        for i in 0..100 {
            log.append(format!("{{\"record\":{i},\"pad\":\"{}\"}}", "p".repeat(100)).as_bytes())
                .unwrap();
        }
        assert!(log.stats().segments > 2, "{durability:?}: 4 KiB segments roll");
        let held = allocated_in(dir.path());
        assert!(
            held < MIB,
            "{durability:?}: 100 small records hold {held} bytes of disk"
        );
        assert_sealed_indexes_hold_only_their_entries(dir.path());
        drop(log);
        let log = Log::open(dir.path(), config).unwrap();
        assert_eq!(log.next_offset(), 100);
        assert!(log.read(99).unwrap().value.starts_with(b"{\"record\":99,"));
    }
}

/// The bases of the segments in `dir`, in order.
fn bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".store").map(|stem| stem.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn index_path(dir: &Path, base: u64) -> std::path::PathBuf {
    dir.join(index_name(base))
}

fn assert_sealed_indexes_hold_only_their_entries(dir: &Path) {
    let bases = bases(dir);
    for pair in bases.windows(2) {
        let len = std::fs::metadata(index_path(dir, pair[0])).unwrap().len();
        assert_eq!(len, (pair[1] - pair[0]) * 12, "sealed index of segment {}", pair[0]);
    }
}

/// Sealed indexes written by older versions (the full configured size,
/// zeros after the entries) and cut ones both open; so does an active
/// index of any size after an unclean stop.
#[test]
fn indexes_of_any_size_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        max_segment_bytes: 4096,
        max_record_bytes: 1024,
        durability: Durability::Never,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..100u64 {
        log.append(format!("record {i} {}", "q".repeat(200)).as_bytes())
            .unwrap();
    }
    drop(log);
    let bases = bases(dir.path());
    assert!(bases.len() > 3);
    // The first sealed index as an older version left it after a crash: full size.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open(index_path(dir.path(), bases[0]))
        .unwrap();
    full.set_len(12 * MIB).unwrap();
    // The active one cut short (a crash lost its tail) and one grown odd.
    let active = std::fs::OpenOptions::new()
        .write(true)
        .open(index_path(dir.path(), *bases.last().unwrap()))
        .unwrap();
    active.set_len(INDEX_ENTRY * 2 + 5).unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.next_offset(), 100);
    for i in 0..100u64 {
        assert_eq!(
            log.read(i).unwrap().value,
            format!("record {i} {}", "q".repeat(200)).as_bytes()
        );
    }
    assert_eq!(log.append(b"after").unwrap(), 100);
    drop(log);
    assert_sealed_indexes_hold_only_their_entries(dir.path());
}

#[test]
fn a_segment_larger_than_the_free_space_is_refused_and_leaves_nothing_behind() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    // Refused whatever the durability (with `--fsync always` the store is
    // zeroed ahead in chunks, but a full segment would still not fit).
    let config = LogConfig {
        max_segment_bytes: 1 << 40,
        ..LogConfig::default()
    };
    match Log::open(&dir, config) {
        Err(LogError::Config { key, allowed, .. }) => {
            assert_eq!(key, "max_segment_bytes");
            assert!(allowed.contains("free"), "{allowed}");
        }
        other => panic!("a 1 TiB segment must be refused, got {other:?}"),
    }
    assert!(!dir.exists(), "a refused open creates nothing");
}

/// An open that fails half-way (here: no room for the new log's index)
/// removes the directory it created, its lock file and its first segment,
/// and the error names the file; on a directory holding a log it removes
/// nothing.
#[test]
fn a_failed_open_removes_what_it_created_and_nothing_else() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let full = Arc::new(AtomicBool::new(true));
    let index = dir.join(index_name(0));
    let watch = disk_full_for(parent.path(), &index, full.clone());
    let error = Log::open(&dir, never(2 * MIB)).expect_err("no room for the index");
    assert!(error.is_disk_full(), "{error}");
    assert!(
        error.to_string().contains(&index.display().to_string()),
        "names the file: {error}"
    );
    assert!(
        !dir.exists(),
        "the failed open left {:?}",
        std::fs::read_dir(&dir).map(|d| d.count())
    );

    full.store(false, Ordering::SeqCst);
    let log = Log::open(&dir, never(2 * MIB)).unwrap();
    log.append(b"kept").unwrap();
    drop(log);
    let names = || {
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let before = names();
    // The sealed-or-active index of the existing log cannot be reserved.
    full.store(true, Ordering::SeqCst);
    assert!(Log::open(&dir, never(2 * MIB)).is_err());
    assert_eq!(names(), before, "nothing an earlier run wrote is removed");
    full.store(false, Ordering::SeqCst);
    drop(watch);
    assert_eq!(
        Log::open(&dir, never(2 * MIB)).unwrap().read(0).unwrap().value,
        &b"kept"[..]
    );
}

/// A log already on the disk is opened with a segment size the free space
/// cannot hold (a disk filling up, or a larger `--max-segment-bytes`), as
/// long as the filesystem could: refusing it would stop reads and the
/// retention that frees space. Needs a filesystem with more than a segment's
/// worth of used space, so that such a size exists: the one the build is on
/// (CARGO_TARGET_TMPDIR), not the temporary directory, which CI puts on an
/// empty tmpfs.
#[test]
fn an_existing_log_opens_with_a_segment_larger_than_the_free_space_but_not_the_filesystem() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let space = fsops::space(dir.path()).unwrap();
    // Half-way between the free space and the filesystem's size, index included.
    let size = (space.available + (space.total - space.available) / 2).min(1 << 40);
    let between = never(size);
    let needed = size + between.index_file_bytes();
    assert!(
        needed > space.available + 8 * MIB && needed < space.total,
        "this filesystem ({space:?}) has no segment size between its free space and its size"
    );
    let refused = Log::open(dir.path(), between.clone());
    assert!(
        matches!(refused, Err(LogError::Config { .. })),
        "a new log is refused: {refused:?}"
    );
    let log = Log::open(dir.path(), never(2 * MIB)).unwrap();
    log.append(b"kept").unwrap();
    drop(log);
    let log = Log::open(dir.path(), between).expect("an existing log opens on a filling disk");
    assert_eq!(log.read(0).unwrap().value, &b"kept"[..]);
    assert_eq!(log.append(b"more").unwrap(), 1);
}
