//! Server settings: command-line flags, with upstream's environment variable names honoured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::proxy::Cidr;
use crate::ratelimit::Rate;

/// The shortest `SECRET_KEY` (and `UNIFIED_SECRET`) accepted without `--allow-weak-secret`,
/// in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// Settings of the API server.
///
/// Every flag can also be given by environment; upstream's variable names (`SECRET_KEY`,
/// `UNIFIED_SECRET`, `MONGO_SERVICE`, `REDIS_HOST`, `ACCESS_TOKEN_EXPIRE_SECONDS`,
/// `KEEP_ALIVE_PERIOD`, `CLOUD_EVENTS_SOURCE`, `PUBLIC_BASE_URL`, `SMTP_HOST`, `SMTP_PORT`,
/// `EMAIL_SENDER`, `EMAIL_PASSWORD`, ...) are read too. [`ServerConfig::check`] refuses
/// settings that cannot work or would weaken security; its `Debug` output shows no secret.
#[derive(Clone, Parser)]
#[command(
    name = "kernelci-server",
    version,
    about = "KernelCI API server, wire-compatible with upstream"
)]
pub struct ServerConfig {
    /// Address to listen on.
    #[arg(long, env = "KCI_LISTEN", default_value = "127.0.0.1:8001")]
    pub listen: SocketAddr,
    /// Node store: `sqlite://PATH` (default `sqlite://kernelci.sqlite3`) or `mongodb://...`.
    #[arg(long, env = "KCI_DATABASE", hide_env_values = true)]
    pub database: Option<String>,
    /// Redis URL for cross-process wake-ups and lists (default: in-process bus).
    #[arg(long, env = "KCI_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// Secret for signing tokens (upstream `SECRET_KEY`), at least 32 bytes (`openssl rand
    /// -hex 32`). Without it a random per-process secret is used and a warning is logged
    /// (tokens die with the process).
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Fallback secret accepted when verifying tokens (upstream `UNIFIED_SECRET`), at least 32
    /// bytes.
    #[arg(long, env = "UNIFIED_SECRET", hide_env_values = true)]
    pub unified_secret: Option<String>,
    /// Accept a `SECRET_KEY`/`UNIFIED_SECRET` shorter than 32 bytes (with a warning): for an
    /// operator who keeps an upstream deployment's secret so its tokens stay valid.
    #[arg(long, env = "KCI_ALLOW_WEAK_SECRET")]
    pub allow_weak_secret: bool,
    /// Lifetime of login tokens in seconds (upstream default: 10 years).
    #[arg(
        long,
        env = "ACCESS_TOKEN_EXPIRE_SECONDS",
        default_value_t = 315_360_000
    )]
    pub access_token_expire_seconds: u64,
    /// Lifetime of invite tokens in seconds.
    #[arg(long, env = "INVITE_TOKEN_EXPIRE_SECONDS", default_value_t = 604_800)]
    pub invite_token_expire_seconds: u64,
    /// Seconds between BEEP keep-alives on `/listen` (0: none).
    #[arg(long, env = "KEEP_ALIVE_PERIOD", default_value_t = 45)]
    pub keep_alive_period: u64,
    /// CloudEvent `source` of published events.
    #[arg(
        long,
        env = "CLOUD_EVENTS_SOURCE",
        default_value = "https://api.kernelci.org/"
    )]
    pub cloud_events_source: String,
    /// The public URL of the API (`https://api.example.org`, upstream `PUBLIC_BASE_URL`): the
    /// only base of the links in e-mails (invites, password resets). Required when SMTP is
    /// configured; a request's `Host` or forwarded headers never make a link in a mail.
    #[arg(
        long = "public-url",
        visible_alias = "public-base-url",
        env = "PUBLIC_BASE_URL"
    )]
    pub public_base_url: Option<String>,
    /// A reverse proxy whose `Forwarded`/`X-Forwarded-*` headers are believed (the client
    /// address for rate limits, the URL shown by `/user/invite/url` when no public URL is
    /// set): an address or block such as `10.0.0.0/8`; repeatable (env: comma-separated).
    /// None by default: the client is the socket peer, and forwarded headers are ignored.
    #[arg(
        long = "trusted-proxy",
        env = "KCI_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<Cidr>,
    /// Failed login (and `update-password`) attempts allowed per client address: `N/min`,
    /// `N/hour`, ...; `off` for no limit. Beyond, 429 with `Retry-After`.
    #[arg(long, env = "KCI_LOGIN_RATE", default_value = "10/min")]
    pub login_rate: Rate,
    /// `/user/forgot-password` requests allowed per client address (each may send a mail);
    /// `off` for no limit. Beyond, 429 with `Retry-After`.
    #[arg(long, env = "KCI_FORGOT_PASSWORD_RATE", default_value = "20/hour")]
    pub forgot_password_rate: Rate,
    /// Seconds a client has to send a request's headers (also how long an idle kept-alive
    /// connection stays open); a client trickling headers is disconnected (slow-loris).
    #[arg(long, env = "KCI_HEADER_TIMEOUT", default_value_t = 30)]
    pub header_timeout: u64,
    /// Seconds a client has to send a request's body; beyond, 408.
    #[arg(long, env = "KCI_BODY_TIMEOUT", default_value_t = 300)]
    pub body_timeout: u64,
    /// How long events are kept, in seconds (upstream `EVENT_HISTORY_TTL_SECONDS`).
    #[arg(long, env = "EVENT_HISTORY_TTL_SECONDS", default_value_t = 604_800)]
    pub event_history_ttl_seconds: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "KCI_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub body_limit: u64,
    /// Time budget of one database query, in seconds.
    #[arg(long, env = "KCI_QUERY_TIMEOUT", default_value_t = 15)]
    pub query_timeout: u64,
    /// Embedded SQLite store: page cache of all its connections together, MiB (half for the
    /// writer, half shared by the readers).
    #[arg(long, env = "KCI_SQLITE_CACHE_MIB", default_value_t = 64)]
    pub sqlite_cache_mib: u64,
    /// Embedded SQLite store: MiB of the database file each connection may memory-map (0:
    /// none). Mapped pages count in the server's `VmRSS` once per connection.
    #[arg(long, env = "KCI_SQLITE_MMAP_MIB", default_value_t = 0)]
    pub sqlite_mmap_mib: u64,
    /// Username of the first admin, created at start-up when no superuser exists.
    #[arg(long, env = "KCI_INITIAL_ADMIN_USERNAME", default_value = "admin")]
    pub initial_admin_username: String,
    /// Password of the first admin (no admin is created without it).
    #[arg(long, env = "KCI_INITIAL_PASSWORD", hide_env_values = true)]
    pub initial_password: Option<String>,
    /// E-mail of the first admin (default `<username>@kernelci.org`).
    #[arg(long, env = "KCI_INITIAL_ADMIN_EMAIL")]
    pub initial_admin_email: Option<String>,
    /// Directory of a local artifact storage served at `/storage/` with the upload endpoint
    /// (`/storage/upload`), if any.
    #[arg(long, env = "KCI_STORAGE_DIR")]
    pub storage_dir: Option<PathBuf>,
    /// Token required by the storage upload endpoint (`Authorization: Bearer <token>`). It is
    /// a shared secret of its own, not an API token. Without it the storage directory is
    /// served read-only: every upload is refused (401).
    #[arg(long, env = "KCI_STORAGE_TOKEN", hide_env_values = true)]
    pub storage_token: Option<String>,
    /// SMTP server for invite, welcome and password-reset e-mails (upstream `SMTP_HOST`).
    /// Without it (or `--smtp-port`, `--email-sender`) no e-mail is sent: invites answer
    /// `"email_sent": false` and `/user/forgot-password` answers 400 for a known, active user.
    #[arg(long, env = "SMTP_HOST")]
    pub smtp_host: Option<String>,
    /// SMTP port (upstream `SMTP_PORT`): 465 means implicit TLS; any other port uses STARTTLS
    /// when the server offers it.
    #[arg(long, env = "SMTP_PORT")]
    pub smtp_port: Option<u16>,
    /// The `From` address of e-mails, also the SMTP login (upstream `EMAIL_SENDER`).
    #[arg(long, env = "EMAIL_SENDER")]
    pub email_sender: Option<String>,
    /// The SMTP login password (upstream `EMAIL_PASSWORD`). Unset or empty: no login (a relay
    /// that needs none).
    #[arg(long, env = "EMAIL_PASSWORD", hide_env_values = true)]
    pub email_password: Option<String>,
    /// How long sending one e-mail may take, in seconds, from connecting to the last answer.
    #[arg(long, env = "KCI_SMTP_TIMEOUT", default_value_t = 30)]
    pub smtp_timeout: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig::parse_from(["kernelci-server"])
    }
}

/// The signing secret of [`ServerConfig::for_tests`], for tests that forge or check tokens.
#[cfg(any(test, feature = "testsuite"))]
#[doc(hidden)]
pub const TEST_SECRET_KEY: &str = "kernelci-server-tests-only-secret-0123456789";

impl ServerConfig {
    /// The configuration with no flags and no environment, and a fixed, publicly known
    /// secret ([`TEST_SECRET_KEY`]): for tests only (cargo feature `testsuite`).
    #[cfg(any(test, feature = "testsuite"))]
    #[doc(hidden)]
    pub fn for_tests() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: None,
            redis: None,
            secret_key: Some(TEST_SECRET_KEY.into()),
            unified_secret: None,
            allow_weak_secret: false,
            access_token_expire_seconds: 315_360_000,
            invite_token_expire_seconds: 604_800,
            keep_alive_period: 45,
            cloud_events_source: "https://api.kernelci.org/".into(),
            public_base_url: None,
            trusted_proxy: Vec::new(),
            login_rate: Rate {
                count: 10,
                period: Duration::from_secs(60),
            },
            forgot_password_rate: Rate {
                count: 20,
                period: Duration::from_secs(3600),
            },
            header_timeout: 30,
            body_timeout: 300,
            event_history_ttl_seconds: 604_800,
            body_limit: 32 * 1024 * 1024,
            query_timeout: 15,
            sqlite_cache_mib: 64,
            sqlite_mmap_mib: 0,
            initial_admin_username: "admin".into(),
            initial_password: None,
            initial_admin_email: None,
            storage_dir: None,
            storage_token: None,
            smtp_host: None,
            smtp_port: None,
            email_sender: None,
            email_password: None,
            smtp_timeout: 30,
        }
    }

    /// The database URL, applying upstream's `MONGO_SERVICE` when no `--database` was given.
    pub fn database_url(&self) -> String {
        if let Some(db) = &self.database {
            return db.clone();
        }
        match std::env::var("MONGO_SERVICE") {
            Ok(m) if !m.is_empty() => m,
            _ => "sqlite://kernelci.sqlite3".into(),
        }
    }

    /// The Redis URL, applying upstream's `REDIS_HOST`/`REDIS_DB_NUMBER`.
    pub fn redis_url(&self) -> Option<String> {
        if let Some(r) = &self.redis {
            return Some(r.clone());
        }
        let host = std::env::var("REDIS_HOST").ok().filter(|h| !h.is_empty())?;
        let db = std::env::var("REDIS_DB_NUMBER").unwrap_or_else(|_| "1".into());
        Some(format!("redis://{host}/{db}"))
    }

    /// The keep-alive period, or `None` when disabled.
    pub fn keep_alive(&self) -> Option<Duration> {
        (self.keep_alive_period > 0).then(|| Duration::from_secs(self.keep_alive_period))
    }

    /// The configured public URL without its trailing `/`, if any.
    pub fn public_url(&self) -> Option<&str> {
        self.public_base_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty())
    }

    /// Whether every setting needed to send e-mail is there (`SMTP_HOST`, `SMTP_PORT`,
    /// `EMAIL_SENDER`).
    pub fn smtp_configured(&self) -> bool {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        set(&self.smtp_host) && self.smtp_port.is_some() && set(&self.email_sender)
    }

    /// The settings that cannot work or would weaken security, each as one message naming
    /// the flag and its variable; empty when all is well. A secret shorter than
    /// [`MIN_SECRET_BYTES`] is refused unless [`ServerConfig::allow_weak_secret`] is set.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (name, value) in [
            ("SECRET_KEY (--secret-key)", &self.secret_key),
            ("UNIFIED_SECRET (--unified-secret)", &self.unified_secret),
        ] {
            let Some(v) = value.as_deref().filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            if v.len() < MIN_SECRET_BYTES && !self.allow_weak_secret {
                out.push(format!(
                    "{name} is {} bytes long; at least {MIN_SECRET_BYTES} are required \
                     (make one with `openssl rand -hex 32`), or pass --allow-weak-secret \
                     (KCI_ALLOW_WEAK_SECRET=true) to keep an existing secret and its tokens",
                    v.len()
                ));
            }
        }
        match self.public_url() {
            Some(u) => {
                if let Err(e) = check_public_url(u) {
                    out.push(format!("--public-url (PUBLIC_BASE_URL) '{u}': {e}"));
                }
            }
            None if self.smtp_configured() => out.push(
                "SMTP is configured (SMTP_HOST, SMTP_PORT, EMAIL_SENDER) but no public URL: \
                 set --public-url (PUBLIC_BASE_URL) to the address users reach the API at; \
                 links in e-mails are never built from a request's Host or forwarded headers"
                    .to_owned(),
            ),
            None => {}
        }
        for (name, v) in [
            ("--header-timeout (KCI_HEADER_TIMEOUT)", self.header_timeout),
            ("--body-timeout (KCI_BODY_TIMEOUT)", self.body_timeout),
        ] {
            if v == 0 {
                out.push(format!("{name} must be at least 1 second"));
            }
        }
        out
    }
}

/// Whether `u` can be the base of links: an absolute `http`/`https` URL with a host, and no
/// credentials, query or fragment (a path prefix is fine).
fn check_public_url(u: &str) -> Result<(), String> {
    let url = url::Url::parse(u).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials do not belong in a public URL".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("no query or fragment, please".into());
    }
    Ok(())
}

/// A URL with its password (if any) replaced, for logs and `Debug`.
pub fn redact_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some("REDACTED"));
            url.to_string()
        }
        Ok(_) => u.to_owned(),
        // Not parsable: it may still hold `user:password@`.
        Err(_) if u.contains('@') => "<redacted URL>".to_owned(),
        Err(_) => u.to_owned(),
    }
}

/// Secrets show as whether they are set, never their value.
fn redacted(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| "<redacted>")
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured, so a new field cannot be added without deciding how it shows.
        let ServerConfig {
            listen,
            database,
            redis,
            secret_key,
            unified_secret,
            allow_weak_secret,
            access_token_expire_seconds,
            invite_token_expire_seconds,
            keep_alive_period,
            cloud_events_source,
            public_base_url,
            trusted_proxy,
            login_rate,
            forgot_password_rate,
            header_timeout,
            body_timeout,
            event_history_ttl_seconds,
            body_limit,
            query_timeout,
            sqlite_cache_mib,
            sqlite_mmap_mib,
            initial_admin_username,
            initial_password,
            initial_admin_email,
            storage_dir,
            storage_token,
            smtp_host,
            smtp_port,
            email_sender,
            email_password,
            smtp_timeout,
        } = self;
        f.debug_struct("ServerConfig")
            .field("listen", listen)
            .field("database", &database.as_deref().map(redact_url))
            .field("redis", &redis.as_deref().map(redact_url))
            .field("secret_key", &redacted(secret_key))
            .field("unified_secret", &redacted(unified_secret))
            .field("allow_weak_secret", allow_weak_secret)
            .field("access_token_expire_seconds", access_token_expire_seconds)
            .field("invite_token_expire_seconds", invite_token_expire_seconds)
            .field("keep_alive_period", keep_alive_period)
            .field("cloud_events_source", cloud_events_source)
            .field("public_base_url", public_base_url)
            .field("trusted_proxy", trusted_proxy)
            .field("login_rate", login_rate)
            .field("forgot_password_rate", forgot_password_rate)
            .field("header_timeout", header_timeout)
            .field("body_timeout", body_timeout)
            .field("event_history_ttl_seconds", event_history_ttl_seconds)
            .field("body_limit", body_limit)
            .field("query_timeout", query_timeout)
            .field("sqlite_cache_mib", sqlite_cache_mib)
            .field("sqlite_mmap_mib", sqlite_mmap_mib)
            .field("initial_admin_username", initial_admin_username)
            .field("initial_password", &redacted(initial_password))
            .field("initial_admin_email", initial_admin_email)
            .field("storage_dir", storage_dir)
            .field("storage_token", &redacted(storage_token))
            .field("smtp_host", smtp_host)
            .field("smtp_port", smtp_port)
            .field("email_sender", email_sender)
            .field("email_password", &redacted(email_password))
            .field("smtp_timeout", smtp_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_url("mongodb://kci:hunter2@db:27017/?replicaSet=rs0"),
            "mongodb://kci:REDACTED@db:27017/?replicaSet=rs0"
        );
        assert_eq!(
            redact_url("redis://:hunter2@redis/1"),
            "redis://:REDACTED@redis/1"
        );
        assert_eq!(redact_url("sqlite://kci.sqlite3"), "sqlite://kci.sqlite3");
        assert_eq!(redact_url("://kci:hunter2@db"), "<redacted URL>");
    }

    #[test]
    fn public_urls_are_checked() {
        assert!(check_public_url("https://api.example.org").is_ok());
        assert!(check_public_url("https://example.org/kernelci/api").is_ok());
        for bad in [
            "api.example.org",
            "ftp://example.org",
            "https://u:p@example.org",
            "https://example.org/?a=1",
            "https://example.org/#x",
        ] {
            assert!(check_public_url(bad).is_err(), "{bad}");
        }
    }
}
