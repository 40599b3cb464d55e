//! The web viewer: "what broke in my tree, and since when" and "is the pipeline healthy",
//! served by the API server itself, offline.
//!
//! Pages (server-rendered HTML, state in the URL; no script needed):
//!
//! | URL | view |
//! |---|---|
//! | `/viewer/trees?days=&tree=` | trees: each branch's latest revision with build/boot/test counts (landing page) |
//! | `/viewer/tree/{tree}/{branch}` | redirects to the branch's latest revision |
//! | `/viewer/checkout/{id}?tab=&status=&arch=&config=&compiler=&platform=&runtime=` | a revision: Builds / Boots / Tests, failures first, breakdowns, history strip |
//! | `/viewer/result/{id}` | a build or test: context, status history, regression / fixed / unstable |
//! | `/viewer/log/{id}?artifact=` | a log from storage, errors and warnings highlighted |
//! | `/viewer/compare/{base}/{target}` (`/viewer/compare/{id}`: previous → this) | two revisions: new failures, fixes, still failing |
//! | `/viewer/health?hours=` | pipeline health (replaces `/stats` and `/analytics`) |
//! | `/viewer/node/{id}`, `/viewer/nodes?q=` | the node browser (upstream `/viewer`) |
//! | `/viewer/manage` | submit a custom checkout with a token (upstream `/manage`) |
//!
//! Upstream's page paths are these pages too (200, upstream's titles): `/viewer` and
//! `/dashboard` the trees page (`/viewer?node_id=ID`, the link the KCIDB bridge publishes, the
//! node page), `/stats` and `/analytics` the health page, `/manage` the manage page.
//!
//! Every page and data endpoint is an entry of the route table ([`crate::table::viewer`]).
//!
//! Data (JSON, our extension of the API, in the OpenAPI document): `/viewer/api/trees`,
//! `/viewer/api/checkout/{id}` (+ `/results`, `/history`), `/viewer/api/result/{id}`,
//! `/viewer/api/log/{id}`, `/viewer/api/compare/{base}/{target}`, `/viewer/api/health`.
//! Counts come from the store ([`kernelci::store::ResultsStore`]) and are cached for
//! `KCI_VIEWER_CACHE_SECS` (default 10) seconds.

pub mod api;
pub mod cache;
pub mod data;
pub mod health;
pub mod log;
pub mod manage;
pub mod model;
pub mod pages;

use std::time::Duration;

/// The viewer's state: its cache and the storage it may read logs from.
#[derive(Debug)]
pub struct Viewer {
    /// Aggregates, kept briefly.
    pub cache: cache::TtlCache,
    /// Storage URL prefixes logs may be read from besides the server's own storage.
    pub storage_urls: Vec<url::Url>,
    /// LAVA labs' web addresses by runtime name, for job links.
    pub lava_urls: Vec<(String, String)>,
}

impl Viewer {
    /// The viewer configured from the environment: `KCI_VIEWER_CACHE_SECS` (default 10; 0
    /// turns the cache off), `KCI_VIEWER_STORAGE_URLS` (comma-separated storage URL prefixes
    /// logs may be read from), `KCI_VIEWER_LAVA_URLS` (`runtime=https://lava.example,...`).
    pub fn from_env() -> Viewer {
        let var = |k: &str| std::env::var(k).ok();
        let secs = var("KCI_VIEWER_CACHE_SECS")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(10);
        let lava_urls = var("KCI_VIEWER_LAVA_URLS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .filter(|(_, v)| v.starts_with("http://") || v.starts_with("https://"))
            .collect();
        Viewer {
            cache: cache::TtlCache::new(Duration::from_secs(secs)),
            storage_urls: log::configured_storage_urls(var("KCI_VIEWER_STORAGE_URLS").as_deref()),
            lava_urls,
        }
    }
}
