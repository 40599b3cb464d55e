//! `kci-tarball`: makes the source tarball of each new checkout, uploads it and marks the
//! checkout `available` (upstream `tarball.py`; settings section `[tarball]`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kernelci::git::{FetchProgress, MAINLINE_URL, UpdateOptions};
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
    let setup = a.service.setup("tarball")?;
    let kdir = setup
        .get(a.kdir.map(|p| p.display().to_string()), "kdir")
        .unwrap_or_else(|| "data/src/linux".into());
    let output = setup
        .get(a.output.map(|p| p.display().to_string()), "output")
        .unwrap_or_else(|| "data/output".into());
    let tags = if a.tags_from.is_empty() {
        vec![
            setup
                .get(None, "tags_from")
                .unwrap_or_else(|| MAINLINE_URL.into()),
        ]
    } else {
        a.tags_from
    };
    let storage = setup.storage(a.storage_config)?;
    let ctx = a.service.context(&setup, None)?;
    // Long fetches keep the service alive on /health.
    let (live, component) = (ctx.liveness().clone(), ctx.events_component("node"));
    let update = UpdateOptions {
        extra_tag_urls: tags
            .into_iter()
            .filter(|t| !t.is_empty() && t != "none")
            .collect(),
        progress: Some(Arc::new(move |_url: &str, _p: &FetchProgress| {
            live.beat(&component)
        })),
        progress_interval: Duration::from_secs(5),
    };
    let options = TarballOptions {
        kdir: kdir.into(),
        output: output.into(),
        update,
        holdoff: Duration::from_secs(600),
    };
    let tarball = Tarball::new(BuildTarget::from_config(&setup.config), storage, options);
    let port = a.service.health_port(&setup)?;
    Ok(run_service(&ctx, port, || tarball.run(&ctx)).await)
}

fn main() {
    service_main("kci-tarball", main_)
}
