//! [`AzureBlobStorage`]: artifacts in an Azure Blob Storage container (feature `azure`).
//!
//! Built on the `object_store` crate (shared-key or SAS authorization, requests on the
//! workspace's reqwest). Two `storage_type`s build it:
//!
//! - **`azure_blob`**: a container, with `base_url` serving the container (below `prefix`):
//!
//!   ```yaml
//!   storage:
//!     kci-blob:
//!       storage_type: azure_blob
//!       account: kciartifacts                  # or AZURE_STORAGE_ACCOUNT_NAME
//!       container: artifacts
//!       base_url: https://kciartifacts.blob.core.windows.net/artifacts/   # or a CDN
//!       read_token: "?sv=...&sig=..."          # optional read-only SAS appended to URLs
//!       # endpoint: http://127.0.0.1:10000/devstoreaccount1   # Azurite / private endpoint
//!   ```
//!
//! - **`azure`**: upstream's entry for Azure *Files* (`base_url` = the account URL, `share`,
//!   `sas_public_token`, `storage_cred` = a SAS with write access), kept so an upstream config
//!   works unchanged. The files go to the **blob container named after the share** in the same
//!   account (Azure Files is not used); the account comes from `base_url`'s host
//!   (`<account>.file.core.windows.net` or `<account>.blob.core.windows.net`) unless `account`
//!   is set. URLs follow upstream's rule, `urljoin(base_url, share/dest/remote) +
//!   sas_public_token`, with a `*.file.core.windows.net` host replaced by
//!   `*.blob.core.windows.net`, where the blobs are.
//!
//! Credentials: `storage_cred` is a SAS token (anything holding `sig=`) or an account key;
//! else the environment as `object_store` reads it (`AZURE_STORAGE_ACCOUNT_KEY`,
//! `AZURE_STORAGE_SAS_TOKEN`, service principal, managed identity, ...).
//! Binaries using this must install a rustls crypto provider first
//! (`rustls::crypto::ring::default_provider().install_default()`).

use std::fmt;
use std::sync::Arc;

use object_store::azure::{MicrosoftAzureBuilder, split_sas};

use super::cloud::{ObjectStorage, TransferOptions, client_options, retry_config};
use super::{StorageConfig, StorageError};

/// The account name of the Azure Storage emulator (Azurite).
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
/// The well-known account key of the Azure Storage emulator (public, documented by Microsoft).
pub const EMULATOR_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// How to authenticate to the storage account.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureCredential {
    /// A storage account key (base64).
    AccessKey(String),
    /// A SAS token (query string, with or without the leading `?`).
    Sas(String),
}

impl fmt::Debug for AzureCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AzureCredential::AccessKey(_) => f.write_str("AccessKey(<redacted>)"),
            AzureCredential::Sas(_) => f.write_str("Sas(<redacted>)"),
        }
    }
}

impl AzureCredential {
    /// Reads a `storage_cred`: a SAS token when it holds `sig=`, else an account key.
    pub fn parse(credential: &str) -> AzureCredential {
        let c = credential.trim();
        if c.contains("sig=") {
            AzureCredential::Sas(c.to_owned())
        } else {
            AzureCredential::AccessKey(c.to_owned())
        }
    }
}

/// Everything an [`AzureBlobStorage`] needs.
#[derive(Debug, Clone)]
pub struct AzureBlobOptions {
    /// The storage account (`None`: `AZURE_STORAGE_ACCOUNT_NAME`).
    pub account: Option<String>,
    /// The container.
    pub container: String,
    /// The blob service endpoint (default `https://<account>.blob.core.windows.net`); for
    /// Azurite `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// The public URL the container (below `prefix`) is served under.
    pub base_url: String,
    /// Name prefix below which everything is stored (may be empty).
    pub prefix: String,
    /// A query string (e.g. a read-only SAS) appended to every returned URL.
    pub read_token: Option<String>,
    /// The credential (`None`: from the environment).
    pub credential: Option<AzureCredential>,
    /// Part (block) size, parallelism, retries, timeouts.
    pub transfer: TransferOptions,
}

impl AzureBlobOptions {
    /// Options for `container` of `account` served under `base_url`, everything else at
    /// its default.
    pub fn new(account: &str, container: &str, base_url: &str) -> AzureBlobOptions {
        AzureBlobOptions {
            account: Some(account.to_owned()),
            container: container.to_owned(),
            endpoint: None,
            base_url: base_url.to_owned(),
            prefix: String::new(),
            read_token: None,
            credential: None,
            transfer: TransferOptions::default(),
        }
    }

    /// Options for the Azure Storage emulator (Azurite) blob service listening at
    /// `blob_url` (e.g. `http://127.0.0.1:10000`), with its well-known account and key.
    pub fn emulator(blob_url: &str, container: &str, base_url: &str) -> AzureBlobOptions {
        let mut o = AzureBlobOptions::new(EMULATOR_ACCOUNT, container, base_url);
        o.endpoint = Some(format!(
            "{}/{EMULATOR_ACCOUNT}",
            blob_url.trim_end_matches('/')
        ));
        o.credential = Some(AzureCredential::AccessKey(EMULATOR_ACCOUNT_KEY.to_owned()));
        o
    }
}

/// Artifact storage in an Azure Blob container. See the [module docs](self).
#[derive(Debug)]
pub struct AzureBlobStorage {
    inner: ObjectStorage,
    account: String,
    container: String,
}

/// The account named by an Azure storage URL's host (`<account>.<service>.core.windows.net`).
fn account_from_url(url: &url::Url) -> Option<String> {
    let host = url.host_str()?;
    let (account, rest) = host.split_once('.')?;
    rest.ends_with(".core.windows.net")
        .then(|| account.to_owned())
}

impl AzureBlobStorage {
    /// Builds the storage (no request is made until the first upload or lookup).
    pub fn new(options: AzureBlobOptions) -> Result<AzureBlobStorage, StorageError> {
        let o = options;
        if o.container.is_empty() {
            return Err(StorageError::Config(
                "azure_blob storage needs a `container`".into(),
            ));
        }
        o.transfer.validate()?;
        let account = o
            .account
            .clone()
            .or_else(|| std::env::var("AZURE_STORAGE_ACCOUNT_NAME").ok())
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                StorageError::Config(format!(
                    "azure storage for container {:?} needs an `account` \
                     (or AZURE_STORAGE_ACCOUNT_NAME)",
                    o.container
                ))
            })?;
        let allow_http = o
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let mut builder = MicrosoftAzureBuilder::from_env()
            .with_account(&account)
            .with_container_name(&o.container)
            .with_retry(retry_config(&o.transfer))
            .with_client_options(client_options(&o.transfer, allow_http));
        if let Some(endpoint) = &o.endpoint {
            builder = builder
                .with_endpoint(endpoint.trim_end_matches('/').to_owned())
                .with_allow_http(allow_http);
        }
        let what = format!("Azure container {:?} (account {account:?})", o.container);
        match &o.credential {
            Some(AzureCredential::AccessKey(key)) => builder = builder.with_access_key(key),
            Some(AzureCredential::Sas(sas)) => {
                let pairs = split_sas(sas).map_err(|e| {
                    StorageError::Config(format!("the SAS token for {what} is malformed: {e}"))
                })?;
                builder = builder.with_sas_authorization(pairs);
            }
            None => {}
        }
        let store = builder
            .build()
            .map_err(|e| StorageError::Config(format!("{what}: {e}")))?;
        let inner = ObjectStorage::new(
            Arc::new(store),
            what,
            &o.prefix,
            o.base_url,
            o.read_token,
            o.transfer,
        )?;
        Ok(AzureBlobStorage {
            inner,
            account,
            container: o.container,
        })
    }

    /// Builds the storage a `storage_type: azure_blob` or `azure` (upstream's shape) config
    /// entry describes; `credential` is its `storage_cred` (SAS token or account key), or
    /// `None` to use the environment.
    pub fn from_config(
        config: &StorageConfig,
        credential: Option<&str>,
    ) -> Result<AzureBlobStorage, StorageError> {
        let c = &config.cloud;
        let credential = credential.map(AzureCredential::parse);
        let transfer = TransferOptions::from_config(config)?;
        let read_token = c.token().map(str::to_owned);
        let prefix = c.prefix.clone().unwrap_or_default();
        if config.storage_type == "azure" {
            // Upstream's Azure Files entry, mapped onto a blob container named after the share.
            let container = c
                .container
                .clone()
                .or_else(|| c.share.clone())
                .ok_or_else(|| {
                    StorageError::Config("azure storage needs a `share` (or `container`)".into())
                })?;
            let mut base = url::Url::parse(&config.base_url).map_err(|e| {
                StorageError::Config(format!("base_url {:?}: {e}", config.base_url))
            })?;
            if let Some(host) = base.host_str().map(str::to_owned)
                && let Some(account) = host.strip_suffix(".file.core.windows.net")
            {
                base.set_host(Some(&format!("{account}.blob.core.windows.net")))
                    .map_err(|e| StorageError::Config(format!("base_url: {e}")))?;
            }
            let account = c.account.clone().or_else(|| account_from_url(&base));
            let endpoint = c.endpoint.clone().or_else(|| {
                account
                    .as_ref()
                    .filter(|_| account_from_url(&base).is_some())
                    .map(|a| format!("https://{a}.blob.core.windows.net"))
            });
            let public_base = base
                .join(&format!("./{container}/"))
                .map_err(|e| StorageError::Config(format!("base_url: {e}")))?;
            return AzureBlobStorage::new(AzureBlobOptions {
                account,
                container,
                endpoint,
                base_url: public_base.into(),
                prefix,
                read_token,
                credential,
                transfer,
            });
        }
        let container = c
            .container
            .clone()
            .ok_or_else(|| StorageError::Config("azure_blob storage needs a `container`".into()))?;
        AzureBlobStorage::new(AzureBlobOptions {
            account: c.account.clone(),
            container,
            endpoint: c.endpoint.clone(),
            base_url: config.base_url.clone(),
            prefix,
            read_token,
            credential,
            transfer,
        })
    }

    /// The storage account.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// The container.
    pub fn container(&self) -> &str {
        &self.container
    }
}

super::cloud::cloud_storage_impls!(AzureBlobStorage);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[test]
    fn credentials_are_told_apart_and_hidden() {
        assert!(matches!(
            AzureCredential::parse("?sv=2024&sp=w&sig=abc"),
            AzureCredential::Sas(_)
        ));
        let key = AzureCredential::parse(EMULATOR_ACCOUNT_KEY);
        assert!(matches!(key, AzureCredential::AccessKey(_)));
        assert!(!format!("{key:?}").contains("Eby8"));
    }

    #[test]
    fn upstream_azure_entry_maps_onto_a_blob_container() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let cfg = StorageConfig::from_value(serde_json::json!({
            "storage_type": "azure",
            "base_url": "https://kciartifacts.file.core.windows.net/",
            "share": "artifacts",
            "sas_public_token": "?sv=2022&sp=r&sig=pub",
        }))
        .expect("valid");
        let s = AzureBlobStorage::from_config(&cfg, Some("sv=2022&sp=rwc&sig=write")).expect("ok");
        assert_eq!(s.account(), "kciartifacts");
        assert_eq!(s.container(), "artifacts");
        assert_eq!(
            s.base_url(),
            "https://kciartifacts.blob.core.windows.net/artifacts/"
        );
        assert_eq!(
            s.url_for("job-1", "log.txt").expect("url"),
            "https://kciartifacts.blob.core.windows.net/artifacts/job-1/log.txt?sv=2022&sp=r&sig=pub"
        );
    }

    #[test]
    fn missing_container_or_account_is_a_config_error() {
        let cfg = StorageConfig::new("azure_blob", "http://x/");
        let err = AzureBlobStorage::from_config(&cfg, None).expect_err("no container");
        assert!(err.to_string().contains("container"), "{err}");
        let cfg = StorageConfig::new("azure", "https://cdn.example/");
        let err = AzureBlobStorage::from_config(&cfg, None).expect_err("no share");
        assert!(err.to_string().contains("share"), "{err}");
    }
}
