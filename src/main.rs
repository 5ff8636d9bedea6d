//! The `ward` binary: everything happens in [`ward::cli`].

/// mimalloc: the query path allocates small, short-lived buffers from
/// several threads, where it costs less CPU per query than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // No transparent huge pages for this process: mimalloc asks for them
    // on its arena (MADV_HUGEPAGE), and then every 2 MiB region it touches
    // is resident whole: 18 MiB of RSS for an idle DNS forwarder instead
    // of 2 MiB. A router counts its memory in pages, not in TLB misses.
    // Set before the runtime starts, so nothing faults in huge pages after.
    let _ = nix::sys::prctl::set_thp_disable(true);
    ward::cli::main()
}
