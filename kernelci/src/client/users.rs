//! The user, group, login and token routes of [`ApiClient`].

use reqwest::Method;
use serde_json::{Value, json};

use super::{ApiClient, ClientError, ClientResult, Page};
use crate::models::{ObjectId, UserGroup, UserRead};

impl ApiClient {
    // ----- users and auth -----

    /// `POST /user/login`: returns a token (not stored in this client; see [`ApiClient::with_token`]).
    pub async fn login(&self, username: &str, password: &str) -> ClientResult<String> {
        let v: Value = self
            .form(
                "user/login",
                &[("username", username), ("password", password)],
            )
            .await?;
        v.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Decode {
                url: self.url("user/login"),
                message: "no access_token".into(),
            })
    }

    /// `POST /user/logout` (revokes the token on our server).
    pub async fn logout(&self) -> ClientResult<()> {
        self.send(Method::POST, "user/logout", &[], None, None)
            .await
            .map(|_| ())
    }

    /// `GET /whoami`.
    pub async fn whoami(&self) -> ClientResult<UserRead> {
        self.call(Method::GET, "whoami", &[], None).await
    }

    /// `GET /user/{id}`.
    pub async fn get_user(&self, id: ObjectId) -> ClientResult<UserRead> {
        self.call(Method::GET, &format!("user/{id}"), &[], None)
            .await
    }

    /// `GET /users` (one page).
    pub async fn find_users(&self, query: &[(&str, &str)]) -> ClientResult<Page<UserRead>> {
        self.call(Method::GET, "users", query, None).await
    }

    /// `PATCH /user/me`.
    pub async fn update_me(&self, fields: &Value) -> ClientResult<UserRead> {
        self.call(Method::PATCH, "user/me", &[], Some(fields)).await
    }

    /// `PATCH /user/{id}` (admin).
    pub async fn update_user(&self, id: ObjectId, fields: &Value) -> ClientResult<UserRead> {
        self.call(Method::PATCH, &format!("user/{id}"), &[], Some(fields))
            .await
    }

    /// `DELETE /user/{id}` (admin).
    pub async fn delete_user(&self, id: ObjectId) -> ClientResult<()> {
        self.send(Method::DELETE, &format!("user/{id}"), &[], None, None)
            .await
            .map(|_| ())
    }

    /// `POST /user/invite` (admin): returns the whole invite response.
    pub async fn invite(
        &self,
        username: &str,
        email: &str,
        groups: &[&str],
        superuser: bool,
        return_token: bool,
    ) -> ClientResult<Value> {
        let body = json!({"username": username, "email": email, "groups": groups, "is_superuser": superuser,
                          "send_email": false, "return_token": return_token});
        self.call(Method::POST, "user/invite", &[], Some(&body))
            .await
    }

    /// `POST /user/accept-invite`.
    pub async fn accept_invite(&self, token: &str, password: &str) -> ClientResult<UserRead> {
        self.call(
            Method::POST,
            "user/accept-invite",
            &[],
            Some(&json!({"token": token, "password": password})),
        )
        .await
    }

    /// `POST /user/update-password`.
    pub async fn update_password(
        &self,
        username: &str,
        password: &str,
        new_password: &str,
    ) -> ClientResult<()> {
        let _: Value = self
            .form(
                "user/update-password",
                &[
                    ("username", username),
                    ("password", password),
                    ("new_password", new_password),
                ],
            )
            .await?;
        Ok(())
    }

    /// `GET /user-groups` (admin; one page).
    pub async fn find_groups(&self, query: &[(&str, &str)]) -> ClientResult<Page<UserGroup>> {
        self.call(Method::GET, "user-groups", query, None).await
    }

    /// `POST /user-groups` (admin).
    pub async fn create_group(&self, name: &str) -> ClientResult<UserGroup> {
        self.call(
            Method::POST,
            "user-groups",
            &[],
            Some(&json!({"name": name})),
        )
        .await
    }

    /// `DELETE /user-groups/{id}` (admin).
    pub async fn delete_group(&self, id: ObjectId) -> ClientResult<()> {
        self.send(
            Method::DELETE,
            &format!("user-groups/{id}"),
            &[],
            None,
            None,
        )
        .await
        .map(|_| ())
    }

    /// `POST /user/tokens`: a named, revocable API token (our server only).
    pub async fn create_token(&self, name: &str, expires_in: Option<u64>) -> ClientResult<Value> {
        self.call(
            Method::POST,
            "user/tokens",
            &[],
            Some(&json!({"name": name, "expires_in": expires_in})),
        )
        .await
    }

    /// `DELETE /user/tokens/{jti}` (our server only).
    pub async fn revoke_token(&self, jti: &str) -> ClientResult<()> {
        self.send(
            Method::DELETE,
            &format!("user/tokens/{jti}"),
            &[],
            None,
            None,
        )
        .await
        .map(|_| ())
    }
}
