//! The C allocator's settings for training.

/// Keeps memory that the process frees for its own reuse instead of handing it back to the
/// kernel; for commands that train.
///
/// Each training iteration allocates and frees the same large buffers (activations, im2col
/// matrices, gradients). glibc's allocator maps blocks above its mmap threshold afresh and
/// trims the top of its heap on free, so every iteration faulted its buffers in again, zeroed
/// page by page: a quarter of LeNet's training time (`pareidolia train`, 1 thread: 1,466 against
/// 1,949 images/s with these settings; BENCHMARKS.md). Here, blocks below 256 MiB come from
/// the heap and up to 512 MiB of free heap is kept: the process's resident memory stays at
/// its peak rather than falling between iterations, which is what a training command wants
/// and a long-running daemon does not, so only training commands call this. A no-op where
/// the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const MMAP_THRESHOLD: libc::c_int = 256 << 20;
        const TRIM_THRESHOLD: libc::c_int = 512 << 20;
        // SAFETY: mallopt only sets two numeric parameters of glibc's allocator; it takes the
        // allocator's own lock, so it is sound at any time and from any thread.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        };
        if !ok {
            tracing::debug!("mallopt refused the training settings; the allocator keeps its own");
        }
    }
}
