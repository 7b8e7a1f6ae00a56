//! The real `peerdex` entry point, built inside the test package so tests can spawn it.

fn main() -> std::process::ExitCode {
    peerdex::cli::main()
}
