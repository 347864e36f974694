//! Allocator settings for a long-running exporter on glibc.
//!
//! The initial node list is decoded with many threads' worth of short-lived
//! allocations; glibc keeps one arena per thread and holds on to freed memory, so
//! the process would keep the peak of the first sync as its steady size. Measured
//! in docs/performance.md.

/// Limits glibc to two malloc arenas unless `MALLOC_ARENA_MAX` is set. Call before
/// any thread is started.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes an allocator parameter, and no other thread
        // exists yet to allocate concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
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
