//! Catch-up speed of a durable subscriber 100,000 events behind: reading the `SqliteStore`
//! event log in pages of 1,000 from position 0, with and without an owner filter.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kernelci::store::{EventFilter, EventLog, NewEvent, SqliteStore};
use serde_json::json;

const EVENTS: u64 = 100_000;

fn catch_up(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("events.sqlite3")).expect("open");
    rt.block_on(async {
        for batch in 0..EVENTS / 1000 {
            let events = (0..1000)
                .map(|i| NewEvent {
                    channel: "node".into(),
                    owner: Some(if i % 2 == 0 { "alice" } else { "bob" }.into()),
                    data: json!({"op": "updated", "id": format!("{batch}-{i}"), "kind": "test", "state": "done"}),
                    attributes: Default::default(),
                })
                .collect();
            store.append_events(events).await.expect("append");
        }
    });
    let mut g = c.benchmark_group("event_log_catch_up");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS));
    for (name, filter) in [
        (
            "promiscuous_100k",
            EventFilter {
                channel: Some("node".into()),
                owner: None,
            },
        ),
        (
            "owner_filtered_100k",
            EventFilter {
                channel: Some("node".into()),
                owner: Some("alice".into()),
            },
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut pos = 0;
                    let mut n = 0usize;
                    loop {
                        let page = store.events_after(pos, &filter, 1000).await.expect("read");
                        let Some(last) = page.last() else { break };
                        pos = last.sequence_id;
                        n += page.len();
                    }
                    black_box(n)
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, catch_up);
criterion_main!(benches);
