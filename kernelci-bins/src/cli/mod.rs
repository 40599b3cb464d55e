//! `kci`: the KernelCI command-line tool.

pub mod local;

use clap::{Parser, Subcommand};

/// The KernelCI command-line tool.
#[derive(Debug, Parser)]
#[command(name = "kci", version, about = "KernelCI command-line tool")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work on a local embedded (SQLite) node store directly, without a server.
    #[command(subcommand)]
    Local(local::LocalCommand),
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Local(cmd) => local::run(cmd).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kci: error: {e}");
            1
        }
    }
}
