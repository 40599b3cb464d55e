//! `HttpStorage` (client, upstream's `backend` type) against the server's upload endpoint
//! (`kernelci_server::storage_upload`) on a real loopback socket: both ends of the
//! kernelci-storage protocol together.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kernelci::ErrorKind;
use kernelci::storage::{
    self, HttpStorage, LocalStorage, Storage, StorageConfig, StorageError, UploadFile,
};
use kernelci::testsuite::storage::storage_suite;
use tokio::io::AsyncWriteExt;
use warp::Filter;

const TOKEN: &str = "s3cret-token";

fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

struct Server {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
    fn storage(&self, credential: &str) -> HttpStorage {
        HttpStorage::new(&self.url(), &self.url(), Some(credential))
            .unwrap()
            .with_retries(3, Duration::from_millis(20))
    }
}

async fn serve<F>(filter: F) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Filter + Clone + Send + Sync + 'static,
    F::Extract: warp::Reply,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(warp::serve(filter).incoming(listener).run());
    (addr, task)
}

async fn start() -> Server {
    init_tls();
    let dir = tempfile::tempdir().unwrap();
    let local = Arc::new(LocalStorage::new(dir.path(), "http://unused/").unwrap());
    let (addr, task) = serve(kernelci_server::storage_upload::routes(local, TOKEN)).await;
    Server { addr, dir, task }
}

fn leftover_parts(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().contains(".part-") {
                found.push(path);
            }
        }
    }
    found
}

async fn no_leftovers_soon(dir: &Path) {
    // The server notices a dropped request asynchronously.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !leftover_parts(dir).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(leftover_parts(dir), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn http_storage_passes_the_suite_against_the_server() {
    let server = start().await;
    let storage = server.storage(&format!("Bearer {TOKEN}"));
    let root = server.dir.path().to_path_buf();
    storage_suite(&storage, move |path| {
        let root = root.clone();
        async move { std::fs::read(root.join(path)).ok() }
    })
    .await;
    no_leftovers_soon(server.dir.path()).await;
}

#[tokio::test]
async fn factory_backend_with_a_bare_token() {
    let server = start().await;
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "backend",
        "base_url": server.url(),
        "api_url": server.url(),
        "retries": 2,
        "retry_delay": 0.01,
    }))
    .unwrap();
    let storage = storage::from_config(&config, Some(TOKEN)).unwrap();
    let url = storage
        .upload_single(UploadFile::from_bytes(b"k".to_vec(), "bzImage"), "kbuild-x")
        .await
        .unwrap();
    assert_eq!(url, format!("{}kbuild-x/bzImage", server.url()));
    // The server also serves what it stored.
    let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(&body[..], b"k");
}

#[tokio::test]
async fn a_wrong_token_fails_at_once_without_retries() {
    let server = start().await;
    let storage = server
        .storage("Bearer wrong")
        .with_retries(5, Duration::from_secs(10));
    let started = Instant::now();
    let err = storage
        .upload_single(UploadFile::from_bytes(b"x".to_vec(), "x"), "")
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "4xx must not be retried"
    );
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(
        matches!(err, StorageError::Rejected { status: 401, .. }),
        "{err}"
    );
    assert!(!server.dir.path().join("x").exists());
}

#[tokio::test]
async fn server_errors_are_retried_then_succeed() {
    init_tls();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let flaky = warp::post().and(warp::path!("upload")).map(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        let status = if n < 2 {
            warp::http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            warp::http::StatusCode::OK
        };
        warp::reply::with_status("{}", status)
    });
    let (addr, task) = serve(flaky).await;
    let url = format!("http://{addr}/");
    let storage = HttpStorage::new(&url, &url, Some(TOKEN))
        .unwrap()
        .with_retries(5, Duration::from_millis(10));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, b"retry me").unwrap();
    storage
        .upload_single(UploadFile::from_path(&file, "f"), "")
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Always 5xx: gives up after the configured attempts, as Unavailable.
    calls.store(0, Ordering::SeqCst);
    let storage = storage.with_retries(2, Duration::from_millis(10));
    let err = storage
        .upload_single(UploadFile::from_path(&file, "f"), "")
        .await
        .unwrap_err();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    task.abort();
}

#[tokio::test]
async fn connection_refused_is_retried_and_unavailable() {
    init_tls();
    let port = kernelci::testsuite::peers::free_port();
    let url = format!("http://127.0.0.1:{port}/");
    let storage = HttpStorage::new(&url, &url, None)
        .unwrap()
        .with_retries(3, Duration::from_millis(10));
    let err = storage
        .upload_single(UploadFile::from_bytes(b"x".to_vec(), "x"), "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

#[tokio::test]
async fn the_server_refuses_traversal_itself() {
    let server = start().await;
    let client = reqwest::Client::new();
    let cases = [
        ("", "../escape.txt"),
        ("../..", "x.txt"),
        ("/abs", "x.txt"),
        ("", "a\\b"),
    ];
    for (path, name) in cases {
        let form = reqwest::multipart::Form::new()
            .percent_encode_noop()
            .text("path", path)
            .part(
                "file0",
                reqwest::multipart::Part::bytes(b"evil".to_vec()).file_name(name),
            );
        let response = client
            .post(format!("{}upload", server.url()))
            .bearer_auth(TOKEN)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path:?} {name:?}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("invalid storage path"),
            "{body}"
        );
    }
    assert!(
        !server
            .dir
            .path()
            .parent()
            .unwrap()
            .join("escape.txt")
            .exists()
    );
    assert_eq!(std::fs::read_dir(server.dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_connection_dropped_midway_leaves_nothing() {
    let server = start().await;
    // An existing file must survive an interrupted overwrite unchanged.
    std::fs::create_dir_all(server.dir.path().join("d")).unwrap();
    std::fs::write(server.dir.path().join("d/big.bin"), b"old").unwrap();

    let boundary = "XBOUNDARYX";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\nd\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file0\"; filename=\"big.bin\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    );
    let declared = head.len() + 10 * 1024 * 1024;
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {declared}\r\n\r\n{head}",
        server.addr
    );
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
        .write_all(&vec![b'y'; 2 * 1024 * 1024])
        .await
        .unwrap();
    socket.flush().await.unwrap();
    // Wait until the server has started writing the temporary file, then hang up.
    let deadline = Instant::now() + Duration::from_secs(5);
    while leftover_parts(server.dir.path()).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        !leftover_parts(server.dir.path()).is_empty(),
        "the upload never started"
    );
    drop(socket);

    no_leftovers_soon(server.dir.path()).await;
    assert_eq!(
        std::fs::read(server.dir.path().join("d/big.bin")).unwrap(),
        b"old"
    );
}

#[tokio::test]
async fn archive_failures_reported_by_the_server_are_errors() {
    let server = start().await;
    let storage = server.storage(TOKEN);
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("bad.tar.gz");
    std::fs::write(&archive, b"this is not gzip").unwrap();
    let err = storage
        .upload_archive(&archive, Vec::new(), "a")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
    no_leftovers_soon(server.dir.path()).await;
}
