//! `kci-tarball`: makes the source tarball of each new checkout, uploads it and marks the
//! checkout `available` (upstream `tarball.py`; settings section `[tarball]`).

use std::path::PathBuf;

use clap::Parser;
use kernelci::pipeline::service::run_service;
use kernelci::pipeline::tarball::{Tarball, TarballOptions};
use kernelci::pipeline::trigger::BuildTarget;
use kernelci_bins::service::{ServiceArgs, service_main};

/// Source tarballs for new checkouts.
#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    service: ServiceArgs,
    /// The local kernel work tree.
    #[arg(long)]
    kdir: Option<PathBuf>,
    /// Where tarballs are written before the upload.
    #[arg(long)]
    output: Option<PathBuf>,
    /// The storage entry to upload to.
    #[arg(long)]
    storage_config: Option<String>,
    /// Repositories whose tags are fetched too (default: mainline; `none` for none).
    #[arg(long = "tags-from")]
    tags_from: Vec<String>,
}

async fn main_() -> kernelci::pipeline::service::ServiceResult<i32> {
    let a = Args::parse();
    let mut setup = a.service.setup("tarball")?;
    let tags = (!a.tags_from.is_empty()).then(|| a.tags_from.join(","));
    setup
        .set("kdir", a.kdir.map(|p| p.display().to_string()))
        .set("output", a.output.map(|p| p.display().to_string()))
        .set("tags_from", tags);
    let options = TarballOptions::from_settings(&setup)?;
    let storage = setup.storage(a.storage_config)?;
    let (ctx, port) = a.service.start(&setup, None)?;
    let tarball = Tarball::new(BuildTarget::from_config(&setup.config), storage, options);
    Ok(run_service(&ctx, port, || tarball.run(&ctx)).await)
}

fn main() {
    service_main("kci-tarball", main_)
}
