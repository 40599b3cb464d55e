//! Wake-up latency under a steady load: 1,000 notifications per second for 5 s on one channel,
//! one receiver, p50/p99/max from notify call to wake-up. `LocalBus` always; `RedisBus` with
//! `--features redis` (starts its own `redis-server`).
//!
//! `cargo run --release --features redis --example event_latency [-- <rate> <seconds>]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use kernelci::events::{EventBus, LocalBus, Wakeup};

async fn measure<B: EventBus + Clone + 'static>(name: &str, bus: B, rate: u64, secs: u64) {
    let total = (rate * secs) as usize;
    let origin = Instant::now();
    let sent: Arc<Vec<std::sync::atomic::AtomicU64>> =
        Arc::new((0..total).map(|_| Default::default()).collect());
    let mut wakeups = bus.subscribe(&["latency"]).await.expect("subscribe");
    let receiver = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total);
            let mut missed = 0;
            while latencies.len() + missed < total {
                match wakeups.recv_timeout(Duration::from_secs(5)).await {
                    Ok(Some(Wakeup::Event { sequence_id, .. })) => {
                        let now = origin.elapsed().as_nanos() as u64;
                        let at =
                            sent[sequence_id as usize].load(std::sync::atomic::Ordering::Acquire);
                        latencies.push(Duration::from_nanos(now.saturating_sub(at)));
                    }
                    Ok(Some(_)) => missed += 1,
                    Ok(None) | Err(_) => break,
                }
            }
            latencies
        })
    };
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate as u32);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..total {
        ticker.tick().await;
        sent[seq].store(
            origin.elapsed().as_nanos() as u64,
            std::sync::atomic::Ordering::Release,
        );
        bus.notify("latency", seq as i64).await.expect("notify");
    }
    let mut latencies = receiver.await.expect("receiver");
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{name:>6}: {rate}/s for {secs}s, received {}/{total}: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    measure("local", LocalBus::new(), rate, secs).await;
    #[cfg(feature = "redis")]
    {
        let Some(server) = kernelci::testsuite::redis::RedisServer::start() else {
            return;
        };
        let bus = kernelci::events::RedisBus::connect(&server.url())
            .await
            .expect("redis bus");
        bus.wait_connected(Duration::from_secs(5)).await;
        measure("redis", bus, rate, secs).await;
    }
}
