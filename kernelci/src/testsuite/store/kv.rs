//! The [`KvStore`] suite.

use super::must;
use crate::store::KvStore;

/// Key/value: set, overwrite, get, delete, namespaces apart.
pub async fn key_values<S: KvStore>(store: &S) {
    assert_eq!(must("get", store.kv_get("ns", "k").await).await, None);
    must("set", store.kv_set("ns", "k", "v1").await).await;
    must("set", store.kv_set("ns", "k", "v2").await).await;
    must("set", store.kv_set("other", "k", "x").await).await;
    assert_eq!(
        must("get", store.kv_get("ns", "k").await).await.as_deref(),
        Some("v2")
    );
    assert!(must("delete", store.kv_delete("ns", "k").await).await);
    assert!(!must("delete", store.kv_delete("ns", "k").await).await);
    assert_eq!(
        must("get", store.kv_get("other", "k").await)
            .await
            .as_deref(),
        Some("x")
    );
}
