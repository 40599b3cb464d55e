//! Uploads a large generated (sparse) file through a cloud storage backend and prints the peak
//! resident memory (`VmHWM`) of this process, to show that multipart uploads stream.
//!
//! ```text
//! cargo run --release -p kernelci --features testsuite,s3,azure --example cloud_upload_rss -- \
//!     s3|azure [MiB, default 1024] [part MiB, default 8]
//! ```
//!
//! `s3` starts moto and `azure` starts Azurite (both installed into the peer cache on first
//! use, as the tests do); only this client process is measured. (It lives in the `kernelci`
//! crate, unlike `examples/storage_upload_rss.rs`, so it builds without the server crates.)

use std::time::Instant;

use kernelci::storage::{Storage, UploadFile};

fn vm_hwm_kib() -> u64 {
    kernelci::testsuite::peers::proc_status(None, "VmHWM").unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "s3".into());
    let mib: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(1024);
    let part_mib: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8);

    let scratch = tempfile::tempdir().expect("tempdir");
    let source = scratch.path().join("big.bin");
    let file = std::fs::File::create(&source).expect("create source");
    file.set_len(mib * 1024 * 1024).expect("sparse file");
    drop(file);

    let mut _moto = None;
    let mut _azurite = None;
    let storage: Box<dyn Storage> = match backend.as_str() {
        "s3" => {
            let Some(peer) = kernelci::testsuite::s3::MotoPeer::start() else {
                return;
            };
            let bucket = kernelci::testsuite::cloud::fresh_name("rss");
            peer.create_bucket(&bucket).await;
            let mut options = peer.options(&bucket, "http://x/");
            options.transfer.part_size = part_mib * 1024 * 1024;
            let storage = kernelci::storage::S3Storage::new(options).expect("s3");
            _moto = Some(peer);
            Box::new(storage)
        }
        "azure" => {
            let Some(peer) = kernelci::testsuite::azure::AzuritePeer::start() else {
                return;
            };
            let container = kernelci::testsuite::cloud::fresh_name("rss");
            peer.create_container(&container).await;
            let mut options = peer.options(&container, "http://x/");
            options.transfer.part_size = part_mib * 1024 * 1024;
            let storage = kernelci::storage::AzureBlobStorage::new(options).expect("azure");
            _azurite = Some(peer);
            Box::new(storage)
        }
        other => panic!("unknown backend {other:?}: use s3 or azure"),
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
        "backend={backend} size={mib} MiB part={part_mib} MiB time={:.1}s \
         VmHWM before={before} KiB after={after} KiB ({:.1} MiB peak)",
        elapsed.as_secs_f64(),
        after as f64 / 1024.0
    );
}
