//! Uploads a large generated (sparse) file through one storage backend and prints the peak
//! resident memory (`VmHWM`) of this process, to show that uploads stream.
//!
//! ```text
//! cargo run --release --example storage_upload_rss -- local|ssh|http [MiB, default 1024]
//! ```
//!
//! `ssh` starts a real sshd (only the client side is measured); `http` runs the server's
//! upload endpoint in this same process, so both ends of the HTTP upload are measured.

use std::sync::Arc;
use std::time::Instant;

use kernelci::storage::ssh::HostKeyPolicy;
use kernelci::storage::{HttpStorage, LocalStorage, SshStorage, Storage, UploadFile};

fn vm_hwm_kib() -> u64 {
    kernelci::testsuite::peers::proc_status(None, "VmHWM").unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "local".into());
    let mib: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1024);

    let scratch = tempfile::tempdir().expect("tempdir");
    let source = scratch.path().join("big.bin");
    let file = std::fs::File::create(&source).expect("create source");
    file.set_len(mib * 1024 * 1024).expect("sparse file");
    drop(file);
    let target_dir = tempfile::tempdir().expect("tempdir");

    let mut _sshd = None;
    let mut _server = None;
    let storage: Box<dyn Storage> = match backend.as_str() {
        "local" => Box::new(LocalStorage::new(target_dir.path(), "http://x/").expect("local")),
        "ssh" => {
            let Some(peer) = kernelci::testsuite::sshd::start_sshd() else {
                return;
            };
            let storage = SshStorage::new(
                "127.0.0.1",
                peer.port(),
                &peer.user,
                &peer.client_key,
                &peer.data_dir.to_string_lossy(),
                "http://x/",
                HostKeyPolicy::KnownHosts(peer.known_hosts.clone()),
            )
            .expect("ssh");
            _sshd = Some(peer);
            Box::new(storage)
        }
        "http" => {
            let local = Arc::new(LocalStorage::new(target_dir.path(), "http://x/").expect("local"));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let routes = kernelci_server::storage_upload::routes(local, "token");
            _server = Some(tokio::spawn(warp::serve(routes).incoming(listener).run()));
            let url = format!("http://{addr}/");
            Box::new(HttpStorage::new(&url, &url, Some("Bearer token")).expect("http"))
        }
        other => panic!("unknown backend {other:?}: use local, ssh or http"),
    };

    let before = vm_hwm_kib();
    let started = Instant::now();
    storage
        .upload_single(UploadFile::from_path(&source, "big.bin"), "rss")
        .await
        .expect("upload");
    let elapsed = started.elapsed();
    let after = vm_hwm_kib();
    println!(
        "backend={backend} size={mib} MiB time={:.1}s VmHWM before={} KiB after={} KiB ({:.1} MiB peak)",
        elapsed.as_secs_f64(),
        before,
        after,
        after as f64 / 1024.0
    );
}
