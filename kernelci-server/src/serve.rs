//! The connection loop: hyper (HTTP/1.1 and HTTP/2, as warp serves) with a header read
//! timeout, so a client that trickles its request headers (slow-loris) or leaves a kept-alive
//! connection idle is disconnected after `--header-timeout`. Warp's own server sets no timer,
//! so no such timeout; this loop is warp's graceful one plus the timer and the peer address.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use warp::filters::BoxedFilter;
use warp::hyper::body::Incoming;
use warp::hyper::service::Service as _;
use warp::reply::Response;

/// The socket peer of a connection, put in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `filter` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish.
pub async fn run(
    listener: tokio::net::TcpListener,
    filter: BoxedFilter<(Response,)>,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) {
                        // Out of file descriptors, most likely: wait for some to close.
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(warp::service(filter.clone()));
        let service =
            warp::hyper::service::service_fn(move |mut req: warp::hyper::Request<Incoming>| {
                req.extensions_mut().insert(PeerAddr(peer));
                service.call(req)
            });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(e) = watcher.watch(conn).await {
                // Header timeouts, resets, malformed requests: the client's doing.
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
