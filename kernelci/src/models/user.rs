//! Users and user groups.

use serde::{Deserialize, Serialize};

use super::ObjectId;

/// A user group. Membership is a copy of the group inside the user record, as upstream keeps it.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UserGroup {
    /// The group's id.
    #[serde(alias = "_id")]
    pub id: ObjectId,
    /// The unique group name, e.g. `node:edit:any` or `runtime:lava-collabora:node-editor`.
    pub name: String,
}

impl UserGroup {
    /// A new group with a fresh id.
    pub fn new(name: impl Into<String>) -> UserGroup {
        UserGroup {
            id: ObjectId::new(),
            name: name.into(),
        }
    }
}

/// A stored user, password hash included. Never send this to a client: use [`UserRead`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user's id.
    #[serde(alias = "_id")]
    pub id: ObjectId,
    /// E-mail address, unique case-insensitively.
    pub email: String,
    /// Password hash: argon2 (`$argon2id$...`) or bcrypt (`$2b$...`).
    pub hashed_password: String,
    /// Whether the user may log in.
    #[serde(default = "yes")]
    pub is_active: bool,
    /// Whether the user is an admin.
    #[serde(default)]
    pub is_superuser: bool,
    /// Whether the user accepted their invite.
    #[serde(default)]
    pub is_verified: bool,
    /// Unique login name.
    pub username: String,
    /// Group memberships.
    #[serde(default)]
    pub groups: Vec<UserGroup>,
}

fn yes() -> bool {
    true
}

impl User {
    /// Whether the user belongs to the group `name`.
    pub fn in_group(&self, name: &str) -> bool {
        self.groups.iter().any(|g| g.name == name)
    }

    /// The public view.
    pub fn read(&self) -> UserRead {
        UserRead {
            id: self.id,
            email: self.email.clone(),
            is_active: self.is_active,
            is_superuser: self.is_superuser,
            is_verified: self.is_verified,
            username: self.username.clone(),
            groups: self.groups.clone(),
        }
    }
}

/// The public shape of a user, keys in upstream's order.
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRead {
    /// The user's id.
    #[serde(alias = "_id")]
    pub id: ObjectId,
    /// E-mail address.
    pub email: String,
    /// Whether the user may log in.
    pub is_active: bool,
    /// Whether the user is an admin.
    pub is_superuser: bool,
    /// Whether the user accepted their invite.
    pub is_verified: bool,
    /// Login name.
    pub username: String,
    /// Group memberships.
    pub groups: Vec<UserGroup>,
}
