//! The store conformance suites (every store trait) on `SqliteStore`.
#![cfg(all(feature = "sqlite", feature = "testsuite"))]

use kernelci::store::SqliteStore;

async fn fresh() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path().join("kernelci.sqlite3")).expect("open store");
    (store, dir)
}

kernelci::store_suite!(fresh());
