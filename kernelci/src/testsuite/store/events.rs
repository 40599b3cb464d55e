//! The [`EventLog`] suite: sequence numbers, readers after a position, filters, retention,
//! counters and durable subscriber positions.

use serde_json::json;

use super::{filter, must};
use crate::ErrorKind;
use crate::models::Timestamp;
use crate::store::{
    Delivery, EventFilter, EventLog, NewEvent, StoreError, SubscriberState, SubscriptionRecord,
};

/// An event on `channel` owned by `owner`, numbered `n` in its data.
pub(crate) fn new_event(channel: &str, owner: Option<&str>, n: u64) -> NewEvent {
    NewEvent {
        channel: channel.into(),
        owner: owner.map(Into::into),
        data: json!({"n": n, "kind": "test"}),
        attributes: Default::default(),
    }
}

/// The event log: growing sequence numbers, channel and owner filters, retention.
pub async fn event_log<S: EventLog>(store: &S) {
    let mut all = Vec::new();
    for i in 0..30u64 {
        let (ch, owner) = match i % 3 {
            0 => ("node", Some("alice")),
            1 => ("node", Some("bob")),
            _ => ("retry", None),
        };
        all.extend(
            must(
                "append",
                store.append_events(vec![new_event(ch, owner, i)]).await,
            )
            .await,
        );
    }
    let seqs: Vec<u64> = all.iter().map(|e| e.sequence_id).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence grows: {seqs:?}"
    );
    assert_eq!(
        must("last", store.last_event_sequence().await).await,
        *seqs.last().expect("events")
    );
    let node_alice = EventFilter {
        channel: Some("node".into()),
        owner: Some("alice".into()),
    };
    let got = must("after", store.events_after(0, &node_alice, 100).await).await;
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|e| e.owner.as_deref() == Some("alice")));
    let retry_as_bob = EventFilter {
        channel: Some("retry".into()),
        owner: Some("bob".into()),
    };
    assert_eq!(
        must("after", store.events_after(0, &retry_as_bob, 100).await)
            .await
            .len(),
        10,
        "ownerless events reach everyone"
    );
    let tail = must(
        "after",
        store
            .events_after(seqs[25], &EventFilter::default(), 3)
            .await,
    )
    .await;
    assert_eq!(
        tail.iter().map(|e| e.sequence_id).collect::<Vec<_>>(),
        seqs[26..29].to_vec()
    );
    assert_eq!(tail[0], all[26], "events read back unchanged");
    let found = must(
        "find",
        store
            .find_events(
                &filter([("data.n__gte", "27"), ("channel", "node")]),
                0,
                None,
            )
            .await,
    )
    .await;
    assert_eq!(
        found
            .iter()
            .map(|e| e.data["n"].as_u64().unwrap_or(99))
            .collect::<Vec<_>>(),
        vec![27, 28]
    );
    // Retention: purge everything so far; readers behind it get an explicit error.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let purged = must("purge", store.purge_events(Timestamp::now()).await).await;
    assert_eq!(purged, 30);
    let err = store
        .events_after(seqs[3], &EventFilter::default(), 10)
        .await
        .expect_err("behind retention");
    assert!(matches!(err, StoreError::EventsPurged { .. }), "{err}");
    assert_eq!(
        must("last", store.last_event_sequence().await).await,
        seqs[29],
        "sequence survives purge"
    );
    let fresh = must(
        "append",
        store.append_events(vec![new_event("node", None, 99)]).await,
    )
    .await;
    assert!(fresh[0].sequence_id > seqs[29], "numbers are never reused");
    let after_last = must(
        "after",
        store
            .events_after(seqs[29], &EventFilter::default(), 10)
            .await,
    )
    .await;
    assert_eq!(
        after_last.len(),
        1,
        "a reader at the purge point is not behind"
    );
}

/// Durable subscriber positions: stored, acknowledged forward only.
pub async fn subscribers<S: EventLog>(store: &S) {
    assert!(
        must("get", store.get_subscriber("scheduler:node").await)
            .await
            .is_none()
    );
    let state = SubscriberState {
        subscriber_id: "scheduler:node".into(),
        channel: "node".into(),
        user: "admin".into(),
        promiscuous: true,
        last_event_id: 5,
        created_at: Timestamp::now(),
        last_poll: None,
    };
    must("put", store.put_subscriber(state.clone()).await).await;
    must("ack", store.ack_subscriber("scheduler:node", 9).await).await;
    must("ack", store.ack_subscriber("scheduler:node", 7).await).await;
    let got = must("get", store.get_subscriber("scheduler:node").await)
        .await
        .expect("exists");
    assert_eq!(got.last_event_id, 9, "never moves backwards");
    assert!(got.last_poll.is_some());
    let err = store
        .ack_subscriber("nobody", 1)
        .await
        .expect_err("unknown subscriber");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Counters start at 1, grow by one per call, and are kept apart by name.
pub async fn counters<S: EventLog>(store: &S) {
    assert_eq!(must("first", store.increment_counter("a").await).await, 1);
    assert_eq!(must("second", store.increment_counter("a").await).await, 2);
    assert_eq!(must("other", store.increment_counter("b").await).await, 1);
    let all = futures::future::join_all((0..20).map(|_| store.increment_counter("a"))).await;
    let mut values: Vec<u64> = all.into_iter().map(|r| r.expect("increment")).collect();
    values.sort_unstable();
    assert_eq!(
        values,
        (3..23).collect::<Vec<u64>>(),
        "concurrent increments are distinct"
    );
}

/// A subscription record with id `id` (times in whole milliseconds, as every store keeps them).
pub fn subscription(id: u64, user: &str) -> SubscriptionRecord {
    SubscriptionRecord {
        id,
        channel: "node".into(),
        user: user.into(),
        promiscuous: false,
        durable: Some(format!("{user}:node")),
        position: 3,
        sent: None,
        created: Timestamp::now().truncate_to_millis(),
        last_poll: None,
        version: 0,
    }
}

/// Subscriptions: stored with version 1, read back unchanged, listed by id, an id taken twice
/// is a conflict.
pub async fn subscription_records<S: EventLog>(store: &S) {
    assert!(must("get", store.get_subscription(7).await).await.is_none());
    let stored = must(
        "insert",
        store.insert_subscription(subscription(7, "alice")).await,
    )
    .await;
    assert_eq!(stored.version, 1, "a new record has version 1");
    let mut other = subscription(3, "bob");
    other.promiscuous = true;
    other.durable = None;
    other.sent = Some(Delivery {
        sequence_id: 9,
        confirmed: false,
    });
    other.last_poll = Some(Timestamp::now().truncate_to_millis());
    let other = must("insert", store.insert_subscription(other).await).await;
    let got = must("get", store.get_subscription(7).await)
        .await
        .expect("stored");
    assert_eq!(got, stored, "read back unchanged");
    assert_eq!(
        must("get", store.get_subscription(3).await).await,
        Some(other.clone())
    );
    let err = store
        .insert_subscription(subscription(7, "mallory"))
        .await
        .expect_err("id taken");
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    let all = must("list", store.list_subscriptions().await).await;
    assert_eq!(all, vec![other, stored], "every record, by id");
}

/// Compare-and-set: a write on the stored version wins and bumps it; a write on an older
/// version (another replica changed the record in between) or on a removed record changes
/// nothing; concurrent writers on one version: exactly one wins.
pub async fn subscription_compare_and_set<S: EventLog>(store: &S) {
    let v1 = must(
        "insert",
        store.insert_subscription(subscription(1, "alice")).await,
    )
    .await;
    let mut change = v1.clone();
    change.position = 10;
    change.sent = Some(Delivery {
        sequence_id: 11,
        confirmed: true,
    });
    let v2 = must("update", store.update_subscription(change).await)
        .await
        .expect("the stored version wins");
    assert_eq!(v2.version, 2);
    assert_eq!(
        must("get", store.get_subscription(1).await).await,
        Some(v2.clone())
    );
    let mut stale = v1.clone();
    stale.position = 99;
    assert_eq!(
        must("stale update", store.update_subscription(stale).await).await,
        None,
        "a write on an old version changes nothing"
    );
    assert_eq!(
        must("get", store.get_subscription(1).await)
            .await
            .map(|r| r.position),
        Some(10)
    );
    // Racing writers on version 2: one wins, the others see the change.
    let racers = (0..8u64).map(|i| {
        let mut r = v2.clone();
        r.position = 100 + i;
        store.update_subscription(r)
    });
    let results = futures::future::join_all(racers).await;
    let winners: Vec<_> = results
        .into_iter()
        .filter_map(|r| r.expect("update"))
        .collect();
    assert_eq!(winners.len(), 1, "exactly one compare-and-set wins");
    let now = must("get", store.get_subscription(1).await)
        .await
        .expect("stored");
    assert_eq!(now, winners[0]);
    assert_eq!(now.version, 3);
    assert!(must("delete", store.delete_subscription(1, None).await).await);
    assert_eq!(
        must("update", store.update_subscription(now).await).await,
        None,
        "a removed subscription is not written back"
    );
    assert!(must("get", store.get_subscription(1).await).await.is_none());
}

/// Delete-if-unchanged (the stale sweep): a delete on an old version leaves the record a
/// replica has touched since; on the current version, or unconditional, it removes it.
pub async fn subscription_conditional_delete<S: EventLog>(store: &S) {
    let v1 = must(
        "insert",
        store.insert_subscription(subscription(5, "alice")).await,
    )
    .await;
    let mut touched = v1.clone();
    touched.last_poll = Some(Timestamp::now().truncate_to_millis());
    let v2 = must("renew", store.update_subscription(touched).await)
        .await
        .expect("renewed");
    assert!(
        !must(
            "delete",
            store.delete_subscription(5, Some(v1.version)).await
        )
        .await,
        "a record changed since it was read is not removed"
    );
    assert_eq!(
        must("get", store.get_subscription(5).await).await,
        Some(v2.clone())
    );
    assert!(
        must(
            "delete",
            store.delete_subscription(5, Some(v2.version)).await
        )
        .await
    );
    assert!(must("get", store.get_subscription(5).await).await.is_none());
    assert!(
        !must("delete", store.delete_subscription(5, None).await).await,
        "nothing left to remove"
    );
    must(
        "insert",
        store.insert_subscription(subscription(6, "bob")).await,
    )
    .await;
    assert!(must("delete", store.delete_subscription(6, None).await).await);
    assert!(
        must("list", store.list_subscriptions().await)
            .await
            .is_empty()
    );
}
