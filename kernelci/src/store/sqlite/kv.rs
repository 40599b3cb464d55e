//! [`KvStore`] on SQLite: table `kv` keyed by (namespace, key).

use async_trait::async_trait;
use rusqlite::OptionalExtension;

use super::{SqliteStore, db_err};
use crate::store::{KvStore, StoreResult};

#[async_trait]
impl KvStore for SqliteStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.read_point(move |c| {
            c.prepare_cached("SELECT value FROM kv WHERE namespace = ?1 AND key = ?2")
                .and_then(|mut s| s.query_row([ns, k], |r| r.get(0)).optional())
                .map_err(db_err)
        })
        .await
    }

    async fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        let (ns, k, v) = (namespace.to_owned(), key.to_owned(), value.to_owned());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                [ns, k, v],
            )
            .map_err(db_err)?;
            Ok(())
        })
        .await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        let (ns, k) = (namespace.to_owned(), key.to_owned());
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM kv WHERE namespace = ?1 AND key = ?2", [ns, k])
                .map_err(db_err)?
                > 0)
        })
        .await
    }
}
