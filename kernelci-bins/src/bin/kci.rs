//! `kci`: the KernelCI command-line tool.

use clap::Parser;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,warp::server=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = kernelci_bins::cli::Cli::parse();
    std::process::exit(kernelci_bins::cli::run(cli).await);
}
