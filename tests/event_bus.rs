//! The event bus conformance suite against every implementation, and the Redis failure tests
//! (feature `redis`, against a real `redis-server`).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use kernelci::events::LocalBus;
use kernelci::testsuite::bus;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_bus_conforms() {
    bus::run(&LocalBus::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_bus_wakes_1000_subscribers() {
    let took = bus::many_subscribers(&LocalBus::new(), 1000).await;
    eprintln!("LocalBus: 1000 subscribers woken in {took:?}");
}

#[tokio::test]
async fn local_bus_reports_lag_as_missed() {
    use kernelci::events::{EventBus, Wakeup};
    let bus = LocalBus::with_capacity(4);
    let mut wakeups = bus.subscribe(&["node"]).await.unwrap();
    for seq in 0..10 {
        bus.notify("node", seq).await.unwrap();
    }
    assert_eq!(wakeups.recv().await.unwrap(), Wakeup::Missed);
    // After the gap, the newest wake-ups still come.
    assert!(matches!(
        wakeups.recv().await.unwrap(),
        Wakeup::Event { sequence_id: 6, .. }
    ));
}

#[cfg(feature = "redis")]
mod redis {
    use std::time::{Duration, Instant};

    use kernelci::ErrorKind;
    use kernelci::events::{EventBus, RedisBus, RedisBusConfig, Wakeup};
    use kernelci::testsuite::bus;
    use kernelci::testsuite::redis::RedisServer;

    fn bus_for(server: &RedisServer) -> RedisBus {
        let mut config = RedisBusConfig::new(server.url());
        config.op_timeout = Duration::from_millis(500);
        config.reconnect_max = Duration::from_millis(200);
        RedisBus::with_config(config).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_bus_conforms() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let bus = bus_for(&server);
        bus::run(&bus).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_bus_with_prefix_conforms() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let mut config = RedisBusConfig::new(server.url());
        config.channel_prefix = "kernelci-rs:".into();
        bus::run(&RedisBus::with_config(config).unwrap()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_bus_wakes_1000_subscribers() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let bus = bus_for(&server);
        let took = bus::many_subscribers(&bus, 1000).await;
        eprintln!("RedisBus: 1000 subscribers woken in {took:?}");
    }

    /// The pub/sub connection answers the keep-alive PING (every 5 s) while subscribed, so it
    /// is not dropped and re-made (which reported every wake-up as possibly missed).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_bus_keeps_its_subscription_past_the_keepalive() {
        let Some(server) = RedisServer::start() else {
            return;
        };
        let bus = bus_for(&server);
        let mut wakeups = bus.subscribe(&["node"]).await.unwrap();
        assert!(bus.wait_connected(Duration::from_secs(5)).await);
        bus.notify("node", 1).await.unwrap();
        assert!(matches!(
            bus::next_wakeup(&mut wakeups).await,
            Wakeup::Event { sequence_id: 1, .. }
        ));
        // Two keep-alive PINGs while subscribed.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(bus.is_connected());
        let queued = wakeups.recv_timeout(Duration::from_millis(300)).await;
        assert!(
            matches!(queued, Ok(None)),
            "the pub/sub connection was re-made: {queued:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_bus_survives_a_redis_restart() {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        let bus = bus_for(&server);
        let mut wakeups = bus.subscribe(&["node"]).await.unwrap();
        assert!(bus.wait_connected(Duration::from_secs(5)).await);
        // Wake-ups flow.
        for seq in 1..=20 {
            bus.notify("node", seq).await.unwrap();
        }
        for seq in 1..=20 {
            match bus::next_wakeup(&mut wakeups).await {
                Wakeup::Event { sequence_id, .. } => assert_eq!(sequence_id, seq),
                other => panic!("{other:?}"),
            }
        }

        // A pop leaves a pooled connection behind, which the restart will break.
        bus.push("jobs", "before").await.unwrap();
        assert_eq!(
            bus.pop("jobs", Duration::from_secs(1))
                .await
                .unwrap()
                .as_deref(),
            Some("before")
        );

        server.kill();
        // Every operation reports Unavailable, quickly.
        let start = Instant::now();
        let err = bus.notify("node", 21).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        for err in [
            bus.publish("node", "x").await.unwrap_err(),
            bus.push("jobs", "x").await.unwrap_err(),
            bus.pop("jobs", Duration::from_secs(1)).await.unwrap_err(),
            bus.ping().await.unwrap_err(),
        ] {
            assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?} to fail",
            start.elapsed()
        );
        // A subscription made while Redis is down is served after it comes back.
        let mut late = bus.subscribe(&["retry"]).await.unwrap();

        server.restart().unwrap();
        assert!(bus.wait_connected(Duration::from_secs(10)).await);
        // The reconnection is announced, so listeners re-read the log.
        let mut saw_missed = false;
        while let Some(w) = wakeups.try_recv().unwrap() {
            saw_missed |= w == Wakeup::Missed;
        }
        saw_missed |=
            wakeups.recv_timeout(Duration::from_secs(1)).await.unwrap() == Some(Wakeup::Missed);
        assert!(saw_missed, "no Missed after the reconnection");

        // The same bus and receivers deliver again (the command connection may need a retry).
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match bus.notify("node", 22).await {
                Ok(()) => break,
                Err(err) if Instant::now() < deadline => {
                    assert_eq!(err.kind(), ErrorKind::Unavailable);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(err) => panic!("Redis is back but notify still fails: {err}"),
            }
        }
        assert!(matches!(
            bus::next_wakeup(&mut wakeups).await,
            Wakeup::Event {
                sequence_id: 22,
                ..
            }
        ));
        bus.notify("retry", 23).await.unwrap();
        assert!(matches!(
            bus::next_wakeup(&mut late).await,
            Wakeup::Event {
                sequence_id: 23,
                ..
            }
        ));
        bus.push("jobs", "after").await.unwrap();
        assert_eq!(
            bus.pop("jobs", Duration::from_secs(2))
                .await
                .unwrap()
                .as_deref(),
            Some("after")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_bus_starts_while_redis_is_down() {
        let Some(mut server) = RedisServer::start() else {
            return;
        };
        server.kill();
        let bus = bus_for(&server);
        assert_eq!(bus.ping().await.unwrap_err().kind(), ErrorKind::Unavailable);
        let mut wakeups = bus.subscribe(&["node"]).await.unwrap();
        server.restart().unwrap();
        assert!(bus.wait_connected(Duration::from_secs(10)).await);
        let deadline = Instant::now() + Duration::from_secs(10);
        while bus.notify("node", 1).await.is_err() {
            assert!(Instant::now() < deadline, "Redis is back but notify fails");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(matches!(
            bus::next_wakeup(&mut wakeups).await,
            Wakeup::Event { sequence_id: 1, .. }
        ));
    }
}
