//! `peerdex`: the agent and command-line client. The work happens in the library (`cli`).

fn main() -> std::process::ExitCode {
    peerdex::cli::main()
}
