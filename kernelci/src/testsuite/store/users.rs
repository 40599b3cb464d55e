//! The [`UserStore`] suite: users and groups, their unique keys, lookups and filters.

use super::{filter, must};
use crate::ErrorKind;
use crate::models::{ObjectId, User, UserGroup};
use crate::query::Filter;
use crate::store::{Conflict, Entity, StoreError, UserStore};

fn user(name: &str, email: &str) -> User {
    User {
        id: ObjectId::new(),
        email: email.into(),
        hashed_password: "$argon2id$v=19$m=65536,t=3,p=4$x$y".into(),
        is_active: true,
        is_superuser: false,
        is_verified: true,
        username: name.into(),
        groups: vec![],
    }
}

/// Users and groups: unique names and e-mails (case-insensitive), lookups, filters, deletes.
pub async fn users_and_groups<S: UserStore>(store: &S) {
    let admins = must("group", store.insert_group(UserGroup::new("admins")).await).await;
    let err = store
        .insert_group(UserGroup::new("admins"))
        .await
        .expect_err("duplicate group");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        must("group by name", store.get_group_by_name("admins").await).await,
        Some(admins.clone())
    );
    assert_eq!(
        must("group", store.get_group(admins.id).await).await,
        Some(admins.clone())
    );
    let mut alice = user("alice", "Alice@Example.org");
    alice.groups.push(admins.clone());
    alice.is_superuser = true;
    must("user", store.insert_user(alice.clone()).await).await;
    let bob = must(
        "user",
        store.insert_user(user("bob", "bob@example.org")).await,
    )
    .await;
    let err = store
        .insert_user(user("alice", "other@example.org"))
        .await
        .expect_err("username taken");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let err = store
        .insert_user(user("carol", "alice@EXAMPLE.org"))
        .await
        .expect_err("email taken");
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert_eq!(
        must(
            "by email",
            store.get_user_by_email("ALICE@example.ORG").await
        )
        .await
        .map(|u| u.id),
        Some(alice.id)
    );
    assert_eq!(
        must("by name", store.get_user_by_username("bob").await).await,
        Some(bob.clone())
    );
    let (admins_users, total) = must(
        "find",
        store
            .find_users(&filter([("groups.name", "admins")]), 0, None)
            .await,
    )
    .await;
    assert_eq!((admins_users.len(), total), (1, 1));
    let (supers, _) = must(
        "find",
        store
            .find_users(&filter([("is_superuser", "true")]), 0, None)
            .await,
    )
    .await;
    assert_eq!(
        supers
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        vec!["alice"]
    );
    let (page, total) = must("find", store.find_users(&Filter::all(), 1, Some(5)).await).await;
    assert_eq!((page.len(), total), (1, 2));
    let mut bob2 = bob.clone();
    bob2.email = "bobby@example.org".into();
    must("update", store.update_user(bob2.clone()).await).await;
    assert_eq!(must("get", store.get_user(bob.id).await).await, Some(bob2));
    let mut clash = bob.clone();
    clash.username = "alice".into();
    assert!(store.update_user(clash).await.is_err());
    assert!(must("delete", store.delete_user(bob.id).await).await);
    assert!(!must("delete", store.delete_user(bob.id).await).await);
    let (groups, total) = must(
        "groups",
        store
            .find_groups(&filter([("name", "admins")]), 0, None)
            .await,
    )
    .await;
    assert_eq!((groups.len(), total), (1, 1));
    assert!(must("delete group", store.delete_group(admins.id).await).await);
    assert!(
        must("get group", store.get_group(admins.id).await)
            .await
            .is_none()
    );
}

/// A clash says which unique key it is (username, e-mail, group name), and an update of a
/// user that does not exist is `NotFound`.
pub async fn unique_keys_are_named<S: UserStore>(store: &S) {
    let alice = must(
        "user",
        store.insert_user(user("alice", "alice@example.org")).await,
    )
    .await;
    let err = store
        .insert_user(user("alice", "other@example.org"))
        .await
        .expect_err("username taken");
    assert!(
        matches!(&err, StoreError::Conflict(Conflict::Username(u)) if u == "alice"),
        "{err:?}"
    );
    let err = store
        .insert_user(user("carol", "ALICE@example.org"))
        .await
        .expect_err("e-mail taken");
    assert!(
        matches!(&err, StoreError::Conflict(Conflict::Email(e)) if e == "ALICE@example.org"),
        "{err:?}"
    );
    let bob = must(
        "user",
        store.insert_user(user("bob", "bob@example.org")).await,
    )
    .await;
    let mut clash = bob.clone();
    clash.email = "Alice@Example.org".into();
    let err = store.update_user(clash).await.expect_err("e-mail taken");
    assert!(
        matches!(&err, StoreError::Conflict(Conflict::Email(_))),
        "{err:?}"
    );
    must("group", store.insert_group(UserGroup::new("lab")).await).await;
    let err = store
        .insert_group(UserGroup::new("lab"))
        .await
        .expect_err("group name taken");
    assert!(
        matches!(&err, StoreError::Conflict(Conflict::GroupName(g)) if g == "lab"),
        "{err:?}"
    );
    let mut ghost = alice.clone();
    ghost.id = ObjectId::new();
    ghost.username = "ghost".into();
    ghost.email = "ghost@example.org".into();
    let err = store.update_user(ghost).await.expect_err("no such user");
    assert!(
        matches!(
            &err,
            StoreError::NotFound {
                what: Entity::User,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::NotFound);
}
