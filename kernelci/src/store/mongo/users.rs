//! [`UserStore`] on MongoDB: collections `user` and `usergroup` in upstream's shapes.

use async_trait::async_trait;
use mongodb::bson::{Document, doc};

use super::convert::{self, PLAIN};
use super::{MongoStore, encode, mongo_err, write_error_code};
use crate::models::{ObjectId, User, UserGroup};
use crate::query::Filter;
use crate::store::common::{self, find_groups_in, find_users_in};
use crate::store::{Conflict, Entity, StoreError, StoreResult, UserStore};

#[async_trait]
impl UserStore for MongoStore {
    async fn insert_user(&self, user: User) -> StoreResult<User> {
        self.check_user_unique(&user).await?;
        let d = encode(&PLAIN, &user)?;
        self.inner
            .users
            .insert_one(d)
            .await
            .map_err(|e| user_conflict("insert user", e, &user))?;
        Ok(user)
    }

    async fn get_user(&self, id: ObjectId) -> StoreResult<Option<User>> {
        self.user_where(doc! { "_id": convert::oid(id) }).await
    }

    async fn get_user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        self.user_where(doc! { "username": username }).await
    }

    async fn get_user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        self.user_where(email_filter(email)).await
    }

    async fn update_user(&self, user: User) -> StoreResult<User> {
        self.check_user_unique(&user).await?;
        let d = encode(&PLAIN, &user)?;
        let r = self
            .inner
            .users
            .replace_one(doc! { "_id": convert::oid(user.id) }, d)
            .await
            .map_err(|e| user_conflict("update user", e, &user))?;
        if r.matched_count == 0 {
            return Err(StoreError::not_found(Entity::User, user.id.to_hex()));
        }
        Ok(user)
    }

    async fn delete_user(&self, id: ObjectId) -> StoreResult<bool> {
        let r = self
            .inner
            .users
            .delete_one(doc! { "_id": convert::oid(id) })
            .await
            .map_err(|e| mongo_err("delete user", e))?;
        Ok(r.deleted_count > 0)
    }

    async fn find_users(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<User>, u64)> {
        // Users are few; the filter runs on the public shape, as the reference store does.
        let all: Vec<User> = self.load_all(&self.inner.users, "user").await?;
        Ok(find_users_in(all, filter, offset, limit))
    }

    async fn insert_group(&self, group: UserGroup) -> StoreResult<UserGroup> {
        let d = encode(&PLAIN, &group)?;
        self.inner
            .groups
            .insert_one(d)
            .await
            .map_err(|e| match mongo_err("insert group", e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(Conflict::GroupName(group.name.clone()))
                }
                other => other,
            })?;
        Ok(group)
    }

    async fn get_group(&self, id: ObjectId) -> StoreResult<Option<UserGroup>> {
        self.one(
            &self.inner.groups,
            doc! { "_id": convert::oid(id) },
            "group",
        )
        .await
    }

    async fn get_group_by_name(&self, name: &str) -> StoreResult<Option<UserGroup>> {
        self.one(&self.inner.groups, doc! { "name": name }, "group")
            .await
    }

    async fn find_groups(
        &self,
        filter: &Filter,
        offset: u64,
        limit: Option<u64>,
    ) -> StoreResult<(Vec<UserGroup>, u64)> {
        let all: Vec<UserGroup> = self.load_all(&self.inner.groups, "group").await?;
        Ok(find_groups_in(all, filter, offset, limit))
    }

    async fn delete_group(&self, id: ObjectId) -> StoreResult<bool> {
        let r = self
            .inner
            .groups
            .delete_one(doc! { "_id": convert::oid(id) })
            .await
            .map_err(|e| mongo_err("delete group", e))?;
        Ok(r.deleted_count > 0)
    }
}

fn email_filter(email: &str) -> Document {
    // Case-insensitive without relying on collation support in `find` (wire-compatible
    // servers lack it); the unique index has the collation.
    doc! { "email": { "$regex": format!("^{}$", escape_regex(email)), "$options": "i" } }
}

/// A user write's driver error: a duplicate key names its index (`username_1` or the e-mail
/// index).
fn user_conflict(what: &str, e: mongodb::error::Error, user: &User) -> StoreError {
    if matches!(write_error_code(&e), Some(11000 | 11001)) {
        return common::user_conflict(user, &e.to_string());
    }
    mongo_err(what, e)
}

fn escape_regex(s: &str) -> String {
    regex::escape(s)
}

impl MongoStore {
    async fn user_where(&self, filter: Document) -> StoreResult<Option<User>> {
        self.one(&self.inner.users, filter, "user").await
    }

    /// Checks username and case-insensitive e-mail uniqueness before a user write (the unique
    /// indexes enforce it on genuine MongoDB; this gives the same answer where a
    /// wire-compatible server ignores the index collation).
    async fn check_user_unique(&self, user: &User) -> StoreResult<()> {
        let me = convert::oid(user.id);
        let clash = doc! {
            "_id": { "$ne": me },
            "$or": [ { "username": user.username.clone() }, email_filter(&user.email) ],
        };
        let other: Option<User> = self.user_where(clash).await?;
        match other {
            Some(o) if o.username == user.username => Err(StoreError::Conflict(
                Conflict::Username(user.username.clone()),
            )),
            Some(_) => Err(StoreError::Conflict(Conflict::Email(user.email.clone()))),
            None => Ok(()),
        }
    }
}
