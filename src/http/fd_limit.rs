//! The process's open-files limit (RLIMIT_NOFILE): raised from its soft to
//! its hard value at startup, since every connection and segment file
//! takes a descriptor and distros often default the soft limit to 1024.

/// Descriptors kept for what is not a connection: segment files, the log
/// directory lock, the listener, replication clients, logs.
const RESERVED: u64 = 256;

/// The limit, before and after raising it to the hard limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenFilesLimit {
    pub before: u64,
    pub now: u64,
}

impl OpenFilesLimit {
    /// Connections that fit beside the reserved descriptors and the
    /// connections being refused (a quarter of the limit is kept when it
    /// is small).
    pub fn connections_allowed(&self, refusing: usize) -> usize {
        let reserved = RESERVED.min(self.now / 4) + refusing as u64;
        self.now.saturating_sub(reserved).max(1) as usize
    }
}

pub fn raise_open_files_limit() -> std::io::Result<OpenFilesLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads only the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(OpenFilesLimit {
        before,
        now: limit.rlim_cur,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_room_for_files_and_refusals() {
        let limit = |now| OpenFilesLimit { before: now, now };
        assert_eq!(limit(1024).connections_allowed(64), 1024 - 256 - 64);
        assert_eq!(limit(256).connections_allowed(64), 256 - 64 - 64);
        assert_eq!(limit(20).connections_allowed(64), 1);
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let raised = raise_open_files_limit().unwrap();
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        assert_eq!(raised.now, limit.rlim_cur);
        assert_eq!(limit.rlim_cur, limit.rlim_max);
    }
}
