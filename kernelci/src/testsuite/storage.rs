//! The conformance suite every [`Storage`] implementation runs.
//!
//! ```no_run
//! # async fn demo() {
//! use kernelci::storage::LocalStorage;
//! let dir = tempfile::tempdir().unwrap();
//! let storage = LocalStorage::new(dir.path(), "http://files.example/").unwrap();
//! let root = dir.path().to_path_buf();
//! kernelci::testsuite::storage::storage_suite(&storage, move |path| {
//!     let root = root.clone();
//!     async move { std::fs::read(root.join(path)).ok() }
//! })
//! .await;
//! # }
//! ```

use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

use crate::ErrorKind;
use crate::storage::{Storage, UploadFile, public_url};

/// An async reader that yields `ok_bytes` bytes of `b'x'`, then fails: an upload interrupted
/// midway.
#[derive(Debug)]
pub struct FailingReader {
    remaining: usize,
}

impl FailingReader {
    /// A reader failing after `ok_bytes` bytes.
    pub fn new(ok_bytes: usize) -> FailingReader {
        FailingReader {
            remaining: ok_bytes,
        }
    }
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.remaining == 0 {
            return Poll::Ready(Err(std::io::Error::other("simulated failure midway")));
        }
        let n = self.remaining.min(buf.remaining()).min(64 * 1024);
        buf.put_slice(&vec![b'x'; n]);
        self.remaining -= n;
        Poll::Ready(Ok(()))
    }
}

/// Deterministic pseudo-random bytes (so a shifted or truncated copy never matches).
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

/// Writes a `.tar.gz` holding `members` (path, content) to `path`.
pub fn write_tar_gz(path: &std::path::Path, members: &[(&str, &[u8])]) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, content) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, *content)?;
    }
    tar.into_inner()?.finish()?.flush()
}

/// Runs every check against `storage`. `read_back` returns the bytes stored at a path relative
/// to the storage root (`None` when nothing is there); it is how the suite looks behind the
/// backend. All checks write below a fresh random prefix. Panics on the first failure.
pub async fn storage_suite<S, R, Fut>(storage: &S, read_back: R)
where
    S: Storage + ?Sized,
    R: Fn(String) -> Fut,
    Fut: Future<Output = Option<Vec<u8>>>,
{
    let prefix = format!("suite-{}", crate::storage::local::random_suffix());
    let base = storage.base_url().to_owned();
    let p = |rest: &str| format!("{prefix}/{rest}");

    // One file, URL from the upstream rule.
    let url = storage
        .upload_single(
            UploadFile::from_bytes(b"hello".to_vec(), "hello.txt"),
            &prefix,
        )
        .await
        .expect("upload_single");
    assert_eq!(url, public_url(&base, &prefix, "hello.txt").expect("url"));
    assert!(url.ends_with(&format!("/{prefix}/hello.txt")), "{url}");
    assert_eq!(
        read_back(p("hello.txt")).await.as_deref(),
        Some(&b"hello"[..])
    );
    assert!(storage.exists(&prefix, "hello.txt").await.expect("exists"));
    assert!(!storage.exists(&prefix, "absent.txt").await.expect("exists"));

    // Nested destination and nested remote names are created; order of URLs kept.
    let dest = p("job-1/deeper");
    let urls = storage
        .upload_multiple(
            vec![
                UploadFile::from_bytes(b"b".to_vec(), "b.txt"),
                UploadFile::from_bytes(b"a".to_vec(), "a.txt"),
                UploadFile::from_bytes(Vec::new(), "empty.log"),
                UploadFile::from_bytes(b"s".to_vec(), "sub/dir/s.txt"),
            ],
            &dest,
        )
        .await
        .expect("upload_multiple");
    let expected: Vec<String> = ["b.txt", "a.txt", "empty.log", "sub/dir/s.txt"]
        .iter()
        .map(|r| public_url(&base, &dest, r).expect("url"))
        .collect();
    assert_eq!(urls, expected);
    assert_eq!(
        read_back(format!("{dest}/b.txt")).await.as_deref(),
        Some(&b"b"[..])
    );
    assert_eq!(
        read_back(format!("{dest}/a.txt")).await.as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        read_back(format!("{dest}/empty.log")).await.as_deref(),
        Some(&b""[..])
    );
    assert_eq!(
        read_back(format!("{dest}/sub/dir/s.txt")).await.as_deref(),
        Some(&b"s"[..])
    );
    assert!(
        storage
            .exists(&dest, "sub/dir/s.txt")
            .await
            .expect("exists")
    );

    // Overwriting replaces the content.
    storage
        .upload_single(
            UploadFile::from_bytes(b"second".to_vec(), "hello.txt"),
            &prefix,
        )
        .await
        .expect("overwrite");
    assert_eq!(
        read_back(p("hello.txt")).await.as_deref(),
        Some(&b"second"[..])
    );

    // A multi-megabyte file from disk arrives intact.
    let scratch = tempfile::tempdir().expect("tempdir");
    let big = pattern(5 * 1024 * 1024 + 123, 7);
    let big_path = scratch.path().join("big.bin");
    std::fs::write(&big_path, &big).expect("write big");
    storage
        .upload_single(UploadFile::from_path(&big_path, "big.bin"), &prefix)
        .await
        .expect("upload big");
    assert!(
        read_back(p("big.bin")).await.as_deref() == Some(&big[..]),
        "big.bin differs"
    );

    // Streaming readers work.
    storage
        .upload_single(
            UploadFile::from_reader(std::io::Cursor::new(b"streamed".to_vec()), "r.txt"),
            &prefix,
        )
        .await
        .expect("upload reader");
    assert_eq!(
        read_back(p("r.txt")).await.as_deref(),
        Some(&b"streamed"[..])
    );

    // An upload interrupted midway fails and leaves neither a truncated file at the final
    // name nor a changed old file.
    let err = storage
        .upload_single(
            UploadFile::from_reader(FailingReader::new(1024 * 1024), "cut.bin"),
            &prefix,
        )
        .await
        .expect_err("interrupted upload must fail");
    drop(err);
    assert_eq!(
        read_back(p("cut.bin")).await,
        None,
        "truncated file left behind"
    );
    assert!(!storage.exists(&prefix, "cut.bin").await.expect("exists"));
    storage
        .upload_single(
            UploadFile::from_reader(FailingReader::new(300 * 1024), "hello.txt"),
            &prefix,
        )
        .await
        .expect_err("interrupted overwrite must fail");
    assert_eq!(
        read_back(p("hello.txt")).await.as_deref(),
        Some(&b"second"[..])
    );

    // Path traversal and friends are refused as Invalid, before anything is written.
    for bad in [
        "../escape.txt",
        "/abs.txt",
        "a\\b.txt",
        "nul\0.txt",
        "x/../../y",
        "",
    ] {
        let err = storage
            .upload_single(UploadFile::from_bytes(b"no".to_vec(), bad), &prefix)
            .await
            .expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Invalid, "remote {bad:?}: {err}");
    }
    for bad in ["..", "../x", "/etc", "a\\b", "a/\0"] {
        let err = storage
            .upload_single(UploadFile::from_bytes(b"no".to_vec(), "f.txt"), bad)
            .await
            .expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Invalid, "dest {bad:?}: {err}");
        let err = storage.exists(bad, "f.txt").await.expect_err(bad);
        assert_eq!(err.kind(), ErrorKind::Invalid, "exists {bad:?}: {err}");
    }
    // A good file next to a bad one: nothing of the request is written.
    storage
        .upload_multiple(
            vec![
                UploadFile::from_bytes(b"ok".to_vec(), "first-ok.txt"),
                UploadFile::from_bytes(b"no".to_vec(), "../second-bad.txt"),
            ],
            &prefix,
        )
        .await
        .expect_err("mixed request");
    assert_eq!(read_back(p("first-ok.txt")).await, None);

    // Archives: unpacked by the backend, or uploaded member by member.
    let members: [(&str, &[u8]); 2] = [("log.txt", b"log line\n"), ("dtbs/board.dtb", b"\xd0\x0d")];
    let archive = scratch.path().join("artifacts.tar.gz");
    write_tar_gz(&archive, &members).expect("write archive");
    let files = members
        .iter()
        .map(|(name, data)| UploadFile::from_bytes(data.to_vec(), *name))
        .collect();
    let adest = p("kbuild-1");
    let urls = storage
        .upload_archive(&archive, files, &adest)
        .await
        .expect("upload_archive");
    for (name, data) in members {
        assert_eq!(
            urls.get(name),
            Some(&public_url(&base, &adest, name).expect("url"))
        );
        assert_eq!(
            read_back(format!("{adest}/{name}")).await.as_deref(),
            Some(data),
            "{name}"
        );
    }
}
