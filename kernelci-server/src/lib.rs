//! kernelci-server: the KernelCI API server (warp), wire-compatible with the upstream Python
//! API at `/latest`, `/v0` and bare paths.
//!
//! - [`app`]: the shared state ([`App`]) and start-up (store, bus, first admin);
//! - [`router`]: version prefixes, dispatch, logging; [`routes`]: the handlers;
//! - [`auth`]: JWTs, password hashes, revocable tokens; [`pubsub`]: subscriptions over the
//!   durable event log;
//! - [`viewer`]: the web views (trees, revisions, results, logs, compare, health, nodes);
//! - [`storage_upload`]: the kernelci-storage upload endpoint; [`mail`]: invite and
//!   password-reset e-mails over SMTP;
//! - [`proxy`]: the client's address behind trusted proxies; [`ratelimit`]: login and
//!   password-reset budgets; [`stream`]: long JSON answers written as they are read;
//!   [`serve`]: the connection loop (header read timeout, send receipts for `/listen`, quiet
//!   client disconnects).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use clap::Parser;
//! // Flags and environment, as the `kernelci-server` binary reads them (`SECRET_KEY`, ...).
//! let config = kernelci_server::config::ServerConfig::try_parse_from([
//!     "kernelci-server",
//!     "--database",
//!     "sqlite://kernelci.sqlite3",
//! ])?;
//! let app = kernelci_server::app::App::open(config).await?;
//! let (addr, server) = kernelci_server::bind(app, ([127, 0, 0, 1], 0).into(), std::future::pending())?;
//! println!("listening on {addr}");
//! server.await;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod openapi;
pub mod proxy;
pub mod pubsub;
pub mod query;
pub mod ratelimit;
pub mod router;
pub mod routes;
pub mod schemas;
pub mod serve;
pub mod storage_upload;
pub mod stream;
pub mod table;
pub mod viewer;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use warp::Filter;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;

pub use app::App;

use crate::http::{ApiError, Request};

async fn read_body<S, B>(mut body: S, limit: u64) -> Result<Bytes, ApiError>
where
    S: futures::Stream<Item = Result<B, warp::Error>> + Unpin,
    B: bytes::Buf,
{
    let mut out = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let mut chunk = chunk.map_err(|e| {
            // Most often a client that hung up mid-request: not the server's error.
            tracing::debug!(error = %e, "client went away (or broke its request body)");
            ApiError::bad_request(format!("cannot read request body: {e}"))
        })?;
        if (out.len() + chunk.remaining()) as u64 > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body is larger than the limit of {limit} bytes"),
            ));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            out.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// The API as one warp filter (every route, every prefix).
pub fn routes(app: Arc<App>) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let limit = app.config.body_limit;
    let body_timeout = std::time::Duration::from_secs(app.config.body_timeout);
    // The peer: from our connection loop, else warp's (`warp::test` requests).
    let peer = warp::ext::optional::<serve::PeerAddr>()
        .and(warp::addr::remote())
        .map(|ours: Option<serve::PeerAddr>, warps: Option<SocketAddr>| {
            ours.map(|p| p.0).or(warps)
        });
    warp::method()
        .and(warp::path::full())
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::header::headers_cloned())
        .and(peer)
        .and(warp::body::stream())
        .then(
            move |method: Method,
                  path: warp::path::FullPath,
                  query: String,
                  headers: HeaderMap,
                  remote: Option<SocketAddr>,
                  body| {
                let app = app.clone();
                async move {
                    let body =
                        match tokio::time::timeout(body_timeout, read_body(Box::pin(body), limit))
                            .await
                        {
                            Ok(Ok(b)) => b,
                            Ok(Err(e)) => return e.into_response(),
                            Err(_) => {
                                return ApiError::new(
                                    StatusCode::REQUEST_TIMEOUT,
                                    format!(
                                        "The request body did not arrive within {} s",
                                        body_timeout.as_secs()
                                    ),
                                )
                                .into_response();
                            }
                        };
                    let query = form_urlencoded::parse(query.as_bytes())
                        .into_owned()
                        .collect();
                    let req = Request {
                        method,
                        path: path.as_str().to_owned(),
                        version: "latest",
                        query,
                        headers,
                        body,
                        remote,
                    };
                    router::handle(app, req).await
                }
            },
        )
        .recover(|_| async {
            Ok::<_, Infallible>(ApiError::not_found("Not Found").into_response())
        })
        .unify()
}

/// Binds the API on `addr` and returns the bound address and the server future, which stops
/// (after draining in-flight requests) when `shutdown` completes. Background maintenance
/// (stale subscriptions, event retention) runs while the server does. Connections that do
/// not send their request headers within `--header-timeout` are closed.
pub fn bind(
    app: Arc<App>,
    addr: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, impl Future<Output = ()>)> {
    let std_listener = std::net::TcpListener::bind(addr)?;
    std_listener.set_nonblocking(true)?;
    let bound = std_listener.local_addr()?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let maintenance = tokio::spawn(maintenance(app.clone()));
    // This loop tells `/listen` when a response left whole (see `serve`).
    app.pubsub.confirm_deliveries_on_send();
    let filter = routes(app.clone());
    let storage = app.config.storage_dir.clone().and_then(|dir| {
        let base = format!("http://{bound}/storage/");
        match kernelci::storage::LocalStorage::new(&dir, &base) {
            Ok(s) => Some(Arc::new(s)),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot serve the storage directory");
                None
            }
        }
    });
    let token = app.config.storage_token.clone().unwrap_or_default();
    let all = match storage {
        Some(storage) => warp::path("storage")
            .and(storage_upload::routes(storage, token))
            .or(filter)
            .unify()
            .boxed(),
        None => filter.boxed(),
    };
    let header_timeout = std::time::Duration::from_secs(app.config.header_timeout.max(1));
    let server = async move {
        serve::run(listener, all, header_timeout, shutdown).await;
        maintenance.abort();
    };
    Ok((bound, server))
}

async fn maintenance(app: Arc<App>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let removed = app.pubsub.cleanup_stale(pubsub::STALE_AFTER).await;
        if removed > 0 {
            app.metrics
                .subscriptions_cleaned
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(removed, "removed stale subscriptions");
        }
        let ttl = i64::try_from(app.config.event_history_ttl_seconds).unwrap_or(i64::MAX);
        let cutoff = kernelci::models::Timestamp::now().plus_secs(-ttl);
        match app.store.purge_events(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "purged events past retention"),
            Err(e) => tracing::warn!(error = %e, "event retention failed"),
        }
    }
}
