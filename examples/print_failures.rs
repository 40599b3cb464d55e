//! Listens to finished test nodes and prints the failures, with a durable subscriber id so a
//! restart resumes where it stopped.
//!
//! ```sh
//! KCI_API_URL=http://127.0.0.1:8001 KCI_API_TOKEN=... cargo run --example print_failures
//! ```

use std::time::Duration;

use kernelci::client::{ApiClient, Listener, ListenerConfig, NodeEventFilter};

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = std::env::var("KCI_API_URL").unwrap_or_else(|_| "http://127.0.0.1:8001".into());
    let Ok(token) = std::env::var("KCI_API_TOKEN") else {
        eprintln!("set KCI_API_TOKEN (kci user login <name>)");
        std::process::exit(2);
    };
    let api = match ApiClient::new(&url) {
        Ok(api) => api.with_token(token),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let filter = NodeEventFilter {
        kind: vec!["test".into()],
        state: vec!["done".into()],
        ..Default::default()
    };
    let config = ListenerConfig::new("node")
        .durable("example:print-failures")
        .promiscuous()
        .filter(filter);
    let mut listener = Listener::new(api.clone(), config);
    eprintln!("listening to {url} for finished tests (Ctrl-C to stop)");
    let result = listener
        .run(Duration::from_secs(1), |event| {
            let api = api.clone();
            async move {
                let Some(ev) = event.node_event() else {
                    return Ok::<(), String>(());
                };
                if ev.result.as_ref().map(|r| r.as_str()) != Some("fail") {
                    return Ok(());
                }
                // Fetch the node for its path and platform (the event carries the summary).
                let id = ev
                    .id
                    .parse()
                    .map_err(|e| format!("bad id {}: {e}", ev.id))?;
                match api.get_node(id).await.map_err(|e| e.to_string())? {
                    Some(node) => println!(
                        "FAIL {} [{}] on {}",
                        node.path.join("."),
                        node.data_str("kernel_revision.describe").unwrap_or("?"),
                        node.data_str("platform").unwrap_or("?")
                    ),
                    None => println!("FAIL {} (node gone)", ev.name),
                }
                Ok(())
            }
        })
        .await;
    if let Err(e) = result {
        eprintln!("listener stopped: {e}");
        std::process::exit(1);
    }
}
