//! Thread counts (see `contracam_base::util::threads`, re-exported here), plus libtorch's pool.
pub use contracam_base::util::threads::*;

/// Sets libtorch's intra-op threads and builds rayon's global pool with `threads` workers. Call once, first
/// thing in `main`: rayon's global pool can only be built before its first use.
pub fn configure(threads: usize) -> Result<(), ThreadsError> {
    tch::set_num_threads(threads as i32);
    configure_rayon(threads)
}
