//! `kci-tarball`: makes the source tarball of each new checkout, uploads it and marks the
//! checkout `available` (upstream `tarball.py`; settings section `[tarball]`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use kernelci::git::{FetchProgress, MAINLINE_URL, UpdateOptions};
use kernelci::pipeline::service::{ServiceSetup, run_service};
use kernelci::pipeline::tarball::{Tarball, TarballOptions};
use kernelci::pipeline::trigger::BuildTarget;

/// Source tarballs for new checkouts.
#[derive(Debug, Parser)]
struct Args {
    /// The settings file (default: $KCI_SETTINGS, ./kernelci.toml, ...).
    #[arg(long)]
    settings: Option<PathBuf>,
    /// YAML configuration directories or files (default: ./config when present).
    #[arg(long = "yaml-config")]
    yaml_config: Vec<PathBuf>,
    /// The API URL (instead of the api_config entry).
    #[arg(long)]
    api_url: Option<String>,
    /// The service name (durable subscriber id `<name>:node`).
    #[arg(long)]
    name: Option<String>,
    /// Serve GET /health on this port.
    #[arg(long)]
    health_port: Option<u16>,
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
    let setup = ServiceSetup::load("tarball", a.settings.as_deref(), &a.yaml_config)?;
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
    let ctx = setup.context(a.name, a.api_url.as_deref())?;
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
    let port = setup.get_parsed(a.health_port, "health_port")?;
    Ok(run_service(&ctx, port, || tarball.run(&ctx)).await)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = main_().await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "kci-tarball cannot start");
        2
    });
    std::process::exit(code);
}
