//! glibc allocator settings for training: keep freed memory for reuse instead of returning it
//! to the kernel. A training step allocates and frees the same large buffers (activations,
//! gradients, copies) every step; by default glibc serves blocks over its (adaptive) threshold
//! with `mmap` and trims the heap top, so every step faulted in and zeroed fresh pages (8 % of a
//! CIFAR ResNet-18 width-32 step in page faults). With these settings that step took 3–8 % less
//! time (BENCHMARKS.md, fifth session). Other platforms and allocators: nothing to do.

/// `mmap` only above 32 MB (glibc's largest threshold), never trim the heap below 1 GB of free
/// space, and grow it 256 MB at a time. Called once at the start of the `byol` binary.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}
