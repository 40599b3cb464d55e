//! What the cloud storage test peers share (features `testsuite` and `s3` or `azure`):
//! [`fresh_name`], [`FaultProxy`], a loopback HTTP proxy that
//! answers chosen requests with an error status (to test retries against a real server), and
//! the checks the S3 and Azure Blob tests both run on a [`CloudStorage`] ([`run_suite`],
//! [`assert_multipart_upload`], [`assert_retried_upload`], ...).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::storage::{FailingReader, pattern, storage_suite};
use crate::ErrorKind;
use crate::storage::cloud::CloudStorage;
use crate::storage::{Storage, UploadFile};

/// A fresh lowercase bucket/container name starting with `stem`.
pub fn fresh_name(stem: &str) -> String {
    let mut bytes = [0u8; 6];
    let _ = getrandom::fill(&mut bytes);
    format!("{stem}-{}", hex::encode(bytes))
}

/// A loopback HTTP/1.1 proxy in front of a test server: the first `count` requests whose
/// method is `method` get `status` (with `Connection: close`) instead of being forwarded;
/// every other request is forwarded unchanged except for `Connection: close`, so each
/// request comes on its own connection and is seen here. Stopped when dropped.
#[derive(Debug)]
pub struct FaultProxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    injected: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

struct Rule {
    method: String,
    remaining: AtomicUsize,
    status: u16,
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

async fn serve_one(
    mut client: TcpStream,
    upstream: u16,
    rule: Arc<Rule>,
    injected: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    let head_end = loop {
        let mut chunk = [0u8; 8192];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > 256 * 1024 {
            return Err(std::io::Error::other("request head too large"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_owned();
    let method = request_line
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    if let Ok(mut seen) = requests.lock() {
        seen.push(request_line);
    }
    let content_length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);

    let inject = method == rule.method
        && rule
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |r| r.checked_sub(1))
            .is_ok();
    if inject {
        // Drain the body so the client reads our answer rather than a reset.
        let mut left = content_length.saturating_sub(buf.len() - head_end);
        let mut sink = vec![0u8; 64 * 1024];
        while left > 0 {
            let n = client.read(&mut sink[..left.min(64 * 1024)]).await?;
            if n == 0 {
                break;
            }
            left -= n;
        }
        injected.fetch_add(1, Ordering::SeqCst);
        let body = "injected by FaultProxy";
        let answer = format!(
            "HTTP/1.1 {} Injected\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\
             Connection: close\r\n\r\n{body}",
            rule.status,
            body.len()
        );
        client.write_all(answer.as_bytes()).await?;
        client.shutdown().await?;
        return Ok(());
    }

    let mut rewritten = String::new();
    for line in head[..head.len() - 4].split("\r\n") {
        if line
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    server.write_all(rewritten.as_bytes()).await?;
    server.write_all(&buf[head_end..]).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

impl FaultProxy {
    /// Starts a proxy to `127.0.0.1:upstream` that answers `status` to the first `count`
    /// requests with `method`.
    pub async fn start(upstream: u16, method: &str, count: usize, status: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let rule = Arc::new(Rule {
            method: method.to_owned(),
            remaining: AtomicUsize::new(count),
            status,
        });
        let injected = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (i, r) = (injected.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (rule, i, r) = (rule.clone(), i.clone(), r.clone());
                tokio::spawn(async move {
                    let _ = serve_one(client, upstream, rule, i, r).await;
                });
            }
        });
        FaultProxy {
            port,
            injected,
            requests,
            task,
        }
    }

    /// How many error answers it gave.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }

    /// The request lines it saw (`PUT /bucket/key HTTP/1.1`), in order.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// --- Checks both cloud backends' tests run (S3 on moto, Azure Blob on Azurite) --------------

/// Runs the storage conformance suite ([`storage_suite`]) over `storage`, reading the stored
/// bytes back through it.
pub async fn run_suite<S: CloudStorage + ?Sized>(storage: &S) {
    storage_suite(storage, |path| async move {
        storage.read(&path).await.expect("read back")
    })
    .await;
}

/// Runs the conformance suite through `dynamic` (a storage built by
/// [`crate::storage::from_config`]), reading back through `concrete` (the same entry built
/// as its backend type), then checks that every stored key starts with `prefix` + `/`.
pub async fn run_suite_below_prefix<S: CloudStorage + ?Sized>(
    dynamic: &dyn Storage,
    concrete: &S,
    prefix: &str,
) {
    storage_suite(dynamic, |path| async move {
        concrete.read(&path).await.expect("read back")
    })
    .await;
    let keys = stored_keys(concrete).await;
    assert!(!keys.is_empty(), "nothing stored");
    let below = format!("{prefix}/");
    assert!(keys.iter().all(|k| k.starts_with(&below)), "{keys:?}");
}

/// Every key of the bucket/container (the prefix included).
pub async fn stored_keys<S: CloudStorage + ?Sized>(storage: &S) -> Vec<String> {
    use futures::StreamExt;
    storage
        .object_store()
        .list(None)
        .map(|m| m.expect("listing").location.to_string())
        .collect()
        .await
}

/// Uploads a file of `len` bytes from disk as `<dest>/<name>` and checks that it went as one
/// multipart upload of `parts` parts (no single PUT) and reads back unchanged. Returns the
/// data.
pub async fn assert_multipart_upload<S: CloudStorage + ?Sized>(
    storage: &S,
    len: usize,
    dest: &str,
    name: &str,
    parts: u64,
) -> Vec<u8> {
    let before = storage.stats();
    let scratch = tempfile::tempdir().expect("tempdir");
    let data = pattern(len, len as u64);
    let path = scratch.path().join(name);
    std::fs::write(&path, &data).expect("writing the source");
    storage
        .upload_single(UploadFile::from_path(&path, name), dest)
        .await
        .expect("multipart upload");
    let after = storage.stats();
    assert_eq!(
        (
            after.multipart_uploads - before.multipart_uploads,
            after.parts - before.parts,
            after.single_puts - before.single_puts
        ),
        (1, parts, 0),
        "{after:?}"
    );
    let stored = storage
        .read(&format!("{dest}/{name}"))
        .await
        .expect("read back")
        .expect("stored");
    assert!(stored == data, "{dest}/{name} differs after the upload");
    data
}

/// Uploads `<dest>/cut.bin` from a source that fails after `ok_bytes` (more than one part):
/// the error names the file, the multipart upload is aborted and nothing is visible.
pub async fn assert_interrupted_upload_leaves_nothing<S: CloudStorage + ?Sized>(
    storage: &S,
    ok_bytes: usize,
    dest: &str,
) {
    let before = storage.stats().aborted;
    let err = storage
        .upload_single(
            UploadFile::from_reader(FailingReader::new(ok_bytes), "cut.bin"),
            dest,
        )
        .await
        .expect_err("the source fails");
    assert!(err.to_string().contains("cut.bin"), "{err}");
    assert_eq!(storage.stats().aborted, before + 1);
    assert!(!storage.exists(dest, "cut.bin").await.expect("exists"));
}

/// Uploads `<dest>/x.txt` and checks that it fails with `kind`, in a message naming the
/// bucket/container `name` and saying `phrase`.
async fn assert_upload_fails<S: CloudStorage + ?Sized>(
    storage: &S,
    dest: &str,
    kind: ErrorKind,
    name: &str,
    phrase: &str,
) {
    let err = storage
        .upload_single(UploadFile::from_bytes(b"x".to_vec(), "x.txt"), dest)
        .await
        .expect_err(phrase);
    assert_eq!(err.kind(), kind, "{err}");
    let text = err.to_string();
    assert!(text.contains(&format!("\"{name}\"")), "{text}");
    assert!(text.contains(phrase), "{text}");
}

/// Checks that an upload to a storage whose bucket/container `name` does not exist fails
/// with a `NotFound` error naming it, and so does a lookup.
pub async fn assert_missing_space_is_not_found<S: CloudStorage + ?Sized>(storage: &S, name: &str) {
    assert_upload_fails(storage, "", ErrorKind::NotFound, name, "does not exist").await;
    let err = storage.exists("", "x.txt").await.expect_err("lookup");
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
}

/// Checks that an upload with credentials the server refuses fails with an `Unauthorized`
/// error naming the bucket/container `name`.
pub async fn assert_refused_credentials<S: CloudStorage + ?Sized>(storage: &S, name: &str) {
    let phrase = "refused the credentials";
    assert_upload_fails(storage, "d", ErrorKind::Unauthorized, name, phrase).await;
}

/// Uploads `r.txt` through `storage`, whose endpoint is `proxy` answering its first PUTs with
/// an error: the upload succeeds after `injected` retried errors and reads back.
pub async fn assert_retried_upload<S: CloudStorage + ?Sized>(
    storage: &S,
    proxy: &FaultProxy,
    injected: usize,
) {
    storage
        .upload_single(UploadFile::from_bytes(b"retried".to_vec(), "r.txt"), "")
        .await
        .expect("upload after retries");
    assert_eq!(proxy.injected(), injected, "{:?}", proxy.requests());
    assert_eq!(
        storage.read("r.txt").await.expect("read back").as_deref(),
        Some(&b"retried"[..])
    );
}
