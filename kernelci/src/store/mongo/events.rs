//! [`EventLog`] on MongoDB: collection `eventhistory` (upstream's shape), the sequence and the
//! retention point in `counters`, durable subscriber positions in `subscriber_state`,
//! subscriptions in `subscription` (each change a single-document compare-and-set on
//! `version`: no transaction, atomic on any MongoDB).

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ReturnDocument;
use serde_json::Value;

use super::convert::{self, EVENT, SUBSCRIBER};
use super::{
    MongoStore, PURGED_ID, SEQ_ID, Tx, as_u64, corrupt, decode_json, encode, mongo_err, raise_to,
    tx_fn,
};
use crate::models::Timestamp;
use crate::query::Filter;
use crate::store::{
    Conflict, Delivery, Entity, EventFilter, EventLog, NewEvent, StoreError, StoreResult,
    StoredEvent, SubscriberState, SubscriptionRecord,
};

/// A subscription as stored (`_id` the id; integers as `Int64`, times as datetimes).
#[derive(serde::Serialize, serde::Deserialize)]
struct SubscriptionDoc {
    #[serde(rename = "_id")]
    id: i64,
    version: i64,
    channel: String,
    user: String,
    promiscuous: bool,
    durable: Option<String>,
    position: i64,
    sent: Option<SentDoc>,
    created: mongodb::bson::DateTime,
    last_poll: Option<mongodb::bson::DateTime>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SentDoc {
    sequence_id: i64,
    confirmed: bool,
}

fn int(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} {v} too large")))
}

fn subscription_doc(r: &SubscriptionRecord) -> StoreResult<Document> {
    let d = SubscriptionDoc {
        id: int(r.id, "subscription id")?,
        version: int(r.version, "version")?,
        channel: r.channel.clone(),
        user: r.user.clone(),
        promiscuous: r.promiscuous,
        durable: r.durable.clone(),
        position: int(r.position, "position")?,
        sent: r
            .sent
            .map(|s| {
                Ok::<_, StoreError>(SentDoc {
                    sequence_id: int(s.sequence_id, "sequence id")?,
                    confirmed: s.confirmed,
                })
            })
            .transpose()?,
        created: convert::datetime(r.created),
        last_poll: r.last_poll.map(convert::datetime),
    };
    mongodb::bson::to_document(&d).map_err(|e| StoreError::Internal(e.to_string()))
}

fn decode_subscription(d: Document) -> StoreResult<SubscriptionRecord> {
    let d: SubscriptionDoc =
        mongodb::bson::from_document(d).map_err(|e| corrupt("subscription", e))?;
    let uint = |v: i64| u64::try_from(v).map_err(|_| corrupt("subscription", "negative number"));
    let time = |t: mongodb::bson::DateTime| {
        convert::from_datetime(t).ok_or_else(|| corrupt("subscription", "bad time"))
    };
    Ok(SubscriptionRecord {
        id: uint(d.id)?,
        channel: d.channel,
        user: d.user,
        promiscuous: d.promiscuous,
        durable: d.durable,
        position: uint(d.position)?,
        sent: d
            .sent
            .map(|s| {
                Ok::<_, StoreError>(Delivery {
                    sequence_id: uint(s.sequence_id)?,
                    confirmed: s.confirmed,
                })
            })
            .transpose()?,
        created: time(d.created)?,
        last_poll: d.last_poll.map(time).transpose()?,
        version: uint(d.version)?,
    })
}

fn event_doc(e: &StoredEvent) -> Document {
    let mut d = doc! {
        "_id": convert::oid(e.id),
        "timestamp": convert::datetime(e.timestamp),
        "sequence_id": i64::try_from(e.sequence_id).unwrap_or(i64::MAX),
        "channel": e.channel.clone(),
        "owner": e.owner.clone().map(Bson::String).unwrap_or(Bson::Null),
        "data": convert::json_to_bson(&e.data),
    };
    if !e.attributes.is_empty() {
        d.insert(
            "attributes",
            convert::json_to_bson(&Value::Object(e.attributes.clone())),
        );
    }
    d
}

fn decode_event(d: &Document) -> StoreResult<StoredEvent> {
    let id = match d.get("_id") {
        Some(Bson::ObjectId(o)) => convert::from_oid(o),
        _ => None,
    }
    .ok_or_else(|| corrupt("event", "bad _id"))?;
    let timestamp = match d.get("timestamp") {
        Some(Bson::DateTime(t)) => convert::from_datetime(*t),
        Some(Bson::String(s)) => Timestamp::parse(s).ok(),
        _ => None,
    }
    .ok_or_else(|| corrupt("event", "bad timestamp"))?;
    let sequence_id = match d.get("sequence_id") {
        Some(Bson::Int32(i)) => u64::try_from(*i).ok(),
        Some(Bson::Int64(i)) => u64::try_from(*i).ok(),
        Some(Bson::Double(f)) if *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
    .ok_or_else(|| corrupt("event", "bad sequence_id"))?;
    let attributes = match d.get("attributes") {
        Some(Bson::Document(a)) => match convert::bson_to_json(&Bson::Document(a.clone())) {
            Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
        _ => serde_json::Map::new(),
    };
    Ok(StoredEvent {
        sequence_id,
        id,
        timestamp,
        channel: d.get_str("channel").unwrap_or_default().to_owned(),
        owner: d.get_str("owner").ok().map(str::to_owned),
        data: d
            .get("data")
            .map(convert::bson_to_json)
            .unwrap_or(Value::Null),
        attributes,
    })
}

impl Tx {
    /// Appends events with the next sequence numbers, inside this write's transaction (a node
    /// write's or [`EventLog::append_events`]'s).
    pub(super) async fn append(&mut self, events: Vec<NewEvent>) -> StoreResult<Vec<StoredEvent>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let n = i64::try_from(events.len()).unwrap_or(i64::MAX);
        let counters = self.inner.counters.clone();
        let action = counters
            .find_one_and_update(doc! { "_id": SEQ_ID }, doc! { "$inc": { "seq": n } })
            .upsert(true)
            .return_document(ReturnDocument::After);
        let r = match self.session.as_mut() {
            Some(s) => action.session(s).await,
            None => action.await,
        };
        let last = as_u64(
            r.map_err(|e| self.fail_sequence("next event sequence", e))?
                .as_ref()
                .and_then(|d| d.get("seq")),
        );
        let count = u64::try_from(events.len()).unwrap_or(u64::MAX);
        // A counter document someone else changed (a missing or non-numeric `seq`) must not
        // wrap the arithmetic.
        let first = last.checked_add(1).and_then(|n| n.checked_sub(count));
        let first = first.filter(|f| *f > 0).ok_or_else(|| {
            StoreError::Internal(format!(
                "the event counter {SEQ_ID:?} reads {last} after adding {count}: corrupt"
            ))
        })?;
        let now = convert::millis(Timestamp::now());
        let stored: Vec<StoredEvent> = events
            .into_iter()
            .zip(first..)
            .map(|(e, sequence_id)| e.stored(sequence_id, now))
            .collect();
        let docs: Vec<Document> = stored.iter().map(event_doc).collect();
        if self.witness.is_none() {
            self.witness = docs.first().and_then(|d| d.get("_id")).cloned();
        }
        let evs = self.inner.events.clone();
        let r = match self.session.as_mut() {
            Some(s) => evs.insert_many(docs).session(s).await,
            None => evs.insert_many(docs).await,
        };
        r.map_err(|e| self.fail_sequence("append events", e))?;
        Ok(stored)
    }
}

impl MongoStore {
    /// `EventsPurged` when events after `after` were removed by retention.
    async fn check_retention(&self, after: u64) -> StoreResult<()> {
        let last = self.counter(SEQ_ID).await?;
        if after >= last {
            // Nothing was ever appended after `after`: nothing to have lost.
            return Ok(());
        }
        let purged = self.counter(PURGED_ID).await?;
        // Retention by the TTL index leaves no mark: the oldest event kept tells.
        let oldest = self
            .inner
            .events
            .find_one(doc! {})
            .sort(doc! { "sequence_id": 1 })
            .await
            .map_err(|e| mongo_err("read events", e))?
            .map(|d| as_u64(d.get("sequence_id")));
        let below_oldest = match oldest {
            Some(o) => o.saturating_sub(1),
            None => last,
        };
        let boundary = purged.max(below_oldest);
        if after < boundary {
            return Err(StoreError::EventsPurged {
                requested: after,
                oldest: boundary + 1,
            });
        }
        Ok(())
    }
}

#[async_trait]
impl EventLog for MongoStore {
    async fn append_events(&self, events: Vec<NewEvent>) -> StoreResult<Vec<StoredEvent>> {
        self.write(tx_fn(move |tx| {
            let events = events.clone();
            Box::pin(async move { tx.append(events).await })
        }))
        .await
    }

    async fn events_after(
        &self,
        after: u64,
        filter: &EventFilter,
        limit: usize,
    ) -> StoreResult<Vec<StoredEvent>> {
        self.read(async {
            let mut f = doc! { "sequence_id": { "$gt": i64::try_from(after).unwrap_or(i64::MAX) } };
            if let Some(ch) = &filter.channel {
                f.insert("channel", ch.clone());
            }
            if let Some(owner) = &filter.owner {
                f.insert("owner", doc! { "$in": [owner.clone(), Bson::Null] });
            }
            let cursor = self
                .inner
                .events
                .find(f)
                .sort(doc! { "sequence_id": 1 })
                .limit(i64::try_from(limit).unwrap_or(i64::MAX))
                .max_time(self.inner.query_timeout)
                .await
                .map_err(|e| mongo_err("read events", e))?;
            let docs: Vec<Document> = cursor
                .try_collect()
                .await
                .map_err(|e| mongo_err("read events", e))?;
            let events = docs
                .iter()
                .map(decode_event)
                .collect::<StoreResult<Vec<_>>>()?;
            // The next event right after `after` proves nothing between was purged; otherwise
            // check the retention point (read after the events: a purge that ran before
            // the read is seen, one after it did not touch what was read).
            if events.first().is_none_or(|e| e.sequence_id != after + 1) {
                self.check_retention(after).await?;
            }
            Ok(events)
        })
        .await
    }

    async fn find_events(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<Vec<StoredEvent>> {
        let t = convert::translate(&EVENT, filter);
        self.read(async {
            let mut action = self
                .inner
                .events
                .find(t.doc.clone())
                .sort(doc! { "sequence_id": 1 })
                .max_time(self.inner.query_timeout);
            if t.residual.is_empty() {
                action = action.skip(offset);
                if let Some(l) = limit {
                    action = action.limit(i64::try_from(l).unwrap_or(i64::MAX));
                }
            }
            let mut cursor = action.await.map_err(|e| mongo_err("find events", e))?;
            let mut out = Vec::new();
            let mut skipped = 0;
            while let Some(d) = cursor
                .try_next()
                .await
                .map_err(|e| mongo_err("find events", e))?
            {
                let ev = decode_event(&d)?;
                if !t.residual.is_empty() {
                    if limit.is_some_and(|l| out.len() as u64 >= l) {
                        break;
                    }
                    let doc = ev.to_document();
                    if !t.residual.iter().all(|c| c.matches(&doc)) {
                        continue;
                    }
                    if skipped < offset {
                        skipped += 1;
                        continue;
                    }
                }
                out.push(ev);
            }
            Ok(out)
        })
        .await
    }

    async fn last_event_sequence(&self) -> StoreResult<u64> {
        self.read(self.counter(SEQ_ID)).await
    }

    async fn purge_events(&self, before: Timestamp) -> StoreResult<u64> {
        let before = convert::datetime(before);
        let top = self
            .inner
            .events
            .find_one(doc! { "timestamp": { "$lt": before } })
            .sort(doc! { "sequence_id": -1 })
            .await
            .map_err(|e| mongo_err("purge events", e))?;
        let Some(top) = top else { return Ok(0) };
        let top = i64::try_from(as_u64(top.get("sequence_id"))).unwrap_or(i64::MAX);
        // Record the retention point first: a reader never sees a silent gap.
        raise_to(&self.inner.counters, PURGED_ID, top).await?;
        let r = self
            .inner
            .events
            .delete_many(doc! { "sequence_id": { "$lte": top } })
            .await
            .map_err(|e| mongo_err("purge events", e))?;
        Ok(r.deleted_count)
    }

    async fn increment_counter(&self, name: &str) -> StoreResult<u64> {
        let id = format!("counter:{name}");
        let _one_at_a_time = self.inner.counter_lock.lock().await;
        let r = self
            .inner
            .counters
            .find_one_and_update(doc! { "_id": &id }, doc! { "$inc": { "seq": 1i64 } })
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| mongo_err("increment a counter", e))?;
        Ok(as_u64(r.as_ref().and_then(|d| d.get("seq"))))
    }

    async fn get_subscriber(&self, subscriber_id: &str) -> StoreResult<Option<SubscriberState>> {
        let d = self
            .read(async {
                self.inner
                    .subscribers
                    .find_one(doc! { "subscriber_id": subscriber_id })
                    .await
                    .map_err(|e| mongo_err("get subscriber", e))
            })
            .await?;
        d.map(|mut d| {
            d.remove("_id");
            decode_json(&d, "subscriber")
        })
        .transpose()
    }

    async fn put_subscriber(&self, state: SubscriberState) -> StoreResult<()> {
        let d = encode(&SUBSCRIBER, &state)?;
        self.inner
            .subscribers
            .replace_one(doc! { "subscriber_id": state.subscriber_id.clone() }, d)
            .upsert(true)
            .await
            .map_err(|e| mongo_err("put subscriber", e))?;
        Ok(())
    }

    async fn ack_subscriber(&self, subscriber_id: &str, sequence_id: u64) -> StoreResult<()> {
        let seq = i64::try_from(sequence_id).unwrap_or(i64::MAX);
        let now = convert::datetime(Timestamp::now());
        // Forward only: a guarded `$set` (atomic per document), then stamp `last_poll`.
        self.inner
            .subscribers
            .update_one(
                doc! { "subscriber_id": subscriber_id, "last_event_id": { "$lt": seq } },
                doc! { "$set": { "last_event_id": seq, "last_poll": now } },
            )
            .await
            .map_err(|e| mongo_err("ack subscriber", e))?;
        let r = self
            .inner
            .subscribers
            .update_one(
                doc! { "subscriber_id": subscriber_id },
                doc! { "$set": { "last_poll": now } },
            )
            .await
            .map_err(|e| mongo_err("ack subscriber", e))?;
        if r.matched_count == 0 {
            return Err(StoreError::not_found(Entity::Subscriber, subscriber_id));
        }
        Ok(())
    }

    async fn insert_subscription(
        &self,
        mut record: SubscriptionRecord,
    ) -> StoreResult<SubscriptionRecord> {
        record.version = 1;
        let d = subscription_doc(&record)?;
        match self.inner.subscriptions.insert_one(d).await {
            Ok(_) => Ok(record),
            Err(e) => Err(match mongo_err("insert subscription", e) {
                StoreError::Conflict(_) => StoreError::Conflict(Conflict::Other(format!(
                    "subscription {} exists",
                    record.id
                ))),
                other => other,
            }),
        }
    }

    async fn get_subscription(&self, id: u64) -> StoreResult<Option<SubscriptionRecord>> {
        let id = int(id, "subscription id")?;
        let d = self
            .read(async {
                self.inner
                    .subscriptions
                    .find_one(doc! { "_id": id })
                    .await
                    .map_err(|e| mongo_err("get subscription", e))
            })
            .await?;
        d.map(decode_subscription).transpose()
    }

    async fn update_subscription(
        &self,
        mut record: SubscriptionRecord,
    ) -> StoreResult<Option<SubscriptionRecord>> {
        let id = int(record.id, "subscription id")?;
        let expected = int(record.version, "version")?;
        record.version += 1;
        let d = subscription_doc(&record)?;
        // One document, matched on its version: atomic without a transaction.
        let r = self
            .inner
            .subscriptions
            .replace_one(doc! { "_id": id, "version": expected }, d)
            .await
            .map_err(|e| mongo_err("update subscription", e))?;
        Ok((r.matched_count == 1).then_some(record))
    }

    async fn delete_subscription(&self, id: u64, version: Option<u64>) -> StoreResult<bool> {
        let mut filter = doc! { "_id": int(id, "subscription id")? };
        if let Some(v) = version {
            filter.insert("version", int(v, "version")?);
        }
        let r = self
            .inner
            .subscriptions
            .delete_one(filter)
            .await
            .map_err(|e| mongo_err("delete subscription", e))?;
        Ok(r.deleted_count == 1)
    }

    async fn list_subscriptions(&self) -> StoreResult<Vec<SubscriptionRecord>> {
        let docs: Vec<Document> = self
            .read(async {
                let c = self
                    .inner
                    .subscriptions
                    .find(doc! {})
                    .sort(doc! { "_id": 1 })
                    .max_time(self.inner.query_timeout)
                    .await
                    .map_err(|e| mongo_err("list subscriptions", e))?;
                c.try_collect()
                    .await
                    .map_err(|e| mongo_err("list subscriptions", e))
            })
            .await?;
        docs.into_iter().map(decode_subscription).collect()
    }
}
