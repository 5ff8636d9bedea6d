//! The `ward` binary: everything happens in [`ward::cli`].

/// mimalloc: the query path allocates small, short-lived buffers from
/// several threads, where it costs less CPU per query than glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ward::cli::main()
}
