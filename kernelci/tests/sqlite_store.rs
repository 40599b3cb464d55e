//! The `NodeStore` conformance suite on `SqliteStore`, plus SQLite-specific checks.
#![cfg(all(feature = "sqlite", feature = "testsuite"))]

use kernelci::store::SqliteStore;

async fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("kernelci.sqlite3")).expect("open store");
    (store, dir)
}

kernelci::node_store_suite!(fresh());
