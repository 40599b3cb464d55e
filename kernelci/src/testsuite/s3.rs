//! An S3-compatible test peer (features `testsuite` and `s3`): **moto**'s standalone server
//! (`moto[server]` from PyPI), which `scripts/test` installs into a venv under the peer
//! directory ([`peers_dir`]), started on a free loopback port.
//!
//! - [`MotoPeer::start`]: no authentication (any credentials are accepted); buckets are made
//!   with [`MotoPeer::create_bucket`].
//! - [`MotoPeer::start_with_auth`]: moto's IAM checks on from the first request
//!   (`INITIAL_NO_AUTH_ACTION_COUNT=0`), so unknown access keys are refused with 403 like AWS
//!   does.

use std::process::Command;

use super::cloud::fresh_name;
#[cfg(doc)]
use super::peers::peers_dir;
use super::peers::{MOTO, PeerProcess, free_port, installed_peer};
use crate::storage::s3::{S3Credentials, S3Options, S3Storage};

pub use super::peers::MOTO_REQUIREMENT;
/// The access key id tests use against a moto without authentication.
pub const TEST_ACCESS_KEY_ID: &str = "kci-test-key";
/// The secret tests use against a moto without authentication.
pub const TEST_SECRET_ACCESS_KEY: &str = "kci-test-secret";

/// `<peers_dir>/moto/bin/moto_server`, when installed.
pub fn locate() -> Option<std::path::PathBuf> {
    installed_peer("moto/bin/moto_server")
}

/// A running moto server.
#[derive(Debug)]
pub struct MotoPeer {
    /// The process.
    pub process: PeerProcess,
    /// Whether IAM authentication is on.
    pub auth: bool,
}

impl MotoPeer {
    fn spawn(auth: bool) -> Option<MotoPeer> {
        let Some(program) = locate() else {
            return MOTO.missing();
        };
        let port = free_port();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(program);
        cmd.args(["-H", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .env("MOTO_ALLOW_NONEXISTENT_REGION", "true")
            // Keep objects in memory (moto spools larger ones to temporary files otherwise).
            .env("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", (2u64 << 30).to_string())
            .env("PYTHONUNBUFFERED", "1");
        if auth {
            cmd.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        } else {
            cmd.env_remove("INITIAL_NO_AUTH_ACTION_COUNT");
        }
        match PeerProcess::spawn("moto", cmd, port, dir) {
            Ok(process) => Some(MotoPeer { process, auth }),
            Err(e) => panic!("cannot start moto_server: {e}"),
        }
    }

    /// Starts moto without authentication. `None` when it is missing and `KCI_ALLOW_MISSING`
    /// names `moto` (see [`Peer::missing`](super::peers::Peer::missing)); a failure otherwise.
    pub fn start() -> Option<MotoPeer> {
        MotoPeer::spawn(false)
    }

    /// Starts moto with IAM authentication on: every access key is unknown.
    pub fn start_with_auth() -> Option<MotoPeer> {
        MotoPeer::spawn(true)
    }

    /// The endpoint URL (`http://127.0.0.1:<port>`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.process.port)
    }

    /// Creates a bucket (an unsigned `PUT /<bucket>`, which moto accepts without auth).
    pub async fn create_bucket(&self, bucket: &str) {
        let url = format!("{}/{bucket}", self.endpoint());
        let response = reqwest::Client::new()
            .put(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert!(
            response.status().is_success(),
            "creating bucket {bucket}: {}",
            response.status()
        );
    }

    /// Storage options for `bucket` on this server with the test credentials and the given
    /// public base URL.
    pub fn options(&self, bucket: &str, base_url: &str) -> S3Options {
        let mut o = S3Options::new(bucket, base_url);
        o.endpoint = Some(self.endpoint());
        o.region = Some("us-east-1".into());
        o.credentials = Some(S3Credentials::new(
            TEST_ACCESS_KEY_ID,
            TEST_SECRET_ACCESS_KEY,
        ));
        o.transfer.retry_delay = std::time::Duration::from_millis(50);
        o.transfer.timeout = std::time::Duration::from_secs(60);
        o
    }

    /// A storage on a fresh bucket of this server, URLs below `base_url`.
    pub async fn fresh_storage(&self, base_url: &str) -> S3Storage {
        let bucket = fresh_name("kci");
        self.create_bucket(&bucket).await;
        S3Storage::new(self.options(&bucket, base_url)).expect("S3Storage")
    }
}
