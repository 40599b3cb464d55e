//! The [`TelemetryStore`] suite: inserts, pages and filters, and the aggregate compared with
//! the reference counting ([`TelemetryGroup::add`]) over the same documents.

use serde_json::{Value, json};

use super::{filter, must};
use crate::models::Timestamp;
use crate::query::Filter;
use crate::store::{TelemetryGroup, TelemetryGrouper, TelemetryQuery, TelemetryStore};

/// `count` telemetry documents over a few runtimes, device types, kinds and results, one
/// minute apart from 2024-01-01T00:00:00, some with odd values (a number where text is usual,
/// a missing device type).
pub fn sample_telemetry(count: usize) -> Vec<Value> {
    let base = Timestamp::parse("2024-01-01T00:00:00").unwrap_or_else(|_| Timestamp::now());
    (0..count)
        .map(|i| {
            let kind = ["job_result", "test_result", "runtime_error"][i % 3];
            let runtime = ["lava-a", "lava-b", "k8s"][(i + i / 5) % 3];
            let device_type = [json!("qemu"), json!("rpi"), Value::Null][i % 4 % 3].clone();
            let result = [
                json!("pass"),
                json!("fail"),
                json!("incomplete"),
                json!("skip"),
            ]
            .get(i % 5)
            .cloned()
            .unwrap_or(Value::Null);
            let mut doc = json!({
                "ts": base.plus_secs(60 * i as i64).to_string(),
                "kind": kind,
                "runtime": runtime,
                "device_type": device_type,
                "result": result,
                "is_infra_error": i % 7 == 0,
                "error_type": if i % 6 == 0 { json!("Infrastructure") } else { Value::Null },
                "retry": i % 2,
                "extra": {"n": i},
            });
            if i % 11 == 0 {
                doc["device_type"] = json!(11);
            }
            if i % 13 == 0 {
                doc.as_object_mut().map(|d| d.remove("device_type"));
            }
            doc
        })
        .collect()
}

/// Documents come back with an id, oldest first; filters, the `ts` range, offset and limit
/// select what the reference evaluator selects, and the total counts every match.
pub async fn telemetry_pages_and_filters<S: TelemetryStore>(store: &S) {
    let docs = sample_telemetry(60);
    assert_eq!(must("insert", store.insert_telemetry(docs).await).await, 60);
    assert_eq!(
        must("insert none", store.insert_telemetry(Vec::new()).await).await,
        0
    );
    let (all, total) = must(
        "all",
        store
            .find_telemetry(&TelemetryQuery::default(), 0, None)
            .await,
    )
    .await;
    assert_eq!((all.len(), total), (60, 60));
    assert!(all.iter().all(|d| d["id"].is_string()), "ids assigned");
    let ts: Vec<&str> = all.iter().filter_map(|d| d["ts"].as_str()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    let since = Timestamp::parse("2024-01-01T00:10:00").expect("ts");
    let until = Timestamp::parse("2024-01-01T00:40:00").expect("ts");
    for pairs in [
        &[("runtime", "lava-a")][..],
        &[("kind", "job_result"), ("result", "fail")],
        &[("device_type", "null")],
        &[("is_infra_error", "true")],
        // A regular expression on the datetime field: MongoDB cannot run it, so a residual.
        &[("ts__re", "^2024-01-01T00:[0-2]")],
        &[("extra.n__lt", "30"), ("runtime__ne", "k8s")],
    ] {
        let f = crate::query::Query::parse(pairs.iter().copied())
            .unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
            .filter;
        let want: Vec<&Value> = all
            .iter()
            .filter(|d| f.matches(d))
            .filter(|d| {
                d["ts"]
                    .as_str()
                    .and_then(|t| Timestamp::parse(t).ok())
                    .is_some_and(|t| t >= since && t <= until)
            })
            .collect();
        let (page, total) = must(
            "page",
            store
                .find_telemetry(
                    &TelemetryQuery {
                        filter: f.clone(),
                        since: Some(since),
                        until: Some(until),
                    },
                    2,
                    Some(3),
                )
                .await,
        )
        .await;
        assert_eq!(total as usize, want.len(), "total of {pairs:?}");
        let want_page: Vec<&Value> = want.iter().skip(2).take(3).copied().collect();
        assert_eq!(
            page.iter().collect::<Vec<_>>(),
            want_page,
            "page of {pairs:?}"
        );
    }
    let (beyond, total) = must(
        "beyond",
        store
            .find_telemetry(
                &TelemetryQuery {
                    filter: filter([("runtime", "k8s")]),
                    ..TelemetryQuery::default()
                },
                1000,
                Some(5),
            )
            .await,
    )
    .await;
    assert!(beyond.is_empty());
    assert!(total > 0, "the total does not depend on the page");
}

/// The aggregate of every grouping gives the groups and counts that counting each selected
/// document gives.
pub async fn telemetry_stats_match_reference<S: TelemetryStore>(store: &S) {
    must("insert", store.insert_telemetry(sample_telemetry(90)).await).await;
    let (all, _) = must(
        "all",
        store
            .find_telemetry(&TelemetryQuery::default(), 0, None)
            .await,
    )
    .await;
    let since = Timestamp::parse("2024-01-01T00:05:00").expect("ts");
    let cases: Vec<(Vec<&str>, Filter, Option<Timestamp>)> = vec![
        (vec!["runtime"], Filter::all(), None),
        (vec!["runtime", "device_type"], Filter::all(), None),
        (
            vec!["device_type"],
            filter([("kind", "job_result")]),
            Some(since),
        ),
        (
            vec!["kind", "runtime"],
            filter([("runtime", "lava-a")]),
            None,
        ),
        (
            vec!["error_type"],
            filter([("ts__re", "^2024-01-01T00:[1-3]")]),
            None,
        ),
        (vec!["runtime"], filter([("runtime", "nowhere")]), None),
    ];
    for (group_by, f, since) in cases {
        let query = TelemetryQuery {
            filter: f.clone(),
            since,
            until: None,
        };
        let group_by: Vec<String> = group_by.iter().map(|s| (*s).to_owned()).collect();
        let mut reference = TelemetryGrouper::default();
        for d in all.iter().filter(|d| f.matches(d)).filter(|d| {
            since.is_none_or(|s| {
                d["ts"]
                    .as_str()
                    .and_then(|t| Timestamp::parse(t).ok())
                    .is_some_and(|t| t >= s)
            })
        }) {
            reference.add(d, &group_by);
        }
        let mut want = reference.finish();
        let mut got = must("stats", store.telemetry_stats(&query, &group_by).await).await;
        let key = |g: &TelemetryGroup| serde_json::to_string(&g.keys).unwrap_or_default();
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want, "groups by {group_by:?}");
    }
    let err = store
        .telemetry_stats(&TelemetryQuery::default(), &["runtime; DROP".into()])
        .await
        .expect_err("a field name that is not a plain name is refused");
    assert_eq!(err.kind(), crate::ErrorKind::Invalid);
}
