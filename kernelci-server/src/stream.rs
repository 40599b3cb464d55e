//! Large JSON answers written to the socket as they are read from the store, so one request
//! holds a bounded amount of memory whatever it asks for.
//!
//! A producer task reads the store page by page ([`PAGE`] items, keyset paging) and writes
//! the JSON text into chunks of about [`CHUNK_BYTES`]; at most [`QUEUED_CHUNKS`] chunks wait
//! for a slow client (backpressure: the producer waits too). A client that goes away stops the
//! producer. The status and headers go out before the end is known, so a store error in the
//! middle of the answer cannot become an error status: it is logged and the connection is cut
//! (the client sees a truncated body, never a complete-looking wrong one).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use kernelci::models::ObjectId;
use tokio::sync::mpsc;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::{Reply, Response};

/// Items read from the store at a time. Routes answer shorter results in one piece.
pub const PAGE: u64 = 1000;
/// Bytes gathered before a chunk is handed to the connection.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks that may wait for a slow client.
pub const QUEUED_CHUNKS: usize = 4;

type Chunk = Result<Bytes, std::io::Error>;

/// The body: chunks from the producer task.
struct ChunkStream(mpsc::Receiver<Chunk>);

impl futures::Stream for ChunkStream {
    type Item = Chunk;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

/// Why a producer stopped early.
#[derive(Debug)]
pub enum Stop {
    /// The client went away.
    Gone,
}

/// Writes a JSON answer in chunks; `item` adds array elements with their commas.
pub struct JsonWriter {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
    items: u64,
}

impl JsonWriter {
    /// Appends raw JSON text.
    pub async fn raw(&mut self, text: &str) -> Result<(), Stop> {
        self.buf.extend_from_slice(text.as_bytes());
        if self.buf.len() >= CHUNK_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    /// Appends one array element (a JSON text), after a comma unless it is the first.
    pub async fn item(&mut self, json: &str) -> Result<(), Stop> {
        if self.items > 0 {
            self.buf.push(b',');
        }
        self.items += 1;
        self.raw(json).await
    }

    /// How many elements were written.
    pub fn items(&self) -> u64 {
        self.items
    }

    async fn flush(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES + 4096),
        ));
        self.tx.send(Ok(chunk)).await.map_err(|_| Stop::Gone)
    }

    /// Ends the answer: what is buffered goes out.
    pub async fn finish(mut self) -> Result<(), Stop> {
        self.flush().await
    }

    /// Cuts the answer short after an error: the connection is aborted, so the client cannot
    /// take the truncated text for a complete answer.
    pub async fn abort(self, why: impl std::fmt::Display) {
        tracing::warn!(error = %why, "streamed answer cut short");
        let _ = self
            .tx
            .send(Err(std::io::Error::other(why.to_string())))
            .await;
    }
}

/// A 200 JSON answer whose body `produce` writes while the client reads it.
pub fn json_response<F, Fut>(produce: F) -> Response
where
    F: FnOnce(JsonWriter) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
    let writer = JsonWriter {
        tx,
        buf: Vec::with_capacity(CHUNK_BYTES + 4096),
        items: 0,
    };
    tokio::spawn(produce(writer));
    let mut resp = warp::reply::stream(ChunkStream(rx)).into_response();
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The `id` of a node's JSON text (for the keyset cursor of the next page).
pub fn node_id(doc: &str) -> Option<ObjectId> {
    // The wire form starts with the id; anything else is parsed.
    if let Some(rest) = doc.strip_prefix("{\"id\":\"")
        && let Some(hex) = rest.get(..24)
        && let Ok(id) = ObjectId::parse_str(hex)
    {
        return Some(id);
    }
    #[derive(serde::Deserialize)]
    struct IdOnly {
        id: String,
    }
    serde_json::from_str::<IdOnly>(doc)
        .ok()
        .and_then(|d| ObjectId::parse_str(&d.id).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_read_from_the_text() {
        let id = ObjectId::new();
        assert_eq!(
            node_id(&format!("{{\"id\":\"{id}\",\"kind\":\"checkout\"}}")),
            Some(id)
        );
        assert_eq!(
            node_id(&format!("{{\"kind\":\"checkout\",\"id\":\"{id}\"}}")),
            Some(id)
        );
        assert_eq!(node_id("{\"kind\":\"checkout\"}"), None);
    }
}
