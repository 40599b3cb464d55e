//! [`EventLog`] on SQLite: table `event` (`seq` is the sequence, AUTOINCREMENT so a number is
//! never reused, even after a purge), the retention mark `meta.purged_through`, counters in
//! `counter`, durable subscriber positions in `subscriber`, subscriptions in `subscription`
//! (`id`, `version` — the compare-and-set token — and the record as JSON).

use async_trait::async_trait;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde_json::Value;

use super::writer::Tx;
use super::{SqliteStore, corrupt, db_err, load_all, one_doc, sql};
use crate::models::{ObjectId, Timestamp};
use crate::query::Filter;
use crate::store::{
    Conflict, Entity, EventFilter, EventLog, NewEvent, StoreError, StoreResult, StoredEvent,
    SubscriberState, SubscriptionRecord,
};

fn sql_id(id: u64) -> StoreResult<i64> {
    i64::try_from(id).map_err(|_| StoreError::Invalid(format!("subscription id {id} too large")))
}

fn subscription_doc(record: &SubscriptionRecord) -> StoreResult<String> {
    serde_json::to_string(record).map_err(|e| StoreError::Internal(e.to_string()))
}

/// Appends `ev` with the next sequence number, inside the caller's transaction (a node write's
/// or [`EventLog::append_events`]'s).
pub(super) fn append_event(tx: &Tx<'_>, ev: NewEvent) -> StoreResult<StoredEvent> {
    let mut stored = ev.stored(0, Timestamp::now());
    let attrs = if stored.attributes.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&stored.attributes)
                .map_err(|e| StoreError::Internal(e.to_string()))?,
        )
    };
    // The document is written with sequence 0 and fixed up after the insert assigns `seq`.
    let mut stmt = tx
        .prepare_cached("INSERT INTO event (id, ts, channel, owner, attrs, doc) VALUES (?1, ?2, ?3, ?4, ?5, '{}')")
        .map_err(db_err)?;
    stmt.execute(params![
        stored.id.to_hex(),
        stored.timestamp.to_string(),
        stored.channel,
        stored.owner,
        attrs
    ])
    .map_err(db_err)?;
    let seq = tx.last_insert_rowid();
    stored.sequence_id =
        u64::try_from(seq).map_err(|_| StoreError::Internal("negative sequence".into()))?;
    let doc = serde_json::to_string(&stored.to_document())
        .map_err(|e| StoreError::Internal(e.to_string()))?;
    tx.prepare_cached("UPDATE event SET doc = ?2 WHERE seq = ?1")
        .map_err(db_err)?
        .execute(params![seq, doc])
        .map_err(db_err)?;
    tx.event_appended(&stored);
    Ok(stored)
}

/// The events `sql_text` (selecting `seq, doc, attrs`) finds with `params`, in its order.
fn select_events(
    c: &Connection,
    sql_text: &str,
    params: &[SqlValue],
) -> StoreResult<Vec<StoredEvent>> {
    let mut stmt = c.prepare_cached(sql_text).map_err(db_err)?;
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .map_err(db_err)?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, doc, attrs): (i64, String, Option<String>) = row.map_err(db_err)?;
        out.push(decode_event(seq, &doc, attrs)?);
    }
    Ok(out)
}

fn decode_event(seq: i64, doc: &str, attrs: Option<String>) -> StoreResult<StoredEvent> {
    #[derive(serde::Deserialize)]
    struct Doc {
        id: ObjectId,
        timestamp: Timestamp,
        channel: String,
        owner: Option<String>,
        data: Value,
    }
    let d: Doc = serde_json::from_str(doc).map_err(|e| corrupt("event", e))?;
    let attributes = match attrs {
        Some(a) => serde_json::from_str(&a).map_err(|e| corrupt("event attributes", e))?,
        None => serde_json::Map::new(),
    };
    Ok(StoredEvent {
        sequence_id: u64::try_from(seq).map_err(|_| corrupt("event", "negative sequence"))?,
        id: d.id,
        timestamp: d.timestamp,
        channel: d.channel,
        owner: d.owner,
        data: d.data,
        attributes,
    })
}

#[async_trait]
impl EventLog for SqliteStore {
    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<StoredEvent>> {
        self.write(move |tx| events.into_iter().map(|e| append_event(tx, e)).collect())
            .await
    }

    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        // A listener at the end of the log: the events it was woken for are in memory.
        if let Some(found) = self.inner.tail.after(after, filter, limit) {
            return Ok(found);
        }
        let filter = filter.clone();
        self.read(move |c| {
            let purged: i64 = c
                .query_row(
                    "SELECT value FROM meta WHERE key = 'purged_through'",
                    [],
                    |r| r.get::<_, String>(0).map(|s| s.parse().unwrap_or(0)),
                )
                .optional()
                .map_err(db_err)?
                .unwrap_or(0);
            let after_i = i64::try_from(after).unwrap_or(i64::MAX);
            if after_i < purged {
                return Err(StoreError::EventsPurged {
                    requested: after,
                    oldest: purged as u64 + 1,
                });
            }
            let mut sql_text = String::from("SELECT seq, doc, attrs FROM event WHERE seq > ?1");
            let mut params: Vec<SqlValue> = vec![SqlValue::Integer(after_i)];
            if let Some(ch) = &filter.channel {
                params.push(SqlValue::Text(ch.clone()));
                sql_text.push_str(&format!(" AND channel = ?{}", params.len()));
            }
            if let Some(owner) = &filter.owner {
                params.push(SqlValue::Text(owner.clone()));
                sql_text.push_str(&format!(
                    " AND (owner IS NULL OR owner = ?{})",
                    params.len()
                ));
            }
            sql_text.push_str(&format!(
                " ORDER BY seq LIMIT {}",
                limit.min(i64::MAX as usize)
            ));
            select_events(c, &sql_text, &params)
        })
        .await
    }

    async fn find_events(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let w = sql::where_clause(filter, "doc", &|_| None).map_err(StoreError::Invalid)?;
        self.read(move |c| {
            let limit = limit.map(|l| l.min(i64::MAX as u64) as i64).unwrap_or(-1);
            let sql_text = format!(
                "SELECT seq, doc, attrs FROM event WHERE {} ORDER BY seq LIMIT {limit} OFFSET {}",
                w.sql,
                offset.min(i64::MAX as u64)
            );
            select_events(c, &sql_text, &w.params)
        })
        .await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.read(|c| {
            // sqlite_sequence keeps the highest seq ever assigned, even after a purge.
            let seq: Option<i64> = c
                .query_row(
                    "SELECT seq FROM sqlite_sequence WHERE name = 'event'",
                    [],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            Ok(seq.unwrap_or(0).max(0) as u64)
        })
        .await
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        self.write(move |tx| {
            let ts = before.to_string();
            let max_seq: Option<i64> =
                tx.query_row("SELECT max(seq) FROM event WHERE ts < ?1", [&ts], |r| r.get(0)).map_err(db_err)?;
            let Some(max_seq) = max_seq else { return Ok(0) };
            tx.events_purged();
            let n = tx.execute("DELETE FROM event WHERE seq <= ?1", [max_seq]).map_err(db_err)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('purged_through', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                [max_seq.to_string()],
            )
            .map_err(db_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn increment_counter(&self, name: &str) -> StoreResult<u64> {
        let name = name.to_owned();
        self.write(move |tx| {
            let v: i64 = tx
                .query_row(
                    "INSERT INTO counter (name, value) VALUES (?1, 1)
                     ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                    [name],
                    |r| r.get(0),
                )
                .map_err(db_err)?;
            Ok(v.max(0) as u64)
        })
        .await
    }

    async fn get_subscriber(&self, subscriber_id: &str) -> StoreResult<Option<SubscriberState>> {
        let id = subscriber_id.to_owned();
        self.read(move |c| {
            one_doc(
                c,
                "SELECT doc FROM subscriber WHERE subscriber_id = ?1",
                &id,
                "subscriber",
            )
        })
        .await
    }

    async fn put_subscriber(&self, state: SubscriberState) -> StoreResult<()> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&state).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "INSERT INTO subscriber (subscriber_id, doc) VALUES (?1, ?2)
                 ON CONFLICT (subscriber_id) DO UPDATE SET doc = excluded.doc",
                params![state.subscriber_id, doc],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn ack_subscriber(&self, subscriber_id: &str, sequence_id: u64) -> StoreResult<()> {
        let id = subscriber_id.to_owned();
        self.write(move |tx| {
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM subscriber WHERE subscriber_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err)?;
            let Some(doc) = doc else {
                return Err(StoreError::not_found(Entity::Subscriber, id));
            };
            let mut state: SubscriberState =
                serde_json::from_str(&doc).map_err(|e| corrupt("subscriber", e))?;
            state.last_event_id = state.last_event_id.max(sequence_id);
            state.last_poll = Some(Timestamp::now());
            let doc =
                serde_json::to_string(&state).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "UPDATE subscriber SET doc = ?2 WHERE subscriber_id = ?1",
                params![id, doc],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn insert_subscription(
        &self,
        mut record: SubscriptionRecord,
    ) -> StoreResult<SubscriptionRecord> {
        record.version = 1;
        let id = sql_id(record.id)?;
        self.write(move |tx| {
            let doc = subscription_doc(&record)?;
            tx.execute(
                "INSERT INTO subscription (id, version, doc) VALUES (?1, 1, ?2)",
                params![id, doc],
            )
            .map_err(|e| match db_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(Conflict::Other(format!(
                    "subscription {} exists",
                    record.id
                ))),
                other => other,
            })?;
            Ok(record)
        })
        .await
    }

    async fn get_subscription(&self, id: u64) -> StoreResult<Option<SubscriptionRecord>> {
        let id = sql_id(id)?.to_string();
        self.read_point(move |c| {
            one_doc(
                c,
                "SELECT doc FROM subscription WHERE id = CAST(?1 AS INTEGER)",
                &id,
                "subscription",
            )
        })
        .await
    }

    async fn update_subscription(
        &self,
        mut record: SubscriptionRecord,
    ) -> StoreResult<Option<SubscriptionRecord>> {
        let id = sql_id(record.id)?;
        let expected = sql_id(record.version)?;
        record.version += 1;
        self.write(move |tx| {
            let doc = subscription_doc(&record)?;
            let changed = tx
                .prepare_cached(
                    "UPDATE subscription SET version = ?3, doc = ?4 WHERE id = ?1 AND version = ?2",
                )
                .map_err(db_err)?
                .execute(params![id, expected, expected + 1, doc])
                .map_err(db_err)?;
            Ok((changed == 1).then_some(record))
        })
        .await
    }

    async fn delete_subscription(&self, id: u64, version: Option<u64>) -> StoreResult<bool> {
        let id = sql_id(id)?;
        let version = version.map(sql_id).transpose()?;
        self.write(move |tx| {
            let n = match version {
                Some(v) => tx.execute(
                    "DELETE FROM subscription WHERE id = ?1 AND version = ?2",
                    params![id, v],
                ),
                None => tx.execute("DELETE FROM subscription WHERE id = ?1", params![id]),
            }
            .map_err(db_err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn list_subscriptions(&self) -> StoreResult<Vec<SubscriptionRecord>> {
        self.read(|c| {
            load_all(
                c,
                "SELECT doc FROM subscription ORDER BY id",
                "subscription",
            )
        })
        .await
    }
}
