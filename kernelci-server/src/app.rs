//! The application state shared by every request, and start-up.

use std::sync::Arc;
use std::time::Duration;

use kernelci::events::{EventBus, LocalBus};
use kernelci::models::{ObjectId, User, UserGroup};
use kernelci::store::{SharedStore, SqliteStore, TelemetryStore};

use crate::auth::{self, Auth};
use crate::config::ServerConfig;
use crate::mail::Mailer;
use crate::metrics::Metrics;
use crate::pubsub::PubSub;
use crate::ratelimit::RateLimiter;

/// Everything a request handler needs.
pub struct App {
    /// Settings.
    pub config: ServerConfig,
    /// Nodes, users, groups, key/values, the event log.
    pub store: SharedStore,
    /// Telemetry.
    pub telemetry: Arc<dyn TelemetryStore>,
    /// Wake-ups and lists.
    pub bus: Arc<dyn EventBus>,
    /// Tokens and passwords.
    pub auth: Auth,
    /// Subscriptions.
    pub pubsub: PubSub,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Invite and password-reset e-mails.
    pub mailer: Mailer,
    /// Failed login and `update-password` attempts per client.
    pub login_limiter: RateLimiter,
    /// `forgot-password` requests per client.
    pub forgot_password_limiter: RateLimiter,
    /// The web viewer's cache and settings.
    pub viewer: crate::viewer::Viewer,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("listen", &self.config.listen)
            .finish_non_exhaustive()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A setting is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// The store could not be opened or prepared.
    #[error("store: {0}")]
    Store(#[from] kernelci::store::StoreError),
    /// The event bus could not be set up.
    #[error("event bus: {0}")]
    Bus(String),
    /// The operating system gave no random bytes for the token secret.
    #[error("no random bytes from the operating system for the token secret: {0}")]
    Randomness(String),
}

impl StartError {
    /// The error kind.
    pub fn kind(&self) -> kernelci::ErrorKind {
        match self {
            StartError::Config(_) => kernelci::ErrorKind::Invalid,
            StartError::Store(e) => e.kind(),
            StartError::Bus(_) | StartError::Randomness(_) => kernelci::ErrorKind::Unavailable,
        }
    }
}

/// The signing secret: `SECRET_KEY`, or 32 random bytes (hex) when it is not set. Failing
/// randomness is an error, never a weaker secret.
fn signing_secret(config: &ServerConfig) -> Result<String, StartError> {
    if let Some(s) = config
        .secret_key
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        if s.len() < crate::config::MIN_SECRET_BYTES {
            tracing::warn!(
                bytes = s.len(),
                "SECRET_KEY is shorter than {} bytes (accepted: --allow-weak-secret)",
                crate::config::MIN_SECRET_BYTES
            );
        }
        return Ok(s.to_owned());
    }
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| StartError::Randomness(e.to_string()))?;
    tracing::warn!(
        "SECRET_KEY is not set: using a random secret; tokens will not survive a restart"
    );
    Ok(hex::encode(b))
}

impl App {
    /// Builds the application over an already opened store and bus, after checking the
    /// settings ([`ServerConfig::problems`]: weak secrets, SMTP without a public URL, ...).
    pub fn new(
        config: ServerConfig,
        store: SharedStore,
        telemetry: Arc<dyn TelemetryStore>,
        bus: Arc<dyn EventBus>,
    ) -> Result<Arc<App>, StartError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(StartError::Config(problems.join("\n")));
        }
        let secret = signing_secret(&config)?;
        if config
            .unified_secret
            .as_deref()
            .is_some_and(|u| !u.is_empty() && u.len() < crate::config::MIN_SECRET_BYTES)
        {
            tracing::warn!(
                "UNIFIED_SECRET is shorter than 32 bytes (accepted: --allow-weak-secret)"
            );
        }
        let auth = Auth::new(
            &secret,
            config.unified_secret.as_deref(),
            config.access_token_expire_seconds,
            config.invite_token_expire_seconds,
            store.clone(),
        );
        let pubsub = PubSub::new(
            store.clone(),
            bus.clone(),
            config.keep_alive(),
            config.cloud_events_source.clone(),
        );
        let mailer = Mailer::from_config(&config);
        if !mailer.is_configured() {
            tracing::info!(
                "SMTP is not configured (SMTP_HOST, SMTP_PORT, EMAIL_SENDER): no e-mail will be sent"
            );
        }
        if config.storage_dir.is_some()
            && config
                .storage_token
                .as_deref()
                .is_none_or(|t| t.trim().is_empty())
        {
            tracing::warn!(
                "--storage-dir without --storage-token (KCI_STORAGE_TOKEN): the storage is read-only, every upload is refused"
            );
        }
        if config.trusted_proxy.is_empty() {
            tracing::debug!("no trusted proxy: forwarded headers are ignored");
        } else {
            tracing::info!(proxies = ?config.trusted_proxy, "forwarded headers are believed from these peers");
        }
        Ok(Arc::new(App {
            login_limiter: RateLimiter::new(config.login_rate),
            forgot_password_limiter: RateLimiter::new(config.forgot_password_rate),
            config,
            store,
            telemetry,
            bus,
            auth,
            pubsub,
            metrics: Metrics::default(),
            mailer,
            viewer: crate::viewer::Viewer::from_env(),
        }))
    }

    /// Opens the store and bus named by `config` (embedded SQLite and an in-process bus by
    /// default), bootstraps the first admin and the legacy groups.
    pub async fn open(config: ServerConfig) -> Result<Arc<App>, StartError> {
        // Settings first: a refused configuration opens nothing.
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(StartError::Config(problems.join("\n")));
        }
        let url = config.database_url();
        let (store, telemetry): (SharedStore, Arc<dyn TelemetryStore>) =
            if let Some(path) = url.strip_prefix("sqlite://") {
                let tuning = kernelci::store::SqliteTuning::with_budget(
                    config.sqlite_cache_mib,
                    config.sqlite_mmap_mib,
                );
                let s = SqliteStore::open_tuned(path, tuning)?;
                s.set_query_timeout(Duration::from_secs(config.query_timeout));
                (Arc::new(s.clone()), Arc::new(s))
            } else if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
                open_mongo(&config, &url).await?
            } else {
                return Err(StartError::Config(format!(
                    "unknown database URL '{}'; use sqlite://PATH or mongodb://...",
                    crate::config::redact_url(&url)
                )));
            };
        let bus: Arc<dyn EventBus> = match config.redis_url() {
            None => Arc::new(LocalBus::new()),
            Some(url) => open_redis(&url)?,
        };
        let app = App::new(config, store, telemetry, bus)?;
        app.bootstrap().await?;
        Ok(app)
    }

    /// Creates the first admin (when `KCI_INITIAL_PASSWORD` is set and no superuser exists)
    /// and the `node:edit:any` group.
    pub async fn bootstrap(&self) -> Result<(), StartError> {
        let edit_any = match self.store.get_group_by_name("node:edit:any").await? {
            Some(g) => g,
            None => match self
                .store
                .insert_group(UserGroup::new("node:edit:any"))
                .await
            {
                Ok(g) => g,
                // Another replica created it first.
                Err(_) => self
                    .store
                    .get_group_by_name("node:edit:any")
                    .await?
                    .ok_or_else(|| {
                        StartError::Config("cannot create group node:edit:any".into())
                    })?,
            },
        };
        for legacy in ["staging.kernelci.org", "production"] {
            if let Some(mut u) = self.store.get_user_by_username(legacy).await?
                && !u.in_group("node:edit:any")
            {
                u.groups.push(edit_any.clone());
                self.store.update_user(u).await?;
            }
        }
        let filter = kernelci::query::Filter::all().and(
            "is_superuser",
            kernelci::query::Op::Eq,
            kernelci::query::Operand::One(kernelci::query::Scalar::Bool(true)),
        );
        let (supers, _) = self.store.find_users(&filter, 0, Some(1)).await?;
        if !supers.is_empty() {
            return Ok(());
        }
        let Some(password) = self
            .config
            .initial_password
            .clone()
            .filter(|p| !p.is_empty())
        else {
            tracing::warn!(
                "no superuser exists and KCI_INITIAL_PASSWORD is not set: no admin was created"
            );
            return Ok(());
        };
        let username = self.config.initial_admin_username.clone();
        let email = self
            .config
            .initial_admin_email
            .clone()
            .unwrap_or_else(|| format!("{username}@kernelci.org"));
        let hashed = auth::hash_password_async(password)
            .await
            .map_err(|e| StartError::Config(format!("{:?}", e.body)))?;
        let admin = User {
            id: ObjectId::new(),
            email,
            hashed_password: hashed,
            is_active: true,
            is_superuser: true,
            is_verified: true,
            username: username.clone(),
            groups: vec![],
        };
        match self.store.insert_user(admin).await {
            Ok(_) => tracing::info!(%username, "created the initial admin user"),
            Err(e) => {
                tracing::warn!(%username, error = %e, "could not create the initial admin user")
            }
        }
        Ok(())
    }
}

#[cfg(feature = "mongodb")]
async fn open_mongo(
    config: &ServerConfig,
    url: &str,
) -> Result<(SharedStore, Arc<dyn TelemetryStore>), StartError> {
    // Upstream's database name is fixed (`kernelci`); `KCI_MONGO_DATABASE` overrides it.
    let database = std::env::var("KCI_MONGO_DATABASE").unwrap_or_else(|_| "kernelci".into());
    let mut mc = kernelci::store::MongoConfig::new(url, database);
    mc.query_timeout = Duration::from_secs(config.query_timeout);
    mc.event_ttl = Duration::from_secs(config.event_history_ttl_seconds);
    let store = kernelci::store::MongoStore::connect_with(mc).await?;
    Ok((Arc::new(store.clone()), Arc::new(store)))
}

#[cfg(not(feature = "mongodb"))]
async fn open_mongo(
    _config: &ServerConfig,
    url: &str,
) -> Result<(SharedStore, Arc<dyn TelemetryStore>), StartError> {
    Err(StartError::Config(format!(
        "'{}': this build has no MongoDB support; rebuild with the `mongodb` feature",
        crate::config::redact_url(url)
    )))
}

#[cfg(feature = "redis")]
fn open_redis(url: &str) -> Result<Arc<dyn EventBus>, StartError> {
    kernelci::events::RedisBus::new(url)
        .map(|b| Arc::new(b) as Arc<dyn EventBus>)
        // The bus names the URL in its errors: without its password here.
        .map_err(|e| StartError::Bus(e.to_string().replace(url, &crate::config::redact_url(url))))
}

#[cfg(not(feature = "redis"))]
fn open_redis(url: &str) -> Result<Arc<dyn EventBus>, StartError> {
    Err(StartError::Config(format!(
        "'{}': this build has no Redis support; rebuild with the `redis` feature",
        crate::config::redact_url(url)
    )))
}
