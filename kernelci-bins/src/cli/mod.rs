//! `kci`: the KernelCI command-line tool.

pub mod api;
pub mod config;
pub mod job;
pub mod local;
pub mod settings;

use clap::{Parser, Subcommand};

/// The KernelCI command-line tool.
#[derive(Debug, Parser)]
#[command(name = "kci", version, about = "KernelCI command-line tool")]
pub struct Cli {
    /// API location and credentials.
    #[command(flatten)]
    pub api: api::ApiArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Nodes on the API: get, find, count, create, update, submit.
    #[command(subcommand)]
    Node(api::NodeCommand),
    /// Follow events.
    #[command(subcommand)]
    Events(api::EventsCommand),
    /// Log in, whoami, invite, list users.
    #[command(subcommand)]
    User(api::UserCommand),
    /// Create and revoke API tokens.
    #[command(subcommand)]
    Token(api::TokenCommand),
    /// Jobs: run one here (`kci job run --node-id ID`), generate a definition, submit one.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Work on a local embedded (SQLite) node store directly, without a server.
    #[command(subcommand)]
    Local(local::LocalCommand),
    /// Check and inspect the pipeline YAML configuration.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Runs the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Node(cmd) => api::node(&cli.api, cmd).await,
        Command::Events(cmd) => api::events(&cli.api, cmd).await,
        Command::User(cmd) => api::user(&cli.api, cmd).await,
        Command::Token(cmd) => api::token(&cli.api, cmd).await,
        Command::Local(cmd) => local::run(cmd).await,
        Command::Config(cmd) => config::run(cmd, cli.api.json),
        Command::Job(cmd) => job::run(&cli.api, cmd).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kci: error: {e}");
            1
        }
    }
}
