//! Figures about this process read from the kernel: open file descriptors,
//! resident memory, and the open-files limit (raised at startup).

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Open file descriptors of this process.
pub fn open_fds() -> u64 {
    match std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        Ok(entries) => (entries.count() as u64).saturating_sub(1),
        Err(_) => 0,
    }
}

/// Resident set size in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .unwrap_or(4096) as u64;
    pages * page_size
}

/// The open-files limit: soft and hard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NofileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns before and after.
pub fn raise_nofile_limit() -> std::io::Result<(NofileLimit, NofileLimit)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let before = NofileLimit { soft, hard };
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok((before, NofileLimit { soft, hard }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_and_rss_are_read() {
        // Other tests in this process open and close a few fds meanwhile:
        // open many and allow a margin.
        let before = open_fds();
        let files: Vec<_> = (0..200)
            .map(|_| std::fs::File::open("/proc/self/statm").unwrap())
            .collect();
        let during = open_fds();
        assert!(during >= before + 180, "{before} -> {during}");
        drop(files);
        assert!(open_fds() <= during - 180);
        assert!(rss_bytes() > 1024 * 1024);
    }

    #[test]
    fn nofile_soft_limit_is_raised_to_hard() {
        let (before, after) = raise_nofile_limit().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
    }
}
