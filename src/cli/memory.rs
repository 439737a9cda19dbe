//! The server process's memory policy: no transparent huge pages.
//!
//! mimalloc asks for huge pages on its segments (`madvise(MADV_HUGEPAGE)`),
//! and each thread allocates from segments of its own. A node holding many
//! named logs runs a commit thread and a flush thread per log, so its first
//! allocation on each thread, and every reuse of memory mimalloc gave back,
//! faulted in a 2 MiB page the kernel zeroed first: restarting three nodes
//! of 1,000 logs each spent about half of one node's CPU samples in
//! `clear_page_erms`. With huge pages off the restart took 30-35 s against
//! 48 s (alternated runs on one cluster), and 13.4 s against 31.0 s on
//! fresh clusters with the start's fewer syncs (`docs/named-logs.md`).
//! Pages of 4 KiB cost the heap a few more TLB misses; standalone POST
//! throughput showed no difference.

/// Turns transparent huge pages off for this process and the threads it
/// starts (`PR_SET_THP_DISABLE`, kept across fork and exec; the server
/// starts no other program). Called before the runtime and every log's
/// threads start. Best effort: a kernel without it leaves the policy as it
/// was, and says so in the log.
pub fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl with integer arguments only; it touches no memory of ours.
        let (on, unused): (libc::c_ulong, libc::c_ulong) = (1, 0);
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, on, unused, unused, unused) };
        if rc != 0 {
            tracing::info!(error = %std::io::Error::last_os_error(), "transparent huge pages stay as the system has them");
        }
    }
}
