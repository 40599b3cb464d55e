//! The `mock` feature: `mockall` mocks of the store traits, as a user's unit test would use
//! them (code written against `&dyn NodeStore` / `&dyn EventLog`, no database).
#![cfg(feature = "mock")]

use kernelci::ErrorKind;
use kernelci::query::{Filter, Query};
use kernelci::store::{
    Entity, EventLog, MockEventLog, MockKvStore, MockNodeStore, MockTelemetryStore, MockUserStore,
    NodeStore, StoreError,
};

/// A user's function under test: how many tests failed on a tree.
async fn failed_tests(store: &dyn NodeStore, tree: &str) -> Result<u64, StoreError> {
    let q = Query::parse([
        ("kind", "test"),
        ("result", "fail"),
        ("data.kernel_revision.tree", tree),
    ])?;
    store.count_nodes(&q.filter).await
}

#[tokio::test]
async fn a_mock_node_store_answers_what_the_test_expects() {
    let mut store = MockNodeStore::new();
    store
        .expect_count_nodes()
        .withf(|f: &Filter| {
            f.conditions.len() == 3
                && f.conditions
                    .iter()
                    .any(|c| c.field == "data.kernel_revision.tree")
        })
        .times(1)
        .returning(|_| Ok(7));
    assert_eq!(failed_tests(&store, "mainline").await.expect("count"), 7);
}

#[tokio::test]
async fn a_mock_event_log_can_fail() {
    let mut log = MockEventLog::new();
    log.expect_ack_subscriber()
        .returning(|id, _| Err(StoreError::not_found(Entity::Subscriber, id)));
    let err = log
        .ack_subscriber("scheduler:node", 5)
        .await
        .expect_err("the mock refuses");
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn mocks_of_users_key_values_and_telemetry() {
    let mut users = MockUserStore::new();
    users
        .expect_get_user_by_username()
        .withf(|name: &str| name == "nobody")
        .returning(|_| Ok(None));
    assert!(
        kernelci::store::UserStore::get_user_by_username(&users, "nobody")
            .await
            .expect("lookup")
            .is_none()
    );
    let mut kv = MockKvStore::new();
    kv.expect_kv_get()
        .returning(|ns, key| Ok(Some(format!("{ns}/{key}"))));
    assert_eq!(
        kernelci::store::KvStore::kv_get(&kv, "tokens", "abc")
            .await
            .expect("get")
            .as_deref(),
        Some("tokens/abc")
    );
    let mut telemetry = MockTelemetryStore::new();
    telemetry
        .expect_insert_telemetry()
        .returning(|docs| Ok(docs.len() as u64));
    assert_eq!(
        kernelci::store::TelemetryStore::insert_telemetry(
            &telemetry,
            vec![serde_json::json!({"kind": "job_result"})]
        )
        .await
        .expect("insert"),
        1
    );
}
