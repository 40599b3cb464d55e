//! `kci`: the KernelCI command-line tool.

pub mod api;
pub mod config;
pub mod job;
pub mod kcidb;
pub mod local;
pub mod up;

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
    /// KCIDB documents: `kci kcidb export --checkout ID`.
    #[command(subcommand)]
    Kcidb(kcidb::KcidbCommand),
    /// Run everything in one process: API server, storage, pipeline services (`--demo`:
    /// on a generated kernel tree, offline).
    Up(up::UpArgs),
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
        Command::Kcidb(cmd) => kcidb::run(&cli.api, cmd).await,
        Command::Up(args) => return up::up(cli.api.settings.clone(), args).await,
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("kci: error: {e}");
            1
        }
    }
}
