//! The `apikeys` binary: parse the command line and run it.

use clap::Parser as _;

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
