//! What the process asks of the allocator: fewer heap arenas, and memory given back to
//! the system when the agent goes idle.

/// glibc gives each thread that allocates its own heap arena (up to 8 per core), and
/// the agent's batches are allocated on several threads (reader, buffer writer, the
/// runtime's workers and blocking pool): freed batch memory then sits in many arenas
/// at once. Two arenas keep the resident set nearer what is live (measured on the
/// shipping benchmark with compression off: 55-59 MiB peak with glibc's default,
/// 43-50 MiB with two) at no measurable CPU cost. `MALLOC_ARENA_MAX` in the environment
/// still wins. Call it first thing in `main`, before any other thread exists.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any other thread exists;
        // mallopt only adjusts allocator parameters.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Hands the free pages of the heap back to the system (glibc keeps them for reuse):
/// an idle agent then holds what it uses, not what its last burst of reading did.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns unused heap memory to the system; it is
    // thread-safe (it takes each arena's lock).
    unsafe {
        libc::malloc_trim(0);
    }
}
