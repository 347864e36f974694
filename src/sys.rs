//! Allocator settings for a long-running exporter on glibc.
//!
//! The initial node list is decoded with many threads' worth of short-lived
//! allocations; glibc keeps one arena per thread and holds on to freed memory, so
//! the process would keep the peak of the first sync as its steady size. Measured
//! in docs/performance.md.

/// Where a block is served by its own `mmap` instead of from an arena: list page
/// buffers (megabytes) and rendered expositions are then returned to the system
/// when they are freed. glibc's default starts at 128 KiB but raises itself to the
/// size of any mmapped block freed (up to 32 MiB), after which every page buffer
/// comes from the arena and leaves it fragmented: 16 MiB more resident memory at
/// 5,000 nodes (docs/performance.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 256 << 10;

/// Limits glibc to two malloc arenas, and fixes the mmap threshold (see
/// [`MMAP_THRESHOLD`]), unless the environment sets them (`MALLOC_ARENA_MAX`,
/// `MALLOC_MMAP_THRESHOLD_`, `GLIBC_TUNABLES`). Call before any thread is started.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let set = |env: &str, tunable: &str| {
            std::env::var_os(env).is_some() || tunables.contains(tunable)
        };
        // SAFETY: mallopt only changes an allocator parameter, and no other thread
        // exists yet to allocate concurrently.
        unsafe {
            if !set("MALLOC_ARENA_MAX", "glibc.malloc.arena_max") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if !set("MALLOC_MMAP_THRESHOLD_", "glibc.malloc.mmap_threshold") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            }
        }
    }
}

/// Returns freed heap memory to the operating system, after a full node list has
/// replaced the previous one.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Raises the soft limit on open files to the hard limit, as Go programs do at
/// start, and returns the soft limit in force (None where it cannot be read).
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct passed.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: limit.rlim_max,
                    rlim_max: limit.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
        }
        #[allow(clippy::useless_conversion)]
        Some(u64::from(limit.rlim_cur))
    }
    #[cfg(not(unix))]
    None
}
