//! Users, tokens, invites and pages of lists.

use kernelci::models::UserRead;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A page of a list: `{items, total, limit, offset}`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "Page_of_{T}")]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// How many items match, over all pages.
    pub total: u64,
    /// The page size asked for (`null`: none).
    pub limit: Option<u64>,
    /// Items skipped.
    pub offset: u64,
}

/// `POST /user/login` (OAuth2 password form).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct LoginForm {
    /// User name or e-mail.
    pub username: String,
    /// Password.
    pub password: String,
    /// `password` when given.
    #[schemars(regex(pattern = "^password$"))]
    #[serde(default)]
    pub grant_type: String,
    /// Ignored.
    #[serde(default)]
    pub scope: String,
    /// Ignored.
    #[serde(default)]
    pub client_id: String,
    /// Ignored.
    #[serde(default)]
    pub client_secret: String,
}

/// A bearer token.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct AccessToken {
    /// The token.
    pub access_token: String,
    /// `bearer`.
    pub token_type: String,
}

/// `POST /user/update-password` (form).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct UpdatePasswordForm {
    /// User name or e-mail.
    pub username: String,
    /// The current password.
    pub password: String,
    /// The new password.
    pub new_password: String,
}

/// `POST /user/register` (disabled).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Register {
    /// E-mail.
    #[schemars(email)]
    pub email: String,
    /// Password.
    pub password: String,
    /// User name.
    pub username: String,
    /// Flags and groups.
    #[serde(flatten)]
    pub flags: UserFlags,
}

/// The flags and groups of a user, as written (`register`, `PATCH`; the flags are the
/// admin's to change).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
pub struct UserFlags {
    /// Active.
    #[serde(default)]
    pub is_active: bool,
    /// Admin.
    #[serde(default)]
    pub is_superuser: bool,
    /// Verified.
    #[serde(default)]
    pub is_verified: bool,
    /// Group names.
    #[serde(default)]
    pub groups: Groups,
}

/// Group names (each once).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[schemars(extend("uniqueItems" = true))]
pub struct Groups(pub Vec<String>);

/// `POST /user/invite`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Invite {
    /// User name.
    pub username: String,
    /// E-mail.
    #[schemars(email)]
    pub email: String,
    /// Group names.
    #[serde(default)]
    pub groups: Groups,
    /// Admin.
    #[serde(default)]
    pub is_superuser: bool,
    /// Send the accept-invite link by e-mail (default true).
    #[serde(default = "yes")]
    pub send_email: bool,
    /// Answer the invite token and URL.
    #[serde(default)]
    pub return_token: bool,
    /// Invite again an existing, not yet verified user.
    #[serde(default)]
    pub resend_if_exists: bool,
}

/// The answer of `POST /user/invite`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InviteAnswer {
    /// The invited user.
    pub user: UserRead,
    /// Whether the e-mail went out.
    pub email_sent: bool,
    /// The server's public address.
    pub public_base_url: String,
    /// The accept-invite page.
    pub accept_invite_url: String,
    /// The link with the token (`return_token`).
    pub invite_url: Option<String>,
    /// The invite token (`return_token`).
    pub token: Option<String>,
}

/// `GET /user/invite/url`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct InviteUrls {
    /// The server's public address.
    pub public_base_url: String,
    /// The accept-invite page.
    pub accept_invite_url: String,
}

/// A token and a new password (`/user/accept-invite`, `/user/reset-password`).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TokenPassword {
    /// The invite or reset token.
    pub token: String,
    /// The new password.
    pub password: String,
}

/// `POST /user/forgot-password`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct ForgotPassword {
    /// The account's e-mail.
    #[schemars(email)]
    pub email: String,
}

/// `POST /user/tokens` (the body may be empty).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TokenRequest {
    /// A name (default `api-token`).
    #[serde(default)]
    pub name: String,
    /// Lifetime in seconds (default: never expires).
    #[schemars(range(min = 1))]
    pub expires_in: Option<u64>,
}

/// A named API token.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ApiToken {
    /// The token.
    pub access_token: String,
    /// `bearer`.
    pub token_type: String,
    /// Its id (to revoke it).
    pub jti: String,
    /// Its name.
    pub name: String,
    /// When it expires, if ever.
    pub expires: Option<kernelci::models::Timestamp>,
}

/// `PATCH /user/me`, `PATCH /user/{id}`: the fields to change.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct UserPatch {
    /// New password.
    #[serde(default)]
    pub password: String,
    /// New e-mail.
    #[schemars(email)]
    #[serde(default)]
    pub email: String,
    /// New user name.
    #[serde(default)]
    pub username: String,
    /// Flags and groups.
    #[serde(flatten)]
    pub flags: UserFlags,
}

/// `POST /user-groups`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct GroupCreate {
    /// The group's name.
    pub name: String,
}

fn yes() -> bool {
    true
}
