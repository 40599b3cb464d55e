//! [`KvStore`] on MongoDB: collection `kv` (`{namespace, key, value}`; upstream keeps these in
//! Redis).

use async_trait::async_trait;
use mongodb::bson::doc;

use super::{MongoStore, mongo_err};
use crate::store::{KvStore, StoreResult};

#[async_trait]
impl KvStore for MongoStore {
    async fn kv_get(&self, namespace: &str, key: &str) -> StoreResult<Option<String>> {
        let d = self
            .read(async {
                self.inner
                    .kv
                    .find_one(doc! { "namespace": namespace, "key": key })
                    .await
                    .map_err(|e| mongo_err("kv get", e))
            })
            .await?;
        Ok(d.and_then(|d| d.get_str("value").ok().map(str::to_owned)))
    }

    async fn kv_set(&self, namespace: &str, key: &str, value: &str) -> StoreResult<()> {
        self.inner
            .kv
            .update_one(
                doc! { "namespace": namespace, "key": key },
                doc! { "$set": { "value": value } },
            )
            .upsert(true)
            .await
            .map_err(|e| mongo_err("kv set", e))?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> StoreResult<bool> {
        let r = self
            .inner
            .kv
            .delete_one(doc! { "namespace": namespace, "key": key })
            .await
            .map_err(|e| mongo_err("kv delete", e))?;
        Ok(r.deleted_count > 0)
    }
}
