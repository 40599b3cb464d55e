//! Event bus benchmarks: publish-to-wake-up latency and wake-up throughput, for `LocalBus`
//! and (with `--features redis`, needs `redis-server`) `RedisBus`.
//!
//! `cargo bench --features redis --bench event_bus`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernelci::events::{EventBus, LocalBus, Wakeup, Wakeups};

const BATCH: u64 = 1000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn next_event(wakeups: &mut Wakeups) -> i64 {
    loop {
        match wakeups.recv().await.expect("bus closed") {
            Wakeup::Event { sequence_id, .. } => return sequence_id,
            _ => continue,
        }
    }
}

/// One notify, then wait for its wake-up; repeated `iters` times on one receiver.
async fn latency<B: EventBus>(bus: &B, iters: u64) -> Duration {
    let mut wakeups = bus.subscribe(&["bench"]).await.expect("subscribe");
    let start = Instant::now();
    for seq in 0..iters {
        bus.notify("bench", seq as i64).await.expect("notify");
        next_event(&mut wakeups).await;
    }
    start.elapsed()
}

/// `BATCH` notifies from one task while a receiver takes them, per iteration.
async fn throughput<B: EventBus + Clone + 'static>(bus: &B, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let mut wakeups = bus.subscribe(&["bench-tp"]).await.expect("subscribe");
        let start = Instant::now();
        let receiver = tokio::spawn(async move {
            let mut got = 0;
            while got < BATCH {
                match wakeups.recv().await.expect("bus closed") {
                    Wakeup::Event { .. } | Wakeup::Missed => got += 1,
                    Wakeup::Message { .. } => {}
                }
            }
        });
        for seq in 0..BATCH {
            bus.notify("bench-tp", seq as i64).await.expect("notify");
        }
        receiver.await.expect("receiver");
        total += start.elapsed();
    }
    total
}

fn bench_bus<B: EventBus + Clone + 'static>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    bus: &B,
) {
    let mut group = c.benchmark_group(format!("event_bus/{name}"));
    group.bench_function("notify_to_wakeup_latency", |b| {
        b.to_async(rt).iter_custom(|iters| latency(bus, iters))
    });
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(20);
    group.bench_function("notify_throughput_1000", |b| {
        b.to_async(rt).iter_custom(|iters| throughput(bus, iters))
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt = runtime();
    let local = LocalBus::new();
    bench_bus(c, &rt, "local", &local);
    #[cfg(feature = "redis")]
    {
        let Some(server) = kernelci::testsuite::redis::RedisServer::start() else {
            return;
        };
        let _guard = rt.enter();
        let bus = kernelci::events::RedisBus::new(&server.url()).expect("redis bus");
        bench_bus(c, &rt, "redis", &bus);
    }
}

criterion_group!(event_bus, benches);
criterion_main!(event_bus);
