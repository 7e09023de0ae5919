//! Freed CPU tensor memory kept in the process for the next batch instead of going back to the kernel.
//!
//! With glibc's default settings every allocation above the mmap threshold (128 KiB, rising to at most
//! 32 MiB; a ResNet-50 layer1 activation at batch 16, 224 px is 49 MiB) is its own `mmap`, and freed heap
//! memory above the trim threshold is returned:
//! every forward pass of ContraCAM's ten then faults its activations in afresh, page by page, and the
//! kernel zeroes each page. On a ResNet-50 CAM at one thread that is ~3.3 million page faults per 16
//! images, a fifth of the CPU time, with the same peak memory; a ResNet-18 224 px MoCo step (batch 32)
//! faulted 28 % more than the PyTorch loop. Serving every allocation from the heap and not trimming it
//! lets each pass or step reuse the previous one's pages: the same arithmetic (results are bit-identical),
//! no faults after the first pass. Peak RSS moves either way: lower for a ResNet-50 CAM batch (675 against
//! 711 MB), higher for `localize dataset` with the CRF on worker threads (753 against 573 MB at 112 px, batch
//! 64), still independent of the dataset's size. The process
//! keeps its peak heap until it exits.

use std::sync::OnceLock;

/// Applies the setting once per process (later calls do nothing); true when it is in force. Process-wide:
/// `contracam-torch` applies it at start for every command (training, localization, suites); a library
/// function other programs embed does not call it.
pub fn reuse_freed_memory() -> bool {
    static APPLIED: OnceLock<bool> = OnceLock::new();
    *APPLIED.get_or_init(apply)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes glibc's allocator parameters; both values are in their valid ranges.
    // M_MMAP_MAX 0: no allocation gets its own mapping (non-main arenas still map one that no heap can
    // hold). M_TRIM_THRESHOLD at its maximum: the heap's free top is kept for reuse.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
