//! `peerdex-server`: see `peerdex_server::cli`.

fn main() -> std::process::ExitCode {
    peerdex_server::cli::main()
}
