//! The conformance suite every [`EventBus`] implementation runs.
//!
//! ```no_run
//! # async fn f() {
//! let bus = kernelci::events::LocalBus::new();
//! kernelci::testsuite::bus::run(&bus).await;
//! # }
//! ```
//!
//! Each check uses fresh channel and list names, so the suite can run against a shared backend.
//! The checks panic with a message naming the broken promise.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::events::{EventBus, Wakeup, Wakeups, uuid4};

/// How long a check waits for something that should arrive.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Runs every check against `bus`.
pub async fn run<B: EventBus + Clone + 'static>(bus: &B) {
    wakeups_reach_subscribers(bus).await;
    wakeups_are_filtered_by_channel(bus).await;
    wakeups_keep_order(bus).await;
    every_subscriber_is_woken(bus).await;
    dropped_receivers_do_not_disturb_others(bus).await;
    lists_are_fifo(bus).await;
    pop_times_out_empty(bus).await;
    pop_waits_for_a_push(bus).await;
    each_item_is_popped_once(bus).await;
    cancelled_pop_loses_nothing(bus).await;
    bus.ping().await.expect("ping");
}

/// A unique name for a channel or list.
pub fn unique(what: &str) -> String {
    format!("suite-{what}-{}", &uuid4()[..8])
}

/// The next wake-up that is not [`Wakeup::Missed`], within [`PATIENCE`].
pub async fn next_wakeup(wakeups: &mut Wakeups) -> Wakeup {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match wakeups.recv_timeout(left).await {
            Ok(Some(Wakeup::Missed)) => continue,
            Ok(Some(wakeup)) => return wakeup,
            Ok(None) => panic!("no wake-up within {PATIENCE:?}"),
            Err(err) => panic!("wake-up receiver failed: {err}"),
        }
    }
}

/// A notify and a publish after `subscribe` reach the receiver, with channel and content.
pub async fn wakeups_reach_subscribers<B: EventBus>(bus: &B) {
    let channel = unique("reach");
    let mut wakeups = bus.subscribe(&[&channel]).await.expect("subscribe");
    bus.notify(&channel, 41).await.expect("notify");
    bus.publish(&channel, r#"{"data": "x"}"#)
        .await
        .expect("publish");
    match next_wakeup(&mut wakeups).await {
        Wakeup::Event {
            channel: c,
            sequence_id,
        } => {
            assert_eq!(&*c, channel);
            assert_eq!(sequence_id, 41);
        }
        other => panic!("expected an event wake-up, got {other:?}"),
    }
    match next_wakeup(&mut wakeups).await {
        Wakeup::Message {
            channel: c,
            payload,
        } => {
            assert_eq!(&*c, channel);
            assert_eq!(&*payload, r#"{"data": "x"}"#);
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

/// A receiver only sees its own channels, and one receiver can listen to several.
pub async fn wakeups_are_filtered_by_channel<B: EventBus>(bus: &B) {
    let (a, b, other) = (unique("a"), unique("b"), unique("other"));
    let mut wakeups = bus.subscribe(&[&a, &b]).await.expect("subscribe");
    assert_eq!(wakeups.channels().count(), 2);
    bus.notify(&other, 1).await.expect("notify");
    bus.notify(&b, 2).await.expect("notify");
    bus.notify(&a, 3).await.expect("notify");
    let first = next_wakeup(&mut wakeups).await;
    assert_eq!(first.channel(), Some(b.as_str()), "{first:?}");
    let second = next_wakeup(&mut wakeups).await;
    assert_eq!(second.channel(), Some(a.as_str()), "{second:?}");
}

/// Wake-ups from one sender on one channel arrive in order.
pub async fn wakeups_keep_order<B: EventBus>(bus: &B) {
    let channel = unique("order");
    let mut wakeups = bus.subscribe(&[&channel]).await.expect("subscribe");
    for seq in 1..=200 {
        bus.notify(&channel, seq).await.expect("notify");
    }
    for expected in 1..=200 {
        match next_wakeup(&mut wakeups).await {
            Wakeup::Event { sequence_id, .. } => assert_eq!(sequence_id, expected),
            other => panic!("expected event {expected}, got {other:?}"),
        }
    }
}

/// Every receiver of a channel gets each wake-up.
pub async fn every_subscriber_is_woken<B: EventBus>(bus: &B) {
    let channel = unique("fanout");
    let mut receivers = Vec::new();
    for _ in 0..20 {
        receivers.push(bus.subscribe(&[&channel]).await.expect("subscribe"));
    }
    bus.notify(&channel, 7).await.expect("notify");
    for wakeups in &mut receivers {
        assert!(matches!(
            next_wakeup(wakeups).await,
            Wakeup::Event { sequence_id: 7, .. }
        ));
    }
}

/// Dropping a receiver does not disturb the others on the same channel.
pub async fn dropped_receivers_do_not_disturb_others<B: EventBus>(bus: &B) {
    let channel = unique("drop");
    let dropped = bus.subscribe(&[&channel]).await.expect("subscribe");
    let mut kept = bus.subscribe(&[&channel]).await.expect("subscribe");
    drop(dropped);
    bus.notify(&channel, 5).await.expect("notify");
    assert!(matches!(
        next_wakeup(&mut kept).await,
        Wakeup::Event { sequence_id: 5, .. }
    ));
}

/// Items come out of a list in the order they went in.
pub async fn lists_are_fifo<B: EventBus>(bus: &B) {
    let list = unique("fifo");
    for i in 0..10 {
        bus.push(&list, &format!("item-{i}")).await.expect("push");
    }
    for i in 0..10 {
        let item = bus.pop(&list, PATIENCE).await.expect("pop");
        assert_eq!(item.as_deref(), Some(format!("item-{i}").as_str()));
    }
    assert_eq!(bus.pop(&list, Duration::ZERO).await.expect("pop"), None);
}

/// `pop` on an empty list returns `None` after about its timeout, not much earlier or later.
pub async fn pop_times_out_empty<B: EventBus>(bus: &B) {
    let list = unique("empty");
    let start = Instant::now();
    let item = bus
        .pop(&list, Duration::from_millis(300))
        .await
        .expect("pop");
    let took = start.elapsed();
    assert_eq!(item, None);
    assert!(
        took >= Duration::from_millis(250),
        "pop returned after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "pop returned after {took:?}");
}

/// A waiting `pop` gets an item pushed while it waits.
pub async fn pop_waits_for_a_push<B: EventBus + Clone + 'static>(bus: &B) {
    let list = unique("wait");
    let popper = {
        let (bus, list) = (bus.clone(), list.clone());
        tokio::spawn(async move { bus.pop(&list, PATIENCE).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    bus.push(&list, "late").await.expect("push");
    let item = popper.await.expect("join").expect("pop");
    assert_eq!(item.as_deref(), Some("late"));
}

/// With many concurrent poppers, every item is popped exactly once.
pub async fn each_item_is_popped_once<B: EventBus + Clone + 'static>(bus: &B) {
    let list = unique("once");
    let items = 200;
    let mut poppers = Vec::new();
    for _ in 0..8 {
        let (bus, list) = (bus.clone(), list.clone());
        poppers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = bus
                .pop(&list, Duration::from_millis(500))
                .await
                .expect("pop")
            {
                got.push(item);
            }
            got
        }));
    }
    for i in 0..items {
        bus.push(&list, &i.to_string()).await.expect("push");
    }
    let mut seen = HashSet::new();
    for popper in poppers {
        for item in popper.await.expect("join") {
            assert!(seen.insert(item.clone()), "item {item} popped twice");
        }
    }
    assert_eq!(seen.len(), items, "some items were never popped");
}

/// A `pop` cancelled while it waits does not swallow the next item.
pub async fn cancelled_pop_loses_nothing<B: EventBus>(bus: &B) {
    let list = unique("cancel");
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        bus.pop(&list, Duration::from_secs(2)),
    )
    .await;
    assert!(cancelled.is_err(), "pop on an empty list returned early");
    bus.push(&list, "kept").await.expect("push");
    let item = bus.pop(&list, PATIENCE).await.expect("pop");
    assert_eq!(item.as_deref(), Some("kept"));
}

/// `count` receivers, each subscribed on its own task, all get one notification.
/// Returns how long the delivery to all of them took.
pub async fn many_subscribers<B: EventBus + Clone + 'static>(bus: &B, count: usize) -> Duration {
    let channel = unique("many");
    let mut receivers = Vec::with_capacity(count);
    for _ in 0..count {
        receivers.push(bus.subscribe(&[&channel]).await.expect("subscribe"));
    }
    let mut tasks = Vec::with_capacity(count);
    for mut wakeups in receivers {
        tasks.push(tokio::spawn(async move {
            let wakeup = next_wakeup(&mut wakeups).await;
            (wakeup, Instant::now())
        }));
    }
    tokio::task::yield_now().await;
    let start = Instant::now();
    bus.notify(&channel, 99).await.expect("notify");
    let mut last = start;
    for task in tasks {
        let (wakeup, at) = task.await.expect("join");
        assert!(
            matches!(
                wakeup,
                Wakeup::Event {
                    sequence_id: 99,
                    ..
                }
            ),
            "{wakeup:?}"
        );
        last = last.max(at);
    }
    last - start
}
