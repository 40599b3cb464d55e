//! Users, groups, login and invites (api spec §3.2), plus revocable API tokens.

use kernelci::models::{ObjectId, User, UserGroup};
use kernelci::query::Query;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use super::{capped_limit, object_id};
use crate::app::App;
use crate::auth::{self, Claims, RESET_AUDIENCE};
use crate::http::{ApiError, Request, empty, ok, ok_json};
use crate::mail;

/// Lifetime of password-reset tokens (fastapi-users' default), seconds.
const RESET_TTL_SECS: i64 = 3600;

fn user_read(u: &User) -> Value {
    serde_json::to_value(u.read()).unwrap_or(Value::Null)
}

fn form_field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn require_form<'a>(form: &'a [(String, String)], name: &str) -> Result<&'a str, ApiError> {
    form_field(form, name).ok_or_else(|| ApiError::missing("body", name))
}

/// `v` as the string field `name` of a body (pydantic's `string_type` otherwise).
fn string_field<'a>(v: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    v.as_str().ok_or_else(|| {
        ApiError::validation(
            "body",
            name,
            "string_type",
            "Input should be a valid string",
            v,
        )
    })
}

fn body_str<'a>(body: &'a Value, name: &str) -> Result<&'a str, ApiError> {
    match body.get(name) {
        Some(v) => string_field(v, name),
        None => Err(ApiError::missing("body", name)),
    }
}

fn opt_str<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ApiError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => string_field(v, name).map(Some),
    }
}

/// An optional boolean, read as pydantic reads `bool` (`true`, `"yes"`, `1`, ...).
fn opt_bool(body: &Value, name: &str) -> Result<Option<bool>, ApiError> {
    use kernelci::models::shape::{Shape, check_value};
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let mut v = v.clone();
            let mut errors = kernelci::models::ValidationErrors::default();
            check_value(Shape::Bool, &[Value::from(name)], &mut v, &mut errors);
            if !errors.is_empty() {
                return Err(ApiError::unprocessable_input(
                    &[Value::from("body")],
                    &errors,
                ));
            }
            Ok(v.as_bool())
        }
    }
}

fn opt_groups(body: &Value) -> Result<Option<Vec<String>>, ApiError> {
    match body.get("groups") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => {
            let mut out: Vec<String> = Vec::new();
            for (i, v) in items.iter().enumerate() {
                let s = v.as_str().ok_or_else(|| {
                    ApiError::validation(
                        "body",
                        &format!("groups.{i}"),
                        "string_type",
                        "Input should be a valid string",
                        v,
                    )
                })?;
                out.push(s.to_owned());
            }
            let mut errors = kernelci::models::ValidationErrors::default();
            kernelci::models::input::check_unique_groups(&out, &mut errors);
            if let Some(dup) = errors.problems.first_mut() {
                // The same validator as a node's `user_groups`, on the `groups` field.
                dup.loc = vec![Value::from("groups")];
                return Err(ApiError::unprocessable_input(
                    &[Value::from("body")],
                    &errors,
                ));
            }
            Ok(Some(out))
        }
        Some(other) => Err(ApiError::validation(
            "body",
            "groups",
            "list_type",
            "Input should be a valid list",
            other,
        )),
    }
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    // One address, as email-validator takes it: no second `@`, and none of the characters
    // that would make a list or a display name of it in a mail header.
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.contains(char::is_whitespace)
        && !e.contains(|c: char| c.is_control() || ",;:<>()[]\\\"".contains(c))
}

fn email_field(body: &Value, name: &str) -> Result<Option<String>, ApiError> {
    match opt_str(body, name)? {
        None => Ok(None),
        Some(e) if valid_email(e) => Ok(Some(e.to_owned())),
        Some(e) => Err(ApiError::validation(
            "body",
            name,
            "value_error",
            "value is not a valid email address: An email address must have an @-sign and a valid domain.",
            e,
        )),
    }
}

/// The active user whose password is `password`, or `None`. Every check is an attempt of the
/// client's login budget (`--login-rate`), given back when it succeeds: a guesser is stopped
/// (429) while clients that log in correctly are never counted. The budget is taken before
/// the check, so concurrent guesses cannot overdraw it.
async fn checked_credentials(
    app: &App,
    req: &Request,
    username: &str,
    password: &str,
) -> Result<Option<User>, ApiError> {
    let client = req.client_ip(&app.config.trusted_proxy);
    app.login_limiter
        .take(client)
        .map_err(|wait| ApiError::too_many_requests("failed logins", wait))?;
    let found = match app.store.get_user_by_username(username).await {
        Ok(found) => found,
        Err(e) => {
            // Not an attempt: the store failed, not the password.
            app.login_limiter.give_back(client);
            return Err(e.into());
        }
    };
    let user = match found {
        Some(u) => {
            let ok =
                auth::verify_password_async(password.to_owned(), u.hashed_password.clone()).await;
            (ok && u.is_active).then_some(u)
        }
        None => {
            // Spend the same time as a real check, so timing does not reveal usernames.
            let _ = auth::verify_password_async(password.to_owned(), String::new()).await;
            None
        }
    };
    if user.is_some() {
        app.login_limiter.give_back(client);
    } else {
        tracing::info!(?client, "failed login");
    }
    Ok(user)
}

/// `POST /user/login` (form).
pub async fn login(app: &App, req: &Request) -> Result<Response, ApiError> {
    let form = req.form();
    let username = require_form(&form, "username")?;
    let password = require_form(&form, "password")?;
    if let Some(gt) = form_field(&form, "grant_type")
        && gt != "password"
    {
        return Err(ApiError::validation(
            "body",
            "grant_type",
            "string_pattern_mismatch",
            "String should match pattern '^password$'",
            gt,
        ));
    }
    let bad = || ApiError::bad_request("LOGIN_BAD_CREDENTIALS");
    let Some(mut user) = checked_credentials(app, req, username, password).await? else {
        return Err(bad());
    };
    if !user.is_verified {
        return Err(ApiError::bad_request("LOGIN_USER_NOT_VERIFIED"));
    }
    if auth::needs_rehash(&user.hashed_password) {
        user.hashed_password = auth::hash_password_async(password.to_owned()).await?;
        app.store.update_user(user.clone()).await?;
    }
    let (token, _) = app.auth.login_token(&user, app.auth.access_ttl)?;
    ok(json!({"access_token": token, "token_type": "bearer"}))
}

/// `POST /user/logout`: revokes the token used (upstream could not).
pub async fn logout(app: &App, req: &Request) -> Result<Response, ApiError> {
    let (user, claims) = app.auth.user_and_claims(req).await?;
    if !user.is_verified {
        return Err(ApiError::forbidden());
    }
    if let Some(jti) = claims.jti {
        app.auth.revoke(&jti).await?;
    }
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /user/register`: disabled, as upstream.
pub async fn register(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    app.auth.superuser(req).await?;
    email_field(&body, "email")?.ok_or_else(|| ApiError::missing("body", "email"))?;
    body_str(&body, "password")?;
    body_str(&body, "username")?;
    Err(ApiError::not_found(
        "User registration is disabled; use /user/invite instead.",
    ))
}

/// The base URL shown to the caller (`/user/invite/url`, the invite answer): the configured
/// public URL, else what the request says (forwarded headers only from trusted proxies).
/// Never used for a link in an e-mail: see [`mail_base_url`].
fn shown_base_url(app: &App, req: &Request) -> String {
    match app.config.public_url() {
        Some(u) => u.to_owned(),
        None => crate::proxy::request_base_url(
            req.remote.map(|a| a.ip()),
            &req.headers,
            &app.config.trusted_proxy,
        ),
    }
}

/// The base URL of links in e-mails: only the configured public URL. Start-up refuses SMTP
/// without one, so it is missing only when no mail can be sent; then the mailer's own error.
fn mail_base_url(app: &App) -> Result<&str, ApiError> {
    app.config
        .public_url()
        .ok_or_else(|| app.mailer.not_configured().to_api_error())
}

/// `GET /user/invite/url`.
pub async fn invite_url(app: &App, req: &Request) -> Result<Response, ApiError> {
    app.auth.superuser(req).await?;
    let base = shown_base_url(app, req);
    ok(json!({"public_base_url": base, "accept_invite_url": format!("{base}/user/accept-invite")}))
}

/// `POST /user/invite`.
pub async fn invite(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    app.auth.superuser(req).await?;
    let username = body_str(&body, "username")?.to_owned();
    let email = email_field(&body, "email")?.ok_or_else(|| ApiError::missing("body", "email"))?;
    let groups = opt_groups(&body)?.unwrap_or_default();
    let is_superuser = opt_bool(&body, "is_superuser")?.unwrap_or(false);
    let return_token = opt_bool(&body, "return_token")?.unwrap_or(false);
    let send_email = opt_bool(&body, "send_email")?.unwrap_or(true);
    let resend = opt_bool(&body, "resend_if_exists")?.unwrap_or(false);
    // Upstream looks the e-mail up exactly; the same address in another letter case is then
    // refused by the case-insensitive uniqueness check when the user is created.
    let existing = match app.store.get_user_by_username(&username).await? {
        Some(u) => Some(u),
        None => match app.store.get_user_by_email(&email).await? {
            Some(u) if u.email == email => Some(u),
            Some(_) => return Err(ApiError::bad_request("REGISTER_USER_ALREADY_EXISTS")),
            None => None,
        },
    };
    let user = match existing {
        Some(u) => {
            if !resend {
                return Err(ApiError::bad_request("User already exists"));
            }
            if u.is_verified {
                return Err(ApiError::bad_request("User already verified"));
            }
            if u.username != username {
                return Err(ApiError::bad_request(
                    "Existing user has a different username",
                ));
            }
            if !u.email.eq_ignore_ascii_case(&email) {
                return Err(ApiError::bad_request("Existing user has a different email"));
            }
            u
        }
        None => {
            let mut group_objs = Vec::new();
            for g in &groups {
                let grp = app.store.get_group_by_name(g).await?.ok_or_else(|| {
                    ApiError::bad_request(format!("User group does not exist with name: {g}"))
                })?;
                group_objs.push(grp);
            }
            let mut pw = [0u8; 24];
            getrandom::fill(&mut pw).map_err(ApiError::internal)?;
            let user = User {
                id: ObjectId::new(),
                email: email.clone(),
                hashed_password: auth::hash_password_async(hex::encode(pw)).await?,
                is_active: true,
                is_superuser,
                is_verified: false,
                username: username.clone(),
                groups: group_objs,
            };
            app.store
                .insert_user(user)
                .await
                .map_err(|e| match e.kind() {
                    kernelci::ErrorKind::Conflict => {
                        ApiError::bad_request("REGISTER_USER_ALREADY_EXISTS")
                    }
                    _ => e.into(),
                })?
        }
    };
    let now = kernelci::models::Timestamp::now().micros() / 1_000_000;
    let claims = Claims {
        sub: Some(user.id.to_hex()),
        email: Some(user.email.clone()),
        purpose: Some("invite".into()),
        iat: Some(now),
        exp: Some(now + i64::try_from(app.auth.invite_ttl).unwrap_or(i64::MAX / 2)),
        ..Default::default()
    };
    let token = app.auth.sign(&claims)?;
    let base = shown_base_url(app, req);
    let accept = format!("{base}/user/accept-invite");
    let invite_url = format!("{accept}?token={token}");
    // Any failure (not configured, refused, timed out) is only `email_sent: false`; the
    // mailer logs why. The mailed link is built on the configured public URL only.
    let email_sent = send_email
        && match mail_base_url(app) {
            Ok(mail_base) => {
                let link = format!("{mail_base}/user/accept-invite?token={token}");
                let (subject, text) =
                    mail::texts::invite(&user.username, &link, app.auth.invite_ttl);
                app.mailer.send(&user.email, &subject, &text).await.is_ok()
            }
            Err(_) => false,
        };
    ok(json!({
        "user": user_read(&user),
        "email_sent": email_sent,
        "public_base_url": base,
        "accept_invite_url": accept,
        "invite_url": if return_token { Value::from(invite_url) } else { Value::Null },
        "token": if return_token { Value::from(token) } else { Value::Null },
    }))
}

/// `POST /user/accept-invite`.
pub async fn accept_invite(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    let token = body_str(&body, "token")?;
    let password = body_str(&body, "password")?.to_owned();
    let claims = app
        .auth
        .decode(token, None)
        .ok_or_else(|| ApiError::bad_request("Invalid or expired invite token"))?;
    if claims.purpose.as_deref() != Some("invite") {
        return Err(ApiError::bad_request("Invalid invite token"));
    }
    let id = object_id(claims.sub.as_deref().unwrap_or_default())?;
    let mut user = app
        .store
        .get_user(id)
        .await?
        .ok_or_else(|| ApiError::not_found("User not found"))?;
    if !user.is_active {
        return Err(ApiError::bad_request("User is inactive"));
    }
    if !claims
        .email
        .as_deref()
        .is_some_and(|e| e.eq_ignore_ascii_case(&user.email))
    {
        return Err(ApiError::bad_request("Invalid invite token"));
    }
    if user.is_verified {
        return Err(ApiError::bad_request("Invite already accepted"));
    }
    user.hashed_password = auth::hash_password_async(password).await?;
    user.is_verified = true;
    let user = app.store.update_user(user).await?;
    // The welcome e-mail goes out in the background: its failure is ignored (and logged), and
    // a slow SMTP server must not hold the reply.
    let (subject, text) = mail::texts::welcome(&user.username);
    let (mailer, to) = (app.mailer.clone(), user.email.clone());
    tokio::spawn(async move {
        let _ = mailer.send(&to, &subject, &text).await;
    });
    ok(user_read(&user))
}

fn fingerprint(app: &App, hashed_password: &str) -> Result<String, ApiError> {
    // A keyed digest of the hash (the signature of a token over it): changes with the password,
    // reveals nothing about it.
    let t = app.auth.sign(&Claims {
        sub: Some(hashed_password.to_owned()),
        ..Default::default()
    })?;
    Ok(t.rsplit('.').next().unwrap_or_default().to_owned())
}

/// `POST /user/forgot-password`.
pub async fn forgot_password(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    let email = email_field(&body, "email")?.ok_or_else(|| ApiError::missing("body", "email"))?;
    // Every request counts, known address or not (a 429 must not tell which addresses exist).
    app.forgot_password_limiter
        .take(req.client_ip(&app.config.trusted_proxy))
        .map_err(|wait| ApiError::too_many_requests("password-reset requests", wait))?;
    if let Some(user) = app.store.get_user_by_email(&email).await?
        && user.is_active
    {
        // fastapi-users' reset token; only the e-mail carries it.
        let claims = Claims {
            sub: Some(user.id.to_hex()),
            password_fgpt: Some(fingerprint(app, &user.hashed_password)?),
            aud: Some(Value::from(RESET_AUDIENCE)),
            exp: Some(kernelci::models::Timestamp::now().micros() / 1_000_000 + RESET_TTL_SECS),
            ..Default::default()
        };
        let token = app.auth.sign(&claims)?;
        let reset_url = format!("{}/user/reset-password", mail_base_url(app)?);
        let (subject, text) = mail::texts::reset_token(&user.username, &token, &reset_url);
        // Upstream's quirks: unconfigured SMTP is a 400 with the settings' validation text, a
        // failed send a 500 `Failed to send email`.
        app.mailer
            .send(&user.email, &subject, &text)
            .await
            .map_err(|e| e.to_api_error())?;
    }
    Ok(crate::http::json_reply(StatusCode::ACCEPTED, &Value::Null))
}

/// `POST /user/reset-password`.
pub async fn reset_password(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    let token = body_str(&body, "token")?;
    let password = body_str(&body, "password")?.to_owned();
    let bad = || ApiError::bad_request("RESET_PASSWORD_BAD_TOKEN");
    let claims = app
        .auth
        .decode(token, Some(RESET_AUDIENCE))
        .ok_or_else(bad)?;
    let id = claims
        .sub
        .as_deref()
        .and_then(|s| ObjectId::parse_str(s).ok())
        .ok_or_else(bad)?;
    let mut user = app.store.get_user(id).await?.ok_or_else(bad)?;
    if !user.is_active
        || claims.password_fgpt.as_deref()
            != Some(fingerprint(app, &user.hashed_password)?.as_str())
    {
        return Err(bad());
    }
    user.hashed_password = auth::hash_password_async(password).await?;
    let user = app.store.update_user(user).await?;
    // As upstream: the confirmation goes out after the change, and its failure fails the
    // request although the password was changed.
    let (subject, text) = mail::texts::reset_done(&user.username);
    app.mailer
        .send(&user.email, &subject, &text)
        .await
        .map_err(|e| e.to_api_error())?;
    ok(Value::Null)
}

/// `POST /user/update-password` (form: username, password, new_password).
pub async fn update_password(app: &App, req: &Request) -> Result<Response, ApiError> {
    let form = req.form();
    let username = require_form(&form, "username")?;
    let password = require_form(&form, "password")?;
    let new_password = require_form(&form, "new_password")?;
    // The same password check as login, so the same budget: no second guessing oracle.
    let mut user = checked_credentials(app, req, username, password)
        .await?
        .ok_or_else(|| ApiError::bad_request("LOGIN_BAD_CREDENTIALS"))?;
    user.hashed_password = auth::hash_password_async(new_password.to_owned()).await?;
    app.store.update_user(user).await?;
    ok(Value::Null)
}

/// `GET /whoami`.
pub async fn whoami(app: &App, req: &Request) -> Result<Response, ApiError> {
    let user = app.auth.verified_user(req).await?;
    ok(user_read(&user))
}

/// `GET /user/{id}`.
pub async fn get_user(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    app.auth.user(req).await?;
    let nf = || ApiError::not_found("Not Found");
    let id = ObjectId::parse_str(id).map_err(|_| nf())?;
    let user = app.store.get_user(id).await?.ok_or_else(nf)?;
    ok(user_read(&user))
}

/// `DELETE /user/{id}`.
pub async fn delete_user(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    app.auth.superuser(req).await?;
    let nf = || ApiError::not_found("Not Found");
    let id = ObjectId::parse_str(id).map_err(|_| nf())?;
    if !app.store.delete_user(id).await? {
        return Err(nf());
    }
    ok(Value::Null)
}

async fn apply_update(
    app: &App,
    mut user: User,
    body: &Value,
    admin: bool,
) -> Result<User, ApiError> {
    if let Some(username) = opt_str(body, "username")?
        && username != user.username
    {
        if app.store.get_user_by_username(username).await?.is_some() {
            return Err(ApiError::bad_request(format!(
                "Username already exists: {username}"
            )));
        }
        user.username = username.to_owned();
    }
    // An admin's list replaces the groups; `[]` clears them (upstream ignored an empty list).
    if admin && let Some(groups) = opt_groups(body)? {
        let mut objs = Vec::new();
        for g in groups {
            let grp = app.store.get_group_by_name(&g).await?.ok_or_else(|| {
                ApiError::bad_request(format!("User group does not exist with name: {g}"))
            })?;
            objs.push(grp);
        }
        user.groups = objs;
    }
    let verified_sent = opt_bool(body, "is_verified")?;
    if let Some(email) = email_field(body, "email")?
        && !email.eq_ignore_ascii_case(&user.email)
    {
        if let Some(other) = app.store.get_user_by_email(&email).await?
            && other.id != user.id
        {
            return Err(ApiError::bad_request("UPDATE_USER_EMAIL_ALREADY_EXISTS"));
        }
        user.email = email;
        // Upstream un-verified on any e-mail change, which locked a user who changed their own
        // address out (LOGIN_USER_NOT_VERIFIED). Only an admin's change un-verifies (unless the
        // same request sets `is_verified`).
        if admin {
            user.is_verified = false;
        }
    }
    if admin {
        if let Some(v) = opt_bool(body, "is_active")? {
            user.is_active = v;
        }
        if let Some(v) = opt_bool(body, "is_superuser")? {
            user.is_superuser = v;
        }
        if let Some(v) = verified_sent {
            user.is_verified = v;
        }
    }
    if let Some(pw) = opt_str(body, "password")? {
        user.hashed_password = auth::hash_password_async(pw.to_owned()).await?;
    }
    app.store
        .update_user(user)
        .await
        .map_err(|e| match e.kind() {
            kernelci::ErrorKind::Conflict => ApiError::bad_request(e.to_string()),
            _ => e.into(),
        })
}

/// `PATCH /user/me`.
pub async fn patch_me(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    let user = app.auth.user(req).await?;
    if opt_groups(&body)?.is_some_and(|g| !g.is_empty()) {
        return Err(ApiError::bad_request(
            "User groups can only be updated by an admin user",
        ));
    }
    let user = apply_update(app, user, &body, false).await?;
    ok(user_read(&user))
}

/// `PATCH /user/{id}` (admin).
pub async fn patch_user(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let body = req.json()?;
    app.auth.superuser(req).await?;
    let oid = object_id(id)?;
    let user = app
        .store
        .get_user(oid)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("User not found with id: {id}")))?;
    let user = apply_update(app, user, &body, true).await?;
    ok(user_read(&user))
}

fn paged(items: Vec<Value>, total: u64, limit: u64, offset: u64) -> Result<Response, ApiError> {
    ok(json!({"items": items, "total": total, "limit": limit, "offset": offset}))
}

/// `GET /users`.
pub async fn list_users(app: &App, req: &Request) -> Result<Response, ApiError> {
    app.auth.user(req).await?;
    let q = Query::parse(req.query.clone())?;
    let (limit, offset) = (capped_limit(q.limit, 50)?, q.offset.unwrap_or(0));
    let (users, total) = app.store.find_users(&q.filter, offset, Some(limit)).await?;
    let items = users
        .iter()
        .map(|u| {
            let mut v = user_read(u);
            if let Some(o) = v.as_object_mut() {
                o.insert("revision_id".into(), Value::Null);
            }
            v
        })
        .collect();
    paged(items, total, limit, offset)
}

/// `GET /user-groups`.
pub async fn list_groups(app: &App, req: &Request) -> Result<Response, ApiError> {
    app.auth.superuser(req).await?;
    let q = Query::parse(req.query.clone())?;
    let (limit, offset) = (capped_limit(q.limit, 50)?, q.offset.unwrap_or(0));
    let (groups, total) = app
        .store
        .find_groups(&q.filter, offset, Some(limit))
        .await?;
    paged(
        groups
            .iter()
            .map(|g| serde_json::to_value(g).unwrap_or(Value::Null))
            .collect(),
        total,
        limit,
        offset,
    )
}

/// The group with this id (400 for a bad id, 404 for none).
async fn group(app: &App, id: &str) -> Result<UserGroup, ApiError> {
    app.store
        .get_group(object_id(id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("User group not found with id: {id}")))
}

/// `GET /user-groups/{id}`.
pub async fn get_group(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    app.auth.superuser(req).await?;
    let g = group(app, id).await?;
    ok_json(&g)
}

/// `POST /user-groups`.
pub async fn create_group(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    app.auth.superuser(req).await?;
    let name = body_str(&body, "name")?;
    let g = app
        .store
        .insert_group(UserGroup::new(name))
        .await
        .map_err(|e| match e.kind() {
            kernelci::ErrorKind::Conflict => {
                ApiError::bad_request(format!("User group already exists with name: {name}"))
            }
            _ => e.into(),
        })?;
    ok_json(&g)
}

/// `DELETE /user-groups/{id}`.
pub async fn delete_group(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    app.auth.superuser(req).await?;
    let g = group(app, id).await?;
    let members = Query::parse([("groups.name".to_owned(), g.name.clone())])?.filter;
    let (_, n) = app.store.find_users(&members, 0, Some(1)).await?;
    if n > 0 {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "User group is assigned to users and cannot be deleted. Remove it from users first.",
        ));
    }
    app.store.delete_group(g.id).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// `POST /user/tokens` (our extension): a named, revocable API token for the caller.
pub async fn create_token(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = if req.body.is_empty() {
        json!({})
    } else {
        req.json()?
    };
    let user = app.auth.user(req).await?;
    let name = opt_str(&body, "name")?.unwrap_or("api-token");
    let ttl = match body.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::validation(
                "body",
                "expires_in",
                "int_type",
                "Input should be a positive integer (seconds)",
                v,
            )
        })?),
    };
    let (token, info) = app.auth.create_api_token(&user, name, ttl).await?;
    ok(
        json!({"access_token": token, "token_type": "bearer", "jti": info.jti, "name": info.name, "expires": info.expires}),
    )
}

/// `DELETE /user/tokens/{jti}` (our extension): revokes a token (its owner or an admin).
pub async fn revoke_token(app: &App, req: &Request, jti: &str) -> Result<Response, ApiError> {
    let user = app.auth.user(req).await?;
    if !user.is_superuser {
        match app.auth.token_info(jti).await? {
            Some(info) if info.username == user.username => {}
            _ => return Err(ApiError::not_found(format!("Token not found: {jti}"))),
        }
    }
    app.auth.revoke(jti).await?;
    Ok(empty(StatusCode::NO_CONTENT))
}
