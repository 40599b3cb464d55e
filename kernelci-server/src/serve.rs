//! The connection loop: hyper (HTTP/1.1 and HTTP/2, as warp serves) with three things warp's
//! own server lacks.
//!
//! - **A header read timeout.** A client that trickles its request headers (slow-loris) or
//!   leaves a kept-alive connection idle is disconnected after `--header-timeout`.
//! - **Send receipts.** A handler may put a [`SendReceipt`] into a response's extensions; it is
//!   told `true` once the whole body was handed to the connection, `false` when the body was
//!   dropped before its end (the client went away, the connection broke). `/listen` uses it
//!   so that only an event that really left the server counts as delivered.
//! - **Quiet disconnects.** A client that closes its connection mid-request (a timed-out
//!   long-poll, a load balancer's health check, a killed client) is logged at debug; warp logs
//!   every such connection as `ERROR warp::server::run: server connection error:
//!   hyper::Error(IncompleteMessage)`. Other connection errors are warnings.
//!
//! The socket peer reaches the filter as a [`PeerAddr`] request extension.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::oneshot;
use warp::filters::BoxedFilter;
use warp::hyper::body::{Body, Frame, Incoming, SizeHint};
use warp::hyper::service::Service as _;
use warp::reply::Response;

/// The socket peer of a connection, put in each request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// Put into a response's extensions to learn whether its body reached the connection whole.
/// Cloning shares the one answer.
#[derive(Debug, Clone)]
pub struct SendReceipt(Arc<Mutex<Option<oneshot::Sender<bool>>>>);

impl SendReceipt {
    /// A receipt and the receiver of its answer: `Ok(true)` when the body was handed to the
    /// connection to its end, `Ok(false)` or an error (the receipt dropped unanswered, e.g. by
    /// a transport that does not give receipts) otherwise.
    pub fn new() -> (SendReceipt, oneshot::Receiver<bool>) {
        let (tx, rx) = oneshot::channel();
        (SendReceipt(Arc::new(Mutex::new(Some(tx)))), rx)
    }

    fn answer(&self, sent: bool) {
        let tx = self.0.lock().map(|mut t| t.take()).unwrap_or_default();
        if let Some(tx) = tx {
            let _ = tx.send(sent);
        }
    }
}

/// A response body that answers its [`SendReceipt`] when its last frame was taken (`true`) or
/// when it is dropped before that (`false`).
struct ReceiptBody<B> {
    inner: B,
    receipt: Option<SendReceipt>,
}

impl<B> ReceiptBody<B> {
    fn settle(&mut self, sent: bool) {
        if let Some(r) = self.receipt.take() {
            r.answer(sent);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for ReceiptBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            // The last frame handed over: hyper writes and flushes it right away (it may not
            // poll again when the body says it has ended).
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.settle(true),
            Poll::Ready(None) => self.settle(true),
            Poll::Ready(Some(Err(_))) => self.settle(false),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ReceiptBody<B> {
    fn drop(&mut self) {
        self.settle(false);
    }
}

/// Whether a connection error only says that the client went away (or was too slow).
fn is_disconnect(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(h) = e.downcast_ref::<warp::hyper::Error>()
            && (h.is_incomplete_message()
                || h.is_canceled()
                || h.is_closed()
                || h.is_body_write_aborted()
                || h.is_timeout())
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::NotConnected
                    | std::io::ErrorKind::TimedOut
            )
        {
            return true;
        }
        cause = e.source();
    }
    false
}

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
                let response = service.call(req);
                async move {
                    let response = match response.await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    let (mut parts, inner) = response.into_parts();
                    let receipt = parts.extensions.remove::<SendReceipt>();
                    Ok::<_, Infallible>(warp::hyper::Response::from_parts(
                        parts,
                        ReceiptBody { inner, receipt },
                    ))
                }
            });
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(err) = watcher.watch(conn).await {
                if is_disconnect(&*err) {
                    // Header timeouts, resets, hang-ups mid-request: the client's doing.
                    tracing::debug!(%peer, error = %err, "client went away");
                } else {
                    // Malformed requests and the like.
                    tracing::debug!(%peer, error = %err, "connection ended");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
