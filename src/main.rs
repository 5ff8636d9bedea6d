//! The `ward` binary: everything happens in [`ward::cli`].

fn main() -> std::process::ExitCode {
    ward::cli::main()
}
