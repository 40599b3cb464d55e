//! [`UserStore`] on SQLite: tables `user` (username unique, e-mail unique without case) and
//! `usergroup` (name unique), each row the JSON document plus its unique columns.

use async_trait::async_trait;
use rusqlite::{Connection, params};

use super::{SqliteStore, db_err, load_all, one_doc};
use crate::models::{ObjectId, User, UserGroup};
use crate::query::Filter;
use crate::store::common::{self, find_groups_in, find_users_in};
use crate::store::{Conflict, Entity, StoreError, StoreResult, UserStore};

#[async_trait]
impl UserStore for SqliteStore {
    async fn insert_user(&self, user: User) -> StoreResult<User> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&user).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "INSERT INTO user (id, username, email, doc) VALUES (?1, ?2, ?3, ?4)",
                params![user.id.to_hex(), user.username, user.email, doc],
            )
            .map_err(|e| user_conflict(e, &user))?;
            Ok(user)
        })
        .await
    }

    async fn get_user(&self, id: ObjectId) -> StoreResult<Option<User>> {
        self.read_point(move |c| user_where(c, "id = ?1", &id.to_hex()))
            .await
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let u = username.to_owned();
        self.read_point(move |c| user_where(c, "username = ?1", &u))
            .await
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let e = email.to_owned();
        self.read(move |c| user_where(c, "email = ?1 COLLATE NOCASE", &e))
            .await
    }

    async fn update_user(&self, user: User) -> StoreResult<User> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&user).map_err(|e| StoreError::Internal(e.to_string()))?;
            let n = tx
                .execute(
                    "UPDATE user SET username = ?2, email = ?3, doc = ?4 WHERE id = ?1",
                    params![user.id.to_hex(), user.username, user.email, doc],
                )
                .map_err(|e| user_conflict(e, &user))?;
            if n == 0 {
                return Err(StoreError::not_found(Entity::User, user.id.to_hex()));
            }
            Ok(user)
        })
        .await
    }

    async fn delete_user(&self, id: ObjectId) -> StoreResult<bool> {
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM user WHERE id = ?1", [id.to_hex()])
                .map_err(db_err)?
                > 0)
        })
        .await
    }

    async fn find_users(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<User>, u64)> {
        let filter = filter.clone();
        self.read(move |c| {
            let all: Vec<User> = load_all(c, "SELECT doc FROM user ORDER BY id", "user")?;
            Ok(find_users_in(all, &filter, offset, limit))
        })
        .await
    }

    async fn insert_group(&self, group: UserGroup) -> StoreResult<UserGroup> {
        self.write(move |tx| {
            let doc =
                serde_json::to_string(&group).map_err(|e| StoreError::Internal(e.to_string()))?;
            tx.execute(
                "INSERT INTO usergroup (id, name, doc) VALUES (?1, ?2, ?3)",
                params![group.id.to_hex(), group.name, doc],
            )
            .map_err(|e| match db_err(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(Conflict::GroupName(group.name.clone()))
                }
                other => other,
            })?;
            Ok(group)
        })
        .await
    }

    async fn get_group(&self, id: ObjectId) -> StoreResult<Option<UserGroup>> {
        self.read(move |c| {
            one_doc(
                c,
                "SELECT doc FROM usergroup WHERE id = ?1",
                &id.to_hex(),
                "group",
            )
        })
        .await
    }

    async fn get_group_by_name(&self, name: &str) -> StoreResult<Option<UserGroup>> {
        let n = name.to_owned();
        self.read_point(move |c| {
            one_doc(c, "SELECT doc FROM usergroup WHERE name = ?1", &n, "group")
        })
        .await
    }

    async fn find_groups(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<UserGroup>, u64)> {
        let filter = filter.clone();
        self.read(move |c| {
            let all: Vec<UserGroup> =
                load_all(c, "SELECT doc FROM usergroup ORDER BY id", "group")?;
            Ok(find_groups_in(all, &filter, offset, limit))
        })
        .await
    }

    async fn delete_group(&self, id: ObjectId) -> StoreResult<bool> {
        self.write(move |tx| {
            Ok(tx
                .execute("DELETE FROM usergroup WHERE id = ?1", [id.to_hex()])
                .map_err(db_err)?
                > 0)
        })
        .await
    }
}

/// A user write's error: a broken unique constraint names its column (`user.username` or
/// `user.email`).
fn user_conflict(e: rusqlite::Error, user: &User) -> StoreError {
    match db_err(e) {
        StoreError::Conflict(Conflict::Other(msg)) => common::user_conflict(user, &msg),
        other => other,
    }
}

fn user_where(c: &Connection, clause: &str, value: &str) -> StoreResult<Option<User>> {
    one_doc(
        c,
        &format!("SELECT doc FROM user WHERE {clause}"),
        value,
        "user",
    )
}
