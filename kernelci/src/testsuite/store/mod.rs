//! The conformance suites of the store traits, one per trait, and the fixtures they share.
//!
//! | suite (module) | macro | needs |
//! |---|---|---|
//! | [`nodes`] | [`node_store_suite!`](crate::node_store_suite) | `NodeStore` |
//! | [`users`] | [`user_store_suite!`](crate::user_store_suite) | `UserStore` |
//! | [`kv`] | [`kv_store_suite!`](crate::kv_store_suite) | `KvStore` |
//! | [`events`] | [`event_log_suite!`](crate::event_log_suite) | `EventLog` |
//! | [`node_events`] | [`node_event_suite!`](crate::node_event_suite) | `NodeStore + EventLog` |
//! | [`telemetry`] | [`telemetry_store_suite!`](crate::telemetry_store_suite) | `TelemetryStore` |
//! | [`results`] | [`results_store_suite!`](crate::results_store_suite) | `ResultsStore + NodeStore` |
//!
//! [`store_suite!`](crate::store_suite) runs all seven on a store that implements every trait.
//! Each macro takes an async expression that makes a fresh, empty store and a guard that keeps
//! its resources alive, and writes one `#[tokio::test]` per check in a module named after the
//! trait (`node_store::node_round_trip`, ...):
//!
//! ```text
//! kernelci::store_suite!(async {
//!     let dir = tempfile::tempdir().expect("temporary directory");
//!     let store = kernelci::store::SqliteStore::open(dir.path().join("db.sqlite3")).expect("open");
//!     (store, dir)
//! });
//! ```
//!
//! With `option <expression>`, the expression returns `Option<(store, guard)>` and a `None`
//! (a test peer missing, already reported) skips. A third party runs the macros of the traits
//! it implements; `examples/memory_node_store.rs` runs the `NodeStore` suite on a store that
//! implements nothing else.
//!
//! The query checks compare the store's answers with the in-memory evaluator
//! ([`Filter::matches`]) on the same documents, so every backend answers every query the same.

pub mod events;
pub mod kv;
pub mod node_events;
pub mod nodes;
pub mod results;
pub mod telemetry;
pub mod users;

use serde_json::json;

use crate::models::sample::sample_revision;
use crate::models::{Node, NodeKind, ObjectId};
use crate::query::{Filter, Query};
use crate::store::StoreError;

#[doc(hidden)]
#[macro_export]
macro_rules! __store_suite_tests {
    ($module:ident, $suite:ident, option $make:expr; $($name:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some((store, _guard)) = $make.await else { return };
                    $crate::testsuite::store::$suite::$name(&store).await;
                }
            )*
        }
    };
    ($module:ident, $suite:ident, $make:expr; $($name:ident),* $(,)?) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _guard) = $make.await;
                    $crate::testsuite::store::$suite::$name(&store).await;
                }
            )*
        }
    };
}

/// Runs the [`NodeStore`](crate::store::NodeStore) suite ([`nodes`]) in a module
/// `node_store`; see the [module documentation](self).
#[macro_export]
macro_rules! node_store_suite {
    (@run $($make:tt)+) => {
        $crate::__store_suite_tests!(node_store, nodes, $($make)+;
            node_round_trip, duplicate_id_conflicts, queries_match_reference,
            plain_queries_match_reference, pagination_and_cursors, update_rules_and_events,
            patch_rules, hierarchy_writes_one_event, set_field_and_delete, concurrent_writers);
    };
    (option $make:expr) => {
        $crate::node_store_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::node_store_suite!(@run $make);
    };
}

/// Runs the [`UserStore`](crate::store::UserStore) suite ([`users`]) in a module
/// `user_store`.
#[macro_export]
macro_rules! user_store_suite {
    (@run $($make:tt)+) => {
        $crate::__store_suite_tests!(user_store, users, $($make)+;
            users_and_groups, unique_keys_are_named);
    };
    (option $make:expr) => {
        $crate::user_store_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::user_store_suite!(@run $make);
    };
}

/// Runs the [`KvStore`](crate::store::KvStore) suite ([`kv`]) in a module `kv_store`.
#[macro_export]
macro_rules! kv_store_suite {
    (@run $($make:tt)+) => {
        $crate::__store_suite_tests!(kv_store, kv, $($make)+; key_values);
    };
    (option $make:expr) => {
        $crate::kv_store_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::kv_store_suite!(@run $make);
    };
}

/// Runs the [`EventLog`](crate::store::EventLog) suite ([`events`]) in a module `event_log`.
#[macro_export]
macro_rules! event_log_suite {
    (@run $($make:tt)+) => {
        $crate::__store_suite_tests!(event_log, events, $($make)+;
            event_log, counters, subscribers, subscription_records,
            subscription_compare_and_set, subscription_conditional_delete);
    };
    (option $make:expr) => {
        $crate::event_log_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::event_log_suite!(@run $make);
    };
}

/// Runs the suite of node writes and the event log together ([`node_events`]) in a module
/// `node_events`: a store that implements both serves the events of its node writes.
#[macro_export]
macro_rules! node_event_suite {
    (@run $($make:tt)+) => {
        $crate::__store_suite_tests!(node_events, node_events, $($make)+;
            node_writes_are_in_the_log, failed_writes_append_nothing,
            concurrent_writers_are_sequenced);
    };
    (option $make:expr) => {
        $crate::node_event_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::node_event_suite!(@run $make);
    };
}

/// Runs the [`TelemetryStore`](crate::store::TelemetryStore) suite ([`telemetry`]) in a
/// module `telemetry_store`.
#[macro_export]
macro_rules! telemetry_store_suite {
    (@run $($make:tt)+) => {
        $crate::__store_suite_tests!(telemetry_store, telemetry, $($make)+;
            telemetry_pages_and_filters, telemetry_stats_match_reference);
    };
    (option $make:expr) => {
        $crate::telemetry_store_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::telemetry_store_suite!(@run $make);
    };
}

/// Runs the [`ResultsStore`](crate::store::ResultsStore) suite ([`results`]) in a module
/// `results_store` (the store must be a `NodeStore` too, to hold the nodes counted).
#[macro_export]
macro_rules! results_store_suite {
    (@run $($make:tt)+) => {
        $crate::__store_suite_tests!(results_store, results, $($make)+;
            counts_match_reference, find_results_failures_first, node_results_match_reference,
            latest_checkouts_per_branch);
    };
    (option $make:expr) => {
        $crate::results_store_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::results_store_suite!(@run $make);
    };
}

/// Runs every store suite on a store that implements every store trait
/// ([`Store`](crate::store::Store)).
#[macro_export]
macro_rules! store_suite {
    (@run $($make:tt)+) => {
        $crate::node_store_suite!($($make)+);
        $crate::user_store_suite!($($make)+);
        $crate::kv_store_suite!($($make)+);
        $crate::event_log_suite!($($make)+);
        $crate::node_event_suite!($($make)+);
        $crate::telemetry_store_suite!($($make)+);
        $crate::results_store_suite!($($make)+);
    };
    (option $make:expr) => {
        $crate::store_suite!(@run option $make);
    };
    ($make:expr) => {
        $crate::store_suite!(@run $make);
    };
}

/// A checkout node as the trigger makes it.
pub fn checkout(tree: &str, branch: &str, commit: &str) -> Node {
    let mut n = Node::new(NodeKind::Checkout, "checkout");
    n.owner = Some("admin".into());
    n.data = json!({"kernel_revision": sample_revision(tree, branch, commit)})
        .as_object()
        .cloned();
    n
}

pub use crate::models::sample::sample_nodes;

/// Query strings the query test runs; each is compared with the reference evaluator.
pub const SAMPLE_QUERIES: &[&[(&str, &str)]] = &[
    &[],
    &[("kind", "test")],
    &[("kind__ne", "test")],
    &[("kind__in", "checkout,kbuild")],
    &[("kind__nin", "checkout,kbuild")],
    &[("state", "done"), ("result", "fail")],
    &[("result", "null")],
    &[("result__ne", "null")],
    &[("parent", "null")],
    &[("parent__ne", "null")],
    &[("group", "g1")],
    &[("group__in", "g1,null")],
    &[("name__re", "node-1[0-3]")],
    &[("name__gt", "node-5")],
    &[("name__lte", "node-12")],
    &[("owner", "alice"), ("state__ne", "done")],
    &[
        ("created__gt", "2024-01-01T12:00:00"),
        ("created__lt", "2024-01-02"),
    ],
    &[("timeout__lte", "2024-01-01T05:00:00Z")],
    &[("retry_counter__gt", "1")],
    &[("retry_counter", "0")],
    &[("retry_counter__in", "1,3")],
    &[("processed_by_kcidb_bridge", "true")],
    &[("data.kernel_revision.tree", "mainline")],
    &[("data.kernel_revision.tree__ne", "mainline")],
    &[("data.kernel_revision.tree__in", "next,stable")],
    &[("data.kernel_revision.tree__nin", "next,stable")],
    &[("data.kernel_revision.tree", "null")],
    &[("data.kernel_revision.tree__re", "^main")],
    &[("data.kernel_revision.tree__int", "42")],
    &[("data.kernel_revision.tree__gt", "m")],
    &[("data.kernel_revision.branch", "main"), ("kind", "kbuild")],
    &[(
        "data.kernel_revision.commit",
        "0000000000000000000000000000000000000005",
    )],
    &[("data.kernel_revision.version.version__gte", "6")],
    &[("data.arch", "null")],
    &[("data.arch__in", "arm64,riscv")],
    &[("data.misc.count__lt", "5")],
    &[("data.misc.flag", "true")],
    &[("data.misc.flag__ne", "true")],
    &[("path", "p1")],
    &[("path__ne", "p1")],
    &[("path__in", "p0,p2")],
    &[("path__re", "^p[12]$")],
    &[("missing.field", "null")],
    &[("missing.field__ne", "x")],
];

/// Inserts `nodes` in one write (the test fails if it does not succeed).
pub(crate) async fn insert<S: crate::store::NodeStore>(
    store: &S,
    nodes: Vec<Node>,
    mode: crate::store::EventMode,
) -> crate::store::NodeWrite {
    must("insert", store.insert_nodes(nodes, mode).await).await
}

/// Asserts that `events` is the one `created` event of the checkout node `id` (made by
/// [`checkout`], owned by `admin`).
pub(crate) fn assert_created_event(events: &[crate::store::StoredEvent], id: ObjectId) {
    assert_eq!(events.len(), 1, "one event per node published");
    assert!(events[0].sequence_id > 0, "events are numbered from 1");
    assert_eq!(events[0].channel, "node");
    assert_eq!(events[0].owner.as_deref(), Some("admin"));
    assert_eq!(events[0].data["op"], "created");
    assert_eq!(events[0].data["id"], id.to_hex());
    assert_eq!(events[0].data.as_object().map(|m| m.len()), Some(11));
}

/// The filter of a query string (test input: a bad one panics).
pub(crate) fn filter<const N: usize>(pairs: [(&str, &str); N]) -> Filter {
    match Query::parse(pairs) {
        Ok(q) => q.filter,
        Err(e) => panic!("bad test query {pairs:?}: {e}"),
    }
}

/// The value of a store call that must succeed (else the test fails, naming `what`).
pub(crate) async fn must<T>(what: &str, r: Result<T, StoreError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e}"),
    }
}
