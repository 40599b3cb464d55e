//! `kernelci-server`: the KernelCI API server.

use clap::Parser;
use kernelci_server::config::ServerConfig;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kernelci_server=info".into()),
        )
        .init();
    let config = ServerConfig::parse();
    let listen = config.listen;
    let app = match kernelci_server::App::open(config).await {
        Ok(app) => app,
        Err(e) => {
            eprintln!("kernelci-server: {e}");
            std::process::exit(2);
        }
    };
    let shutdown = async {
        let ctrl_c = async {
            // A failure to install the handler must not stop the server.
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(t) => t,
                    Err(_) => {
                        ctrl_c.await;
                        return;
                    }
                };
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
        }
        #[cfg(not(unix))]
        ctrl_c.await;
        tracing::info!("shutting down: draining in-flight requests");
    };
    match kernelci_server::bind(app, listen, shutdown) {
        Ok((addr, server)) => {
            tracing::info!(%addr, "KernelCI API listening");
            server.await;
        }
        Err(e) => {
            eprintln!("kernelci-server: cannot listen on {listen}: {e}");
            std::process::exit(2);
        }
    }
}
