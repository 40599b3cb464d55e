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
