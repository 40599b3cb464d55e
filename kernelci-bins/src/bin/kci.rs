//! `kci`: the KernelCI command-line tool.

use clap::Parser;

#[tokio::main]
async fn main() {
    kernelci_bins::service::init_process("warn,warp::server=off");
    let cli = kernelci_bins::cli::Cli::parse();
    std::process::exit(kernelci_bins::cli::run(cli).await);
}
