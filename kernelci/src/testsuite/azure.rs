//! An Azure Blob test peer (features `testsuite` and `azure`): **Azurite**, the Azure Storage
//! emulator (npm `azurite`), blob service only, which `scripts/test` installs under the peer
//! directory ([`peers_dir`]), started on a free loopback port with in-memory persistence (nothing written to disk).
//!
//! Azurite checks shared-key signatures with its well-known account (`devstoreaccount1`), so
//! a wrong key is refused with 403 as Azure does. Containers are created with
//! [`AzuritePeer::create_container`], a request signed by `object_store`'s
//! `AzureAuthorizer` (no hand-written signing).

use std::process::Command;

use object_store::azure::{AzureAccessKey, AzureAuthorizer, AzureCredential};

use super::cloud::fresh_name;
#[cfg(doc)]
use super::peers::peers_dir;
use super::peers::{AZURITE, PeerProcess, free_port, installed_peer};
use crate::storage::azure::{
    AzureBlobOptions, AzureBlobStorage, EMULATOR_ACCOUNT, EMULATOR_ACCOUNT_KEY,
};

pub use super::peers::AZURITE_PACKAGE;

/// `<peers_dir>/azurite/node_modules/.bin/azurite-blob`, when installed.
pub fn locate() -> Option<std::path::PathBuf> {
    installed_peer("azurite/node_modules/.bin/azurite-blob")
}

/// A running Azurite blob service.
#[derive(Debug)]
pub struct AzuritePeer {
    /// The process.
    pub process: PeerProcess,
}

impl AzuritePeer {
    /// Starts Azurite's blob service. `None` when it is missing and `KCI_ALLOW_MISSING` names
    /// `azurite` (see [`Peer::missing`](super::peers::Peer::missing)); a failure otherwise.
    pub fn start() -> Option<AzuritePeer> {
        let Some(program) = locate() else {
            return AZURITE.missing();
        };
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(program);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort"])
            .arg(port.to_string())
            .current_dir(dir.path())
            .args([
                "--inMemoryPersistence",
                "--silent",
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--disableProductStyleUrl",
            ]);
        match PeerProcess::spawn("azurite", cmd, port, dir) {
            Ok(process) => Some(AzuritePeer { process }),
            Err(e) => panic!("cannot start azurite: {e}"),
        }
    }

    /// The blob service URL (`http://127.0.0.1:<port>`).
    pub fn blob_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// The blob endpoint of the emulator account (`<blob_url>/devstoreaccount1`).
    pub fn endpoint(&self) -> String {
        format!("{}/{EMULATOR_ACCOUNT}", self.blob_url())
    }

    /// Creates a container (`PUT ?restype=container`, signed with the emulator's key).
    pub async fn create_container(&self, container: &str) {
        let url = format!("{}/{container}?restype=container", self.endpoint());
        let key = AzureAccessKey::try_new(EMULATOR_ACCOUNT_KEY).expect("emulator key");
        let credential = AzureCredential::AccessKey(key);
        let mut request = http::Request::builder()
            .method(http::Method::PUT)
            .uri(&url)
            .header(http::header::CONTENT_LENGTH, "0")
            .body(object_store::client::HttpRequestBody::from(Vec::new()))
            .expect("request");
        AzureAuthorizer::new(&credential, EMULATOR_ACCOUNT)
            .try_authorize(&mut request)
            .expect("signing");
        let response = reqwest::Client::new()
            .put(&url)
            .headers(request.headers().clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "creating container {container}: {status} {body}"
        );
    }

    /// Storage options for `container` on this emulator (well-known account and key) with the
    /// given public base URL.
    pub fn options(&self, container: &str, base_url: &str) -> AzureBlobOptions {
        let mut o = AzureBlobOptions::emulator(&self.blob_url(), container, base_url);
        o.transfer.retry_delay = std::time::Duration::from_millis(50);
        o.transfer.timeout = std::time::Duration::from_secs(60);
        o
    }

    /// A storage on a fresh container of this emulator, URLs below `base_url`.
    pub async fn fresh_storage(&self, base_url: &str) -> AzureBlobStorage {
        let container = fresh_name("kci");
        self.create_container(&container).await;
        AzureBlobStorage::new(self.options(&container, base_url)).expect("AzureBlobStorage")
    }
}
