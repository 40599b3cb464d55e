//! The connection loop: the warp filter served by hyper, with two things warp's own `run`
//! lacks.
//!
//! - **Send receipts.** A handler may put a [`SendReceipt`] into a response's extensions; it is
//!   told `true` once the whole body was handed to the connection, `false` when the body was
//!   dropped before its end (the client went away, the connection broke). `/listen` uses it
//!   so that only an event that really left the server counts as delivered.
//! - **Quiet disconnects.** A client that closes its connection mid-request (a timed-out
//!   long-poll, a load balancer's health check, a killed client) is logged at debug; warp logs
//!   every such connection as `ERROR warp::server::run: server connection error:
//!   hyper::Error(IncompleteMessage)`. Other connection errors are warnings.
//!
//! The client's address reaches the filter as a [`ClientAddr`] request extension.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::sync::oneshot;
use tower_service::Service;

/// The client's address, as a request extension (warp's own is private to its `run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

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

/// Whether a connection error only says that the client went away.
fn is_disconnect(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(h) = e.downcast_ref::<hyper::Error>()
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
            )
        {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Whether an accept error concerns one connection only (the listener is fine).
fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// Serves `service` (`warp::service(filter)`) on `listener` until `shutdown` completes, then
/// lets the open connections finish their requests.
pub async fn serve<S, B>(
    listener: tokio::net::TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    S: Service<
            hyper::Request<hyper::body::Incoming>,
            Response = hyper::Response<B>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = service.clone();
        let handler =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(remote));
                let mut service = service.clone();
                async move {
                    let response = match service.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    };
                    let (mut parts, inner) = response.into_parts();
                    let receipt = parts.extensions.remove::<SendReceipt>();
                    Ok::<_, Infallible>(hyper::Response::from_parts(
                        parts,
                        ReceiptBody { inner, receipt },
                    ))
                }
            });
        let connection = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(stream), handler)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                if is_disconnect(&*err) {
                    tracing::debug!(client = %remote, error = %err, "client went away");
                } else {
                    tracing::warn!(client = %remote, error = %err, "connection error");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
