//! Server settings: command-line flags, with upstream's environment variable names honoured.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Settings of the API server.
///
/// Every flag can also be given by environment; upstream's variable names (`SECRET_KEY`,
/// `UNIFIED_SECRET`, `MONGO_SERVICE`, `REDIS_HOST`, `ACCESS_TOKEN_EXPIRE_SECONDS`,
/// `KEEP_ALIVE_PERIOD`, `CLOUD_EVENTS_SOURCE`, `PUBLIC_BASE_URL`, `SMTP_HOST`, `SMTP_PORT`,
/// `EMAIL_SENDER`, `EMAIL_PASSWORD`, ...) are read too.
#[derive(Debug, Clone, Parser)]
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
    #[arg(long, env = "KCI_DATABASE")]
    pub database: Option<String>,
    /// Redis URL for cross-process wake-ups and lists (default: in-process bus).
    #[arg(long, env = "KCI_REDIS")]
    pub redis: Option<String>,
    /// Secret for signing tokens (upstream `SECRET_KEY`). Without it a random per-process
    /// secret is used and a warning is logged (tokens die with the process).
    #[arg(long, env = "SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    /// Fallback secret accepted when verifying tokens (upstream `UNIFIED_SECRET`).
    #[arg(long, env = "UNIFIED_SECRET", hide_env_values = true)]
    pub unified_secret: Option<String>,
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
    /// Public base URL for invite links.
    #[arg(long, env = "PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// How long events are kept, in seconds (upstream `EVENT_HISTORY_TTL_SECONDS`).
    #[arg(long, env = "EVENT_HISTORY_TTL_SECONDS", default_value_t = 604_800)]
    pub event_history_ttl_seconds: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "KCI_BODY_LIMIT", default_value_t = 32 * 1024 * 1024)]
    pub body_limit: u64,
    /// Time budget of one database query, in seconds.
    #[arg(long, env = "KCI_QUERY_TIMEOUT", default_value_t = 15)]
    pub query_timeout: u64,
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

impl ServerConfig {
    /// The configuration with no flags and no environment: for tests and embedding.
    pub fn for_tests() -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            database: None,
            redis: None,
            secret_key: Some("test-secret".into()),
            unified_secret: None,
            access_token_expire_seconds: 315_360_000,
            invite_token_expire_seconds: 604_800,
            keep_alive_period: 45,
            cloud_events_source: "https://api.kernelci.org/".into(),
            public_base_url: None,
            event_history_ttl_seconds: 604_800,
            body_limit: 32 * 1024 * 1024,
            query_timeout: 15,
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
}
