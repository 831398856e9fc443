//! The `apikeys` binary: parse the command line and run it.

use clap::Parser as _;

/// mimalloc rather than glibc's malloc: under load, glibc's arena locks and frees took about a fifth
/// of the process's CPU (`perf`, see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = apikeys::cli::Cli::parse();
    match apikeys::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("apikeys: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
