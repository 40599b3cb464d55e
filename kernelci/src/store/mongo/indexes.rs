//! Indexes declared in code and reconciled at start-up (api spec §7.1).
//!
//! For each declared index: when an index with the same keys and the same options exists under
//! **any** name, it is reused and nothing is created. Otherwise it is created under its declared
//! name; when that fails with code 85 (IndexOptionsConflict) or 86 (IndexKeySpecsConflict) the
//! index list is read again, and an equivalent index created meanwhile (by another replica) is
//! accepted. Any other outcome fails start-up with the server's message.

use mongodb::Database;
use mongodb::bson::{Bson, Document, doc};

use super::mongo_err;
use crate::store::{StoreError, StoreResult};

/// One declared index.
#[derive(Debug, Clone)]
pub(crate) struct IndexSpec {
    /// Collection.
    pub collection: &'static str,
    /// Name used when creating it.
    pub name: &'static str,
    /// Keys, in order.
    pub keys: Document,
    /// Unique.
    pub unique: bool,
    /// TTL in seconds.
    pub expire_after: Option<i64>,
    /// Collation (compared on the keys given here).
    pub collation: Option<Document>,
}

impl IndexSpec {
    fn new(collection: &'static str, name: &'static str, keys: Document) -> IndexSpec {
        IndexSpec {
            collection,
            name,
            keys,
            unique: false,
            expire_after: None,
            collation: None,
        }
    }

    fn unique(mut self) -> IndexSpec {
        self.unique = true;
        self
    }
}

/// Every index the store relies on. `event_ttl_secs` is the event history retention.
pub(crate) fn declared(event_ttl_secs: i64) -> Vec<IndexSpec> {
    let mut v = Vec::new();
    for field in [
        "kind",
        "state",
        "parent",
        "name",
        "created",
        "owner",
        "group",
        "data.kernel_revision.commit",
        "data.kernel_revision.tree",
        "data.kernel_revision.branch",
    ] {
        let name: &'static str = match field {
            "kind" => "kind_1",
            "state" => "state_1",
            "parent" => "parent_1",
            "name" => "name_1",
            "created" => "created_1",
            "owner" => "owner_1",
            "group" => "group_1",
            "data.kernel_revision.commit" => "data.kernel_revision.commit_1",
            "data.kernel_revision.tree" => "data.kernel_revision.tree_1",
            _ => "data.kernel_revision.branch_1",
        };
        v.push(IndexSpec::new("node", name, doc! { field: 1 }));
    }
    v.push(IndexSpec::new(
        "node",
        "state_1_timeout_1",
        doc! { "state": 1, "timeout": 1 },
    ));
    let mut ttl = IndexSpec::new("eventhistory", "timestamp_1", doc! { "timestamp": 1 });
    ttl.expire_after = Some(event_ttl_secs);
    v.push(ttl);
    v.push(IndexSpec::new(
        "eventhistory",
        "channel_1_sequence_id_1",
        doc! { "channel": 1, "sequence_id": 1 },
    ));
    v.push(IndexSpec::new("eventhistory", "sequence_id_1", doc! { "sequence_id": 1 }).unique());
    v.push(IndexSpec::new(
        "eventhistory",
        "kind_timestamp",
        doc! { "data.kind": 1, "timestamp": 1 },
    ));
    let mut email = IndexSpec::new("user", "case_insensitive_email_index", doc! { "email": 1 });
    email.unique = true;
    email.collation = Some(doc! { "locale": "en", "strength": 2 });
    v.push(email);
    v.push(IndexSpec::new("user", "username_1", doc! { "username": 1 }).unique());
    v.push(IndexSpec::new("usergroup", "name_1", doc! { "name": 1 }).unique());
    v.push(
        IndexSpec::new(
            "subscriber_state",
            "unique_subscriber_id",
            doc! { "subscriber_id": 1 },
        )
        .unique(),
    );
    v.push(IndexSpec::new(
        "subscriber_state",
        "last_poll_1",
        doc! { "last_poll": 1 },
    ));
    v.push(IndexSpec::new("kv", "namespace_1_key_1", doc! { "namespace": 1, "key": 1 }).unique());
    v
}

fn num(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

fn truthy(b: Option<&Bson>) -> bool {
    match b {
        Some(Bson::Boolean(v)) => *v,
        Some(other) => num(Some(other)).is_some_and(|n| n != 0),
        None => false,
    }
}

fn same_keys(a: &Document, b: &Document) -> bool {
    a.len() == b.len()
        && a.iter().zip(b.iter()).all(|((ka, va), (kb, vb))| {
            ka == kb
                && match (num(Some(va)), num(Some(vb))) {
                    (Some(x), Some(y)) => x == y,
                    _ => va == vb,
                }
        })
}

/// Whether an existing index (a `listIndexes` entry) is equivalent to the declared one.
pub(crate) fn equivalent(spec: &IndexSpec, existing: &Document) -> bool {
    let Ok(keys) = existing.get_document("key") else {
        return false;
    };
    if !same_keys(&spec.keys, keys) || truthy(existing.get("unique")) != spec.unique {
        return false;
    }
    if num(existing.get("expireAfterSeconds")) != spec.expire_after {
        return false;
    }
    if truthy(existing.get("sparse"))
        || truthy(existing.get("hidden"))
        || existing.contains_key("partialFilterExpression")
        || existing.contains_key("wildcardProjection")
    {
        return false;
    }
    match (&spec.collation, existing.get_document("collation").ok()) {
        (None, None) => true,
        (None, Some(c)) => c.get_str("locale").is_ok_and(|l| l == "simple"),
        (Some(_), None) => false,
        (Some(want), Some(have)) => {
            want.iter()
                .all(|(k, v)| match (num(Some(v)), num(have.get(k))) {
                    (Some(x), Some(y)) => x == y,
                    _ => have.get(k) == Some(v),
                })
        }
    }
}

fn same_keys_and_collation(spec: &IndexSpec, existing: &Document) -> bool {
    let Ok(keys) = existing.get_document("key") else {
        return false;
    };
    if !same_keys(&spec.keys, keys) {
        return false;
    }
    let have = existing
        .get_document("collation")
        .ok()
        .filter(|c| c.get_str("locale").is_ok_and(|l| l != "simple"));
    match (&spec.collation, have) {
        (None, None) => true,
        (Some(want), Some(have)) => want.iter().all(|(k, v)| {
            have.get(k) == Some(v) || (num(Some(v)).is_some() && num(Some(v)) == num(have.get(k)))
        }),
        _ => false,
    }
}

fn conflict(spec: &IndexSpec, existing: &Document) -> StoreError {
    StoreError::Invalid(format!(
        "index {} on {} conflicts with the existing index {} of other options ({existing}); \
         drop it or change the configuration",
        spec.name,
        spec.collection,
        existing.get_str("name").unwrap_or("?")
    ))
}

async fn list(db: &Database, collection: &str) -> StoreResult<Vec<Document>> {
    match db.run_command(doc! { "listIndexes": collection }).await {
        Ok(reply) => Ok(reply
            .get_document("cursor")
            .ok()
            .and_then(|c| c.get_array("firstBatch").ok())
            .map(|a| a.iter().filter_map(|b| b.as_document().cloned()).collect())
            .unwrap_or_default()),
        Err(e) if code_of(&e) == Some(26) => Ok(Vec::new()),
        Err(e) => Err(mongo_err("list indexes", e)),
    }
}

fn code_of(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

/// Creates what is missing; returns the names of the indexes created.
pub(crate) async fn reconcile(db: &Database, specs: &[IndexSpec]) -> StoreResult<Vec<String>> {
    let mut created = Vec::new();
    for spec in specs {
        let existing = list(db, spec.collection).await?;
        if existing.iter().any(|e| equivalent(spec, e)) {
            continue;
        }
        // Same keys and collation with other options: MongoDB refuses the create with code
        // 85; say so here too (some wire-compatible servers would accept a second index).
        if let Some(clash) = existing.iter().find(|e| same_keys_and_collation(spec, e)) {
            return Err(conflict(spec, clash));
        }
        let mut index = doc! { "key": spec.keys.clone(), "name": spec.name };
        if spec.unique {
            index.insert("unique", true);
        }
        if let Some(ttl) = spec.expire_after {
            index.insert("expireAfterSeconds", ttl);
        }
        if let Some(c) = &spec.collation {
            index.insert("collation", c.clone());
        }
        let cmd = doc! { "createIndexes": spec.collection, "indexes": [index] };
        match db.run_command(cmd).await {
            Ok(_) => created.push(spec.name.to_owned()),
            Err(e) if matches!(code_of(&e), Some(85 | 86)) => {
                let again = list(db, spec.collection).await?;
                if !again.iter().any(|e| equivalent(spec, e)) {
                    return Err(StoreError::Invalid(format!(
                        "index {} on {} conflicts with an existing index of other options: {e}",
                        spec.name, spec.collection
                    )));
                }
            }
            Err(e) => return Err(mongo_err(&format!("create index {}", spec.name), e)),
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equivalence_ignores_names_and_number_types() {
        let specs = declared(604_800);
        let ttl = specs.iter().find(|s| s.name == "timestamp_1").expect("ttl");
        assert!(equivalent(
            ttl,
            &doc! {"v": 2, "key": {"timestamp": 1.0}, "name": "whatever", "expireAfterSeconds": 604_800}
        ));
        assert!(!equivalent(
            ttl,
            &doc! {"key": {"timestamp": 1}, "name": "timestamp_1", "expireAfterSeconds": 86_400}
        ));
        let email = specs
            .iter()
            .find(|s| s.collection == "user" && s.unique && s.collation.is_some())
            .expect("email");
        assert!(equivalent(
            email,
            &doc! {"key": {"email": 1}, "unique": true, "name": "x",
            "collation": {"locale": "en", "caseLevel": false, "strength": 2}}
        ));
        assert!(!equivalent(
            email,
            &doc! {"key": {"email": 1}, "unique": true, "name": "email_1"}
        ));
    }
}
