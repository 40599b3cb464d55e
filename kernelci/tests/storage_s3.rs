//! The storage conformance suite over `S3Storage` against a real S3-protocol server (moto),
//! plus S3-only checks: multipart uploads, aborts, retries, clear errors and URL shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use kernelci::ErrorKind;
use kernelci::storage::cloud::CloudStorage;
use kernelci::storage::s3::{S3Credentials, S3Storage};
use kernelci::storage::{self, Storage, StorageConfig, UploadFile};
use kernelci::testsuite::cloud::{
    FaultProxy, assert_interrupted_upload_leaves_nothing, assert_missing_space_is_not_found,
    assert_multipart_upload, assert_refused_credentials, assert_retried_upload, fresh_name,
    run_suite, run_suite_below_prefix,
};
use kernelci::testsuite::s3::{MotoPeer, TEST_ACCESS_KEY_ID, TEST_SECRET_ACCESS_KEY};
use object_store::ObjectStoreExt;

const MIB: usize = 1024 * 1024;

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The multipart uploads moto still holds open for `bucket` (an unsigned list request).
async fn open_multipart_uploads(peer: &MotoPeer, bucket: &str) -> usize {
    let body = reqwest::get(format!("{}/{bucket}?uploads", peer.endpoint()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.matches("<Upload>").count()
}

#[tokio::test]
async fn s3_passes_the_suite() {
    init();
    let Some(peer) = MotoPeer::start() else {
        return;
    };
    let storage = peer.fresh_storage("http://files.example/kci/").await;
    run_suite(&storage).await;
}

#[tokio::test]
async fn s3_from_config_with_a_prefix_passes_the_suite() {
    init();
    let Some(peer) = MotoPeer::start() else {
        return;
    };
    let bucket = fresh_name("kci");
    peer.create_bucket(&bucket).await;
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "s3",
        "bucket": bucket,
        "region": "eu-west-1",
        "endpoint": peer.endpoint(),
        "prefix": "staging",
        "base_url": format!("{}/{bucket}/staging/", peer.endpoint()),
        "retry_delay": 0.05,
    }))
    .unwrap();
    let cred = format!("{TEST_ACCESS_KEY_ID}:{TEST_SECRET_ACCESS_KEY}");
    let dynamic = storage::from_config(&config, Some(&cred)).unwrap();
    let concrete = S3Storage::from_config(&config, Some(&cred)).unwrap();
    // Everything lands below the prefix.
    run_suite_below_prefix(&*dynamic, &concrete, "staging").await;
    // The URL is served by the bucket itself.
    let url = dynamic
        .upload_single(UploadFile::from_bytes(b"public".to_vec(), "p.txt"), "pub")
        .await
        .unwrap();
    assert_eq!(
        url,
        format!("{}/{bucket}/staging/pub/p.txt", peer.endpoint())
    );
    // The object is private (as S3 objects are by default): the URL is only fetchable where
    // base_url is public (a public bucket or a CDN), so it is read back through the store.
    assert_eq!(
        concrete.read("pub/p.txt").await.unwrap().as_deref(),
        Some(&b"public"[..])
    );
}

#[tokio::test]
async fn files_of_20_mib_and_more_go_through_multipart() {
    init();
    let Some(peer) = MotoPeer::start() else {
        return;
    };
    let storage = peer.fresh_storage("http://files.example/").await;
    assert_eq!(storage.transfer().part_size, 8 * MIB);
    let data = assert_multipart_upload(&storage, 20 * MIB + 4321, "kbuild-1", "vmlinux", 3).await;
    // The server saw a multipart upload: S3 ETags of those end in -<parts>.
    let meta = storage
        .object_store()
        .head(&storage.key("kbuild-1/vmlinux").unwrap())
        .await
        .unwrap();
    assert!(
        meta.e_tag.as_deref().unwrap_or_default().ends_with("-3\""),
        "{:?}",
        meta.e_tag
    );
    assert_eq!(meta.size, data.len() as u64);

    // A streamed reader of the same size takes the same road; a small file does not.
    storage
        .upload_single(
            UploadFile::from_reader(std::io::Cursor::new(data.clone()), "streamed.bin"),
            "kbuild-1",
        )
        .await
        .unwrap();
    storage
        .upload_single(
            UploadFile::from_bytes(vec![1; 1000], "small.bin"),
            "kbuild-1",
        )
        .await
        .unwrap();
    let stats = storage.stats();
    assert_eq!((stats.multipart_uploads, stats.single_puts), (2, 1));
    assert!(
        storage
            .read("kbuild-1/streamed.bin")
            .await
            .unwrap()
            .unwrap()
            == data
    );
    assert_eq!(open_multipart_uploads(&peer, storage.bucket()).await, 0);
}

#[tokio::test]
async fn an_interrupted_multipart_upload_is_aborted_and_leaves_nothing() {
    init();
    let Some(peer) = MotoPeer::start() else {
        return;
    };
    let storage = peer.fresh_storage("http://files.example/").await;
    // The first part (8 MiB) is sent, then the source fails.
    assert_interrupted_upload_leaves_nothing(&storage, 12 * MIB, "d").await;
    assert_eq!(open_multipart_uploads(&peer, storage.bucket()).await, 0);
}

#[tokio::test]
async fn a_missing_bucket_is_a_clear_not_found_error() {
    init();
    let Some(peer) = MotoPeer::start() else {
        return;
    };
    let storage = S3Storage::new(peer.options("no-such-bucket-kci", "http://x/")).unwrap();
    assert_missing_space_is_not_found(&storage, "no-such-bucket-kci").await;
    // Once the bucket exists the same storage works (a failed check is not cached).
    peer.create_bucket("no-such-bucket-kci").await;
    storage
        .upload_single(UploadFile::from_bytes(b"x".to_vec(), "x.txt"), "")
        .await
        .unwrap();
    assert!(storage.exists("", "x.txt").await.unwrap());
}

#[tokio::test]
async fn bad_credentials_are_a_clear_auth_error() {
    init();
    let Some(peer) = MotoPeer::start_with_auth() else {
        return;
    };
    let mut options = peer.options("kci-auth", "http://x/");
    options.credentials = Some(S3Credentials::new("AKIAWRONGKEY", "wrong-secret"));
    let storage = S3Storage::new(options).unwrap();
    assert_refused_credentials(&storage, "kci-auth").await;
}

#[tokio::test]
async fn urls_are_base_url_plus_path_plus_read_token() {
    init();
    let Some(peer) = MotoPeer::start() else {
        return;
    };
    let bucket = fresh_name("kci");
    peer.create_bucket(&bucket).await;
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "s3",
        "bucket": bucket,
        "endpoint": peer.endpoint(),
        "base_url": "https://cdn.example/artifacts/",
        "read_token": "?sv=2024&sig=abc%2B",
    }))
    .unwrap();
    let cred = format!("{TEST_ACCESS_KEY_ID}:{TEST_SECRET_ACCESS_KEY}");
    let storage = storage::from_config(&config, Some(&cred)).unwrap();
    let url = storage
        .upload_single(UploadFile::from_bytes(b"l".to_vec(), "log.txt"), "job-1")
        .await
        .unwrap();
    assert_eq!(
        url,
        "https://cdn.example/artifacts/job-1/log.txt?sv=2024&sig=abc%2B"
    );
    let urls = storage
        .upload_multiple(
            vec![
                UploadFile::from_bytes(b"b".to_vec(), "b/x.dtb"),
                UploadFile::from_bytes(b"a".to_vec(), "a.tar.gz"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        urls,
        vec![
            "https://cdn.example/artifacts/b/x.dtb?sv=2024&sig=abc%2B",
            "https://cdn.example/artifacts/a.tar.gz?sv=2024&sig=abc%2B",
        ]
    );
    // Through the Arc as well (url_for is forwarded).
    assert_eq!(
        storage.url_for("", "a.tar.gz").unwrap(),
        "https://cdn.example/artifacts/a.tar.gz?sv=2024&sig=abc%2B"
    );
    // Without a token the URL is the plain upstream join.
    let plain = peer.fresh_storage("https://bucket.example/").await;
    assert_eq!(
        plain.url_for("job-1", "log.txt").unwrap(),
        "https://bucket.example/job-1/log.txt"
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    init();
    let Some(peer) = MotoPeer::start() else {
        return;
    };
    let bucket = fresh_name("kci");
    peer.create_bucket(&bucket).await;
    // The first three PUTs (a small object, then multipart parts) answer 503.
    let proxy = FaultProxy::start(peer.process.port, "PUT", 3, 503).await;
    let mut options = peer.options(&bucket, "http://x/");
    options.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    let storage = S3Storage::new(options).unwrap();
    assert_retried_upload(&storage, &proxy, 3).await;
    let puts = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with("PUT "))
        .count();
    assert_eq!(puts, 4, "{:?}", proxy.requests());

    // Retries that never succeed end in an Unavailable error after `retries` attempts.
    let proxy = FaultProxy::start(peer.process.port, "PUT", 1000, 503).await;
    let mut options = peer.options(&bucket, "http://x/");
    options.endpoint = Some(format!("http://127.0.0.1:{}", proxy.port));
    options.transfer.retries = 2;
    let storage = S3Storage::new(options).unwrap();
    let err = storage
        .upload_single(UploadFile::from_bytes(b"never".to_vec(), "n.txt"), "")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert_eq!(proxy.injected(), 3);
    assert!(err.to_string().contains(&bucket), "{err}");
}
