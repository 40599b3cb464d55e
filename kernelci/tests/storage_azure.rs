//! The storage conformance suite over `AzureBlobStorage` against the Azure Storage emulator
//! (Azurite, blob service), plus Azure-only checks: block-list uploads, retries, clear errors,
//! upstream's `azure` config shape and URL shapes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use kernelci::ErrorKind;
use kernelci::storage::azure::{AzureBlobStorage, AzureCredential, EMULATOR_ACCOUNT_KEY};
use kernelci::storage::cloud::CloudStorage;
use kernelci::storage::{self, Storage, StorageConfig, UploadFile};
use kernelci::testsuite::azure::AzuritePeer;
use kernelci::testsuite::cloud::{
    FaultProxy, assert_interrupted_upload_leaves_nothing, assert_missing_space_is_not_found,
    assert_multipart_upload, assert_refused_credentials, assert_retried_upload, fresh_name,
    run_suite, run_suite_below_prefix,
};
use object_store::ObjectStoreExt;

const MIB: usize = 1024 * 1024;

fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[tokio::test]
async fn azure_blob_passes_the_suite() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let storage = peer.fresh_storage("http://files.example/kci/").await;
    run_suite(&storage).await;
}

#[tokio::test]
async fn azure_blob_from_config_passes_the_suite() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let container = fresh_name("kci");
    peer.create_container(&container).await;
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "azure_blob",
        "account": "devstoreaccount1",
        "container": container,
        "endpoint": peer.endpoint(),
        "prefix": "staging/v1",
        "base_url": format!("{}/{container}/staging/v1/", peer.endpoint()),
        "retry_delay": 0.05,
    }))
    .unwrap();
    let dynamic = storage::from_config(&config, Some(EMULATOR_ACCOUNT_KEY)).unwrap();
    let concrete = AzureBlobStorage::from_config(&config, Some(EMULATOR_ACCOUNT_KEY)).unwrap();
    run_suite_below_prefix(&*dynamic, &concrete, "staging/v1").await;
}

#[tokio::test]
async fn upstream_azure_entries_upload_to_the_share_named_container() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let share = fresh_name("share");
    peer.create_container(&share).await;
    // Upstream's keys (share, sas_public_token), with the emulator's account and endpoint.
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "azure",
        "base_url": format!("{}/", peer.endpoint()),
        "share": share,
        "sas_public_token": "?sv=2022-11-02&ss=f&sp=r&sig=public",
        "account": "devstoreaccount1",
        "endpoint": peer.endpoint(),
    }))
    .unwrap();
    let storage = storage::from_config(&config, Some(EMULATOR_ACCOUNT_KEY)).unwrap();
    let url = storage
        .upload_single(
            UploadFile::from_bytes(b"tarball".to_vec(), "linux-x.tar.gz"),
            "",
        )
        .await
        .unwrap();
    assert_eq!(
        url,
        format!(
            "{}/{share}/linux-x.tar.gz?sv=2022-11-02&ss=f&sp=r&sig=public",
            peer.endpoint()
        )
    );
    let url = storage
        .upload_single(
            UploadFile::from_bytes(b"log".to_vec(), "log.txt"),
            "job-1/sub",
        )
        .await
        .unwrap();
    assert!(
        url.starts_with(&format!("{}/{share}/job-1/sub/log.txt?", peer.endpoint())),
        "{url}"
    );
    let mut blob = peer.options(&share, "http://x/");
    blob.transfer.retries = 0;
    let direct = AzureBlobStorage::new(blob).unwrap();
    assert_eq!(
        direct.read("linux-x.tar.gz").await.unwrap().as_deref(),
        Some(&b"tarball"[..])
    );
    // Content types as upstream sets them (gzip), and text for logs.
    let store = direct.object_store();
    for (path, expected) in [
        ("linux-x.tar.gz", "application/gzip"),
        ("job-1/sub/log.txt", "text/plain; charset=utf-8"),
    ] {
        let got = store.get(&direct.key(path).unwrap()).await.unwrap();
        assert_eq!(
            got.attributes
                .get(&object_store::Attribute::ContentType)
                .map(|v| v.as_ref().to_owned()),
            Some(expected.to_owned()),
            "{path}"
        );
    }
    assert!(storage.exists("job-1/sub", "log.txt").await.unwrap());
}

#[tokio::test]
async fn files_of_20_mib_and_more_go_through_a_block_list() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let mut options = peer.options(&fresh_name("kci"), "http://files.example/");
    peer.create_container(&options.container).await;
    options.transfer.part_size = 5 * MIB;
    let storage = AzureBlobStorage::new(options).unwrap();
    assert_multipart_upload(&storage, 20 * MIB + 7, "t", "rootfs.cpio.gz", 5).await;
    // A failing source after two blocks: aborted, nothing visible.
    assert_interrupted_upload_leaves_nothing(&storage, 11 * MIB, "t").await;
}

#[tokio::test]
async fn a_missing_container_is_a_clear_not_found_error() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let storage =
        AzureBlobStorage::new(peer.options("no-such-container-kci", "http://x/")).unwrap();
    assert_missing_space_is_not_found(&storage, "no-such-container-kci").await;
}

#[tokio::test]
async fn bad_credentials_are_a_clear_auth_error() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let container = fresh_name("kci");
    peer.create_container(&container).await;
    let mut options = peer.options(&container, "http://x/");
    // A well-formed key that is not the account's.
    options.credential = Some(AzureCredential::AccessKey(
        "bm90LXRoZS1rZXktbm90LXRoZS1rZXktbm90LXRoZS1rZXk=".into(),
    ));
    let storage = AzureBlobStorage::new(options).unwrap();
    assert_refused_credentials(&storage, &container).await;

    // A key that is not even base64 is a config error at construction.
    let mut options = peer.options(&container, "http://x/");
    options.credential = Some(AzureCredential::AccessKey("not base64!".into()));
    let err = AzureBlobStorage::new(options).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}

#[tokio::test]
async fn urls_are_base_url_plus_path_plus_read_token() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let mut options = peer.options(&fresh_name("kci"), "https://cdn.example/kci/");
    peer.create_container(&options.container).await;
    options.read_token = Some("sv=2024&sp=r&sig=x%2Fy".into());
    let storage = AzureBlobStorage::new(options).unwrap();
    let urls = storage
        .upload_multiple(
            vec![
                UploadFile::from_bytes(b"1".to_vec(), "log.txt.gz"),
                UploadFile::from_bytes(b"2".to_vec(), "dtbs/a.dtb"),
            ],
            "job-7",
        )
        .await
        .unwrap();
    assert_eq!(
        urls,
        vec![
            "https://cdn.example/kci/job-7/log.txt.gz?sv=2024&sp=r&sig=x%2Fy",
            "https://cdn.example/kci/job-7/dtbs/a.dtb?sv=2024&sp=r&sig=x%2Fy",
        ]
    );
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff() {
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let container = fresh_name("kci");
    peer.create_container(&container).await;
    let proxy = FaultProxy::start(peer.process.port, "PUT", 2, 500).await;
    let mut options = peer.options(&container, "http://x/");
    options.endpoint = Some(format!("http://127.0.0.1:{}/devstoreaccount1", proxy.port));
    let storage = AzureBlobStorage::new(options).unwrap();
    assert_retried_upload(&storage, &proxy, 2).await;
}

#[tokio::test]
async fn a_write_only_sas_credential_uploads() {
    use object_store::signer::Signer;
    init();
    let Some(peer) = AzuritePeer::start() else {
        return;
    };
    let container = fresh_name("kci");
    peer.create_container(&container).await;
    // A blob-level SAS allowing PUT on one name, made by object_store's signer.
    let admin = object_store::azure::MicrosoftAzureBuilder::new()
        .with_account("devstoreaccount1")
        .with_access_key(EMULATOR_ACCOUNT_KEY)
        .with_container_name(&container)
        .with_endpoint(peer.endpoint())
        .with_allow_http(true)
        .build()
        .unwrap();
    let signed = admin
        .signed_url(
            http::Method::PUT,
            &object_store::path::Path::from("d/x.txt"),
            std::time::Duration::from_secs(600),
        )
        .await
        .unwrap();
    let sas = signed.query().unwrap().to_owned();
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "azure_blob",
        "account": "devstoreaccount1",
        "container": container,
        "endpoint": peer.endpoint(),
        "base_url": "https://cdn.example/",
    }))
    .unwrap();
    // The SAS cannot list the container: the existence check lets it through, the write works.
    let storage = storage::from_config(&config, Some(&sas)).unwrap();
    let url = storage
        .upload_single(UploadFile::from_bytes(b"sas".to_vec(), "x.txt"), "d")
        .await
        .unwrap();
    assert_eq!(url, "https://cdn.example/d/x.txt");
    let direct = AzureBlobStorage::new(peer.options(&container, "http://x/")).unwrap();
    assert_eq!(
        direct.read("d/x.txt").await.unwrap().as_deref(),
        Some(&b"sas"[..])
    );
    // Another name is outside the SAS: a clear Unauthorized error naming the container.
    let err = storage
        .upload_single(UploadFile::from_bytes(b"no".to_vec(), "y.txt"), "d")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains(&container), "{err}");
}
