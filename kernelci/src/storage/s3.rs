//! [`S3Storage`]: artifacts in an AWS S3 bucket or on any S3-compatible server (feature `s3`).
//!
//! Built on the `object_store` crate (SigV4 signing with ring, requests on the workspace's
//! reqwest). Config entry:
//!
//! ```yaml
//! storage:
//!   kci-s3:
//!     storage_type: s3
//!     bucket: kernelci-artifacts
//!     region: eu-west-1                       # or AWS_REGION; default us-east-1
//!     base_url: https://kernelci-artifacts.s3.eu-west-1.amazonaws.com/   # or a CDN
//!     # endpoint: http://127.0.0.1:9000       # S3-compatible servers (path-style requests)
//!     # prefix: staging                       # keys below this prefix
//!     # read_token: "X-Amz-..."               # query string appended to returned URLs
//! ```
//!
//! Credentials: `storage_cred` as `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`, else the
//! usual environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, web
//! identity, container or instance credentials, as `object_store` resolves them).
//!
//! URLs are `base_url` + `dest_path/remote` (upstream's `urljoin` rule) + the read token, so
//! `base_url` must serve the bucket (below `prefix`) publicly: a public bucket URL or a CDN.
//! Binaries using this must install a rustls crypto provider first
//! (`rustls::crypto::ring::default_provider().install_default()`).

use std::fmt;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;

use super::cloud::{ObjectStorage, TransferOptions, client_options, retry_config};
use super::{StorageConfig, StorageError};

/// Static S3 credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// A session token (temporary credentials).
    pub session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl S3Credentials {
    /// Static credentials without a session token.
    pub fn new(access_key_id: &str, secret_access_key: &str) -> S3Credentials {
        S3Credentials {
            access_key_id: access_key_id.to_owned(),
            secret_access_key: secret_access_key.to_owned(),
            session_token: None,
        }
    }

    /// Parses a `storage_cred`: `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`.
    pub fn parse(credential: &str) -> Result<S3Credentials, StorageError> {
        let mut parts = credential.trim().splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(id), Some(secret), token) if !id.is_empty() && !secret.is_empty() => {
                Ok(S3Credentials {
                    access_key_id: id.to_owned(),
                    secret_access_key: secret.to_owned(),
                    session_token: token.filter(|t| !t.is_empty()).map(str::to_owned),
                })
            }
            _ => Err(StorageError::Config(
                "s3 storage_cred must be ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]".into(),
            )),
        }
    }
}

/// Everything an [`S3Storage`] needs.
#[derive(Debug, Clone)]
pub struct S3Options {
    /// The bucket.
    pub bucket: String,
    /// The region (`None`: `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// An S3-compatible endpoint (`http://` allowed); requests are then path-style.
    pub endpoint: Option<String>,
    /// The public URL the bucket (below `prefix`) is served under.
    pub base_url: String,
    /// Key prefix below which everything is stored (may be empty).
    pub prefix: String,
    /// A query string appended to every returned URL.
    pub read_token: Option<String>,
    /// Static credentials (`None`: from the environment).
    pub credentials: Option<S3Credentials>,
    /// Part size, parallelism, retries, timeouts.
    pub transfer: TransferOptions,
}

impl S3Options {
    /// Options for `bucket` served under `base_url`, everything else at its default.
    pub fn new(bucket: &str, base_url: &str) -> S3Options {
        S3Options {
            bucket: bucket.to_owned(),
            region: None,
            endpoint: None,
            base_url: base_url.to_owned(),
            prefix: String::new(),
            read_token: None,
            credentials: None,
            transfer: TransferOptions::default(),
        }
    }
}

/// Artifact storage in an S3 bucket. See the [module docs](self).
#[derive(Debug)]
pub struct S3Storage {
    inner: ObjectStorage,
    bucket: String,
}

impl S3Storage {
    /// Builds the storage (no request is made until the first upload or lookup).
    pub fn new(options: S3Options) -> Result<S3Storage, StorageError> {
        let o = options;
        if o.bucket.is_empty() {
            return Err(StorageError::Config("s3 storage needs a `bucket`".into()));
        }
        o.transfer.validate()?;
        let allow_http = o
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&o.bucket)
            .with_retry(retry_config(&o.transfer))
            .with_client_options(client_options(&o.transfer, allow_http));
        if let Some(region) = &o.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &o.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false)
                .with_allow_http(allow_http);
        }
        if let Some(c) = &o.credentials {
            builder = builder
                .with_access_key_id(&c.access_key_id)
                .with_secret_access_key(&c.secret_access_key);
            if let Some(token) = &c.session_token {
                builder = builder.with_token(token);
            }
        }
        let store = builder
            .build()
            .map_err(|e| StorageError::Config(format!("s3 bucket {:?}: {e}", o.bucket)))?;
        let what = match &o.endpoint {
            Some(e) => format!("S3 bucket {:?} at {e}", o.bucket),
            None => format!("S3 bucket {:?}", o.bucket),
        };
        let inner = ObjectStorage::new(
            Arc::new(store),
            what,
            &o.prefix,
            o.base_url,
            o.read_token,
            o.transfer,
        )?;
        Ok(S3Storage {
            inner,
            bucket: o.bucket,
        })
    }

    /// Builds the storage a `storage_type: s3` config entry describes; `credential` is its
    /// `storage_cred` (`ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`), or `None` to use
    /// the environment.
    pub fn from_config(
        config: &StorageConfig,
        credential: Option<&str>,
    ) -> Result<S3Storage, StorageError> {
        let c = &config.cloud;
        let bucket = c
            .bucket
            .clone()
            .ok_or_else(|| StorageError::Config("s3 storage needs a `bucket`".into()))?;
        S3Storage::new(S3Options {
            bucket,
            region: c.region.clone(),
            endpoint: c.endpoint.clone(),
            base_url: config.base_url.clone(),
            prefix: c.prefix.clone().unwrap_or_default(),
            read_token: c.token().map(str::to_owned),
            credentials: credential.map(S3Credentials::parse).transpose()?,
            transfer: TransferOptions::from_config(config)?,
        })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

super::cloud::cloud_storage_impls!(S3Storage);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_parse_and_hide_the_secret() {
        let c = S3Credentials::parse("AKID:se/cr+et:tok").expect("valid");
        assert_eq!(c.access_key_id, "AKID");
        assert_eq!(c.secret_access_key, "se/cr+et");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert!(!format!("{c:?}").contains("se/cr+et"));
        assert!(S3Credentials::parse("only-an-id").is_err());
        assert!(S3Credentials::parse(":secret").is_err());
    }

    #[test]
    fn config_errors_are_clear() {
        let cfg = StorageConfig::new("s3", "http://x/");
        let err = S3Storage::from_config(&cfg, None).expect_err("no bucket");
        assert!(err.to_string().contains("bucket"), "{err}");
    }
}
