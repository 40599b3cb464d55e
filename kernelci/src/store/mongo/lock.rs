//! The append lease: one document (`counters._id = "append_lease"`) that a server replica's
//! writer holds while it runs a transaction. It keeps the writers of several replicas from
//! running their transactions at the same time, which on the event counter would only buy
//! write conflicts (genuine MongoDB) or, on wire-compatible servers without write-conflict
//! detection (jongodb), duplicate sequence numbers caught by the unique index at commit, with
//! the connection dropped and seconds lost. Correctness never rests on it: the counter inside
//! the transaction, the unique index on `sequence_id` and the retries of
//! [`run_transaction`](super::run_transaction) still decide; the lease only spares the retries.
//! A lease expires after [`LEASE`] (a replica killed while holding it delays the others that
//! long, once).

use std::time::Duration;

use mongodb::bson::doc;

use super::{Inner, write_error_code};
use crate::models::Timestamp;

const LEASE_ID: &str = "append_lease";

/// How long a lease holds without being released.
pub(super) const LEASE: Duration = Duration::from_secs(2);

/// A random name for this store's writer (one per connected store).
pub(super) fn holder_name() -> String {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

fn now_ms() -> i64 {
    Timestamp::now().micros() / 1000
}

/// Takes the lease for `inner`'s writer, waiting while another holds it (at most until that
/// lease expires). Gives up waiting (and runs without it) when the database does not answer:
/// the transaction then reports that error.
pub(super) async fn acquire(inner: &Inner) {
    let mut pause = Duration::from_millis(1);
    loop {
        let now = now_ms();
        let until = now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let taken = inner
            .counters
            .update_one(
                doc! {
                    "_id": LEASE_ID,
                    "$or": [ { "until": { "$lt": now } }, { "holder": &inner.holder } ],
                },
                doc! { "$set": { "holder": &inner.holder, "until": until } },
            )
            .upsert(true)
            .await;
        match taken {
            Ok(_) => return,
            // Held by another writer: the upsert's insert met the lease's `_id`.
            Err(e) if matches!(write_error_code(&e), Some(11000 | 11001)) => {}
            Err(e) => {
                tracing::debug!(error = %e, "append lease not taken");
                return;
            }
        }
        let jitter = Duration::from_micros(u64::from(super::fastrand_ms() as u8) * 250);
        tokio::time::sleep(pause + jitter).await;
        pause = (pause * 2).min(Duration::from_millis(8));
    }
}

/// Releases the lease if this writer still holds it.
pub(super) async fn release(inner: &Inner) {
    let r = inner
        .counters
        .update_one(
            doc! { "_id": LEASE_ID, "holder": &inner.holder },
            doc! { "$set": { "until": 0_i64 } },
        )
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "append lease not released (it expires)");
    }
}
