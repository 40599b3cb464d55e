//! SQLite-specific checks: index use of the hot columns, cached counts through every write.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rusqlite::{Connection, params_from_iter};
use serde_json::Value;

use super::{SqliteStore, sql};
use crate::models::{Node, ObjectId};
use crate::query::Filter;
use crate::query::Query;
use crate::store::{EventMode, FindOptions, NodeStore};

fn plan(store: &SqliteStore, pairs: &[(&str, &str)]) -> String {
    let q = Query::parse(pairs.iter().copied()).expect("query");
    let w = sql::where_clause(&q.filter, "doc", &|f| store.inner.hot(f)).expect("sql");
    let conn = Connection::open(store.path()).expect("open");
    let mut stmt = conn
        .prepare(&format!(
            "EXPLAIN QUERY PLAN SELECT doc FROM node WHERE {} ORDER BY id LIMIT 50",
            w.sql
        ))
        .expect("prepare");
    let rows = stmt
        .query_map(params_from_iter(w.params.iter()), |r| r.get::<_, String>(3))
        .expect("plan");
    rows.map(|r| r.expect("row"))
        .collect::<Vec<_>>()
        .join(" | ")
}

#[test]
fn hot_fields_use_their_index() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("t.sqlite3")).expect("open");
    for (pairs, index) in [
        (&[("kind", "test")][..], "node_kind"),
        (&[("parent", "null")][..], "node_parent"),
        (
            &[("data.kernel_revision.tree", "mainline")][..],
            "node_kr_tree",
        ),
        (&[("name__in", "a,b")][..], "node_name"),
        (
            &[("state", "done"), ("timeout__lt", "2024-01-01")][..],
            "node_",
        ),
    ] {
        let p = plan(&store, pairs);
        assert!(p.contains(index), "{pairs:?}: {p}");
    }
}
/// Every count, cached or not, equals the reference evaluator's over all nodes, through
/// every kind of node write and a write by another connection.
#[cfg(feature = "testsuite")]
#[tokio::test]
async fn cached_counts_follow_writes() {
    use crate::store::UpdateRule;
    fn sample_nodes(n: usize) -> Vec<Node> {
        crate::testsuite::store::sample_nodes(n)
            .into_iter()
            .map(|mut x| {
                x.id = Some(ObjectId::new());
                x
            })
            .collect()
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.sqlite3");
    let store = SqliteStore::open(&path).expect("open");
    store.set_count_cache(Some(Duration::ZERO));
    store
        .insert_nodes(sample_nodes(300), EventMode::Silent)
        .await
        .expect("fill");
    let queries: &[&[(&str, &str)]] = &[
        &[("kind", "test")],
        &[("kind", "test"), ("state", "done")],
        &[("data.kernel_revision.tree", "mainline")],
        &[("data.kernel_revision.tree__in", "next,stable")],
        &[("state__ne", "done"), ("name__re", "node-1")],
    ];
    let filters: Vec<Filter> = queries
        .iter()
        .map(|q| Query::parse(q.iter().copied()).expect("query").filter)
        .collect();
    async fn check(store: &SqliteStore, filters: &[Filter], step: &str) {
        let all = store
            .find_nodes(&Filter::all(), &FindOptions::default())
            .await
            .expect("all")
            .items;
        for f in filters {
            let want = all.iter().filter(|n| f.matches_node(n)).count() as u64;
            for _ in 0..2 {
                let got = store.count_nodes(f).await.expect("count");
                assert_eq!(got, want, "{step}: {f:?}");
            }
        }
    }
    check(&store, &filters, "filled").await;
    let hits = store.inner.counts.hits.load(Ordering::Relaxed);
    assert!(hits > 0, "the second counts came from the cache");
    store
        .insert_nodes(sample_nodes(40), EventMode::Publish)
        .await
        .expect("insert");
    check(&store, &filters, "inserted").await;
    let page = store
        .find_nodes(&filters[0], &FindOptions::default())
        .await
        .expect("find");
    let mut n = page.items[0].clone();
    n.kind = "kbuild".into();
    store
        .update_node(
            n,
            UpdateRule {
                check_transition: false,
                ..UpdateRule::PUT
            },
        )
        .await
        .expect("update");
    check(&store, &filters, "updated").await;
    let ids: Vec<ObjectId> = page
        .items
        .iter()
        .skip(1)
        .take(5)
        .filter_map(|n| n.id)
        .collect();
    store
        .set_field(&ids, "state", Value::String("done".into()))
        .await
        .expect("set_field");
    check(&store, &filters, "set_field").await;
    let mut tree = sample_nodes(3);
    tree[0].id = page.items.get(7).and_then(|n| n.id);
    store
        .write_hierarchy(tree, EventMode::Silent)
        .await
        .expect("hierarchy");
    check(&store, &filters, "hierarchy").await;
    let gone = Query::parse([("name", "node-3")]).expect("q").filter;
    assert!(store.delete_nodes(&gone).await.expect("delete") > 0);
    check(&store, &filters, "deleted").await;
    // Another connection (as another process would) writes the same file.
    let other = SqliteStore::open(&path).expect("second open");
    other
        .insert_nodes(sample_nodes(25), EventMode::Silent)
        .await
        .expect("other insert");
    check(&store, &filters, "written by another connection").await;
    store
        .insert_nodes(sample_nodes(5), EventMode::Silent)
        .await
        .expect("insert after");
    check(&store, &filters, "after the other writer").await;
}

/// Nodes with fresh ids, for the tuning tests.
fn fresh_nodes(n: usize) -> Vec<Node> {
    (0..n)
        .map(|i| {
            let mut x = Node::new(crate::models::NodeKind::Test, format!("t-{i}"));
            x.id = Some(ObjectId::new());
            x
        })
        .collect()
}

/// The size of the main database file (not the WAL).
fn main_file_len(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// With the background checkpointer, written pages reach the database file without the
/// writer checkpointing (its automatic checkpoint is far above what these writes fill).
#[tokio::test]
async fn background_checkpointer_copies_the_wal() {
    use super::SqliteTuning;
    for background in [true, false] {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.sqlite3");
        let tuning = SqliteTuning {
            checkpoint_bytes: if background { 64 * 1024 } else { 0 },
            checkpoint_every: Duration::from_millis(100),
            ..SqliteTuning::default()
        };
        let store = SqliteStore::open_tuned(&path, tuning).expect("open");
        let before = main_file_len(&path);
        store
            .insert_nodes(fresh_nodes(2000), EventMode::Silent)
            .await
            .expect("insert");
        // Waiting longer for the copy than for its absence: a slow machine must not fail the
        // first case, and the second needs only a few checkpointer periods.
        let wait = Duration::from_secs(if background { 10 } else { 2 });
        let deadline = std::time::Instant::now() + wait;
        while main_file_len(&path) == before && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if background {
            assert!(
                main_file_len(&path) > before,
                "the checkpointer copied the WAL into the file"
            );
        } else {
            assert_eq!(
                main_file_len(&path),
                before,
                "without it nothing but the writer checkpoints (not yet at this size)"
            );
        }
    }
}

/// The tuning reaches the connections: page cache and mapping of writer and readers.
#[tokio::test]
async fn tuning_sets_cache_and_mapping() {
    use super::SqliteTuning;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.sqlite3");
    let tuning = SqliteTuning::with_budget(16, 8);
    assert_eq!(tuning.writer_cache_kib, 8 * 1024);
    assert_eq!(tuning.reader_cache_kib, 1024);
    assert_eq!(tuning.mmap_bytes, 8 * 1024 * 1024);
    let store = SqliteStore::open_tuned(&path, tuning).expect("open");
    let reader = store.inner.open_reader().expect("reader");
    let cache: i64 = reader
        .pragma_query_value(None, "cache_size", |r| r.get(0))
        .expect("cache_size");
    let mmap: i64 = reader
        .pragma_query_value(None, "mmap_size", |r| r.get(0))
        .expect("mmap_size");
    assert_eq!((cache, mmap), (-1024, 8 * 1024 * 1024));
    let default = SqliteTuning::default();
    assert_eq!(default.mmap_bytes, 0, "no mapping by default");
    assert_eq!(default, SqliteTuning::with_budget(64, 0));
}
