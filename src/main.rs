//! The `imapscope` binary: parses the command line and hands it to [`cli`].

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// The relay hands 4 KiB to 256 KiB buffers between threads for every chunk it reads. By
/// default glibc serves the large ones with mmap and gives freed memory back at once, so each
/// chunk costs a page fault per page (about a sixth of the relay's CPU in a profile). Keeping
/// them on the heap and not trimming it makes the memory reusable.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

fn main() -> ExitCode {
    tune_allocator();
    cli::run(cli::Cli::parse())
}
