//! Users and auth (api spec §1.3, §3.2): login, whoami, JWT edge cases, invites, users, groups,
//! passwords, revocable tokens, bcrypt re-hashing.

mod common;

use common::{ADMIN_PASSWORD, app, app_with};
use jsonwebtoken::{EncodingKey, Header, encode};
use kernelci::models::{ObjectId, User};
use kernelci::store::UserStore;
use kernelci_server::config::TEST_SECRET_KEY;
use serde_json::{Value, json};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn jwt(secret: &str, claims: &Value) -> String {
    encode(
        &Header::default(),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("jwt")
}

#[tokio::test]
async fn login_form_and_errors() {
    let t = app().await;
    let r = t
        .req("POST", "/latest/user/login")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await;
    assert_eq!(r.status, 200);
    let keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys, ["access_token", "token_type"]);
    assert_eq!(r.json()["token_type"], "bearer");
    // The token has upstream's claims.
    let tok = r.json()["access_token"].as_str().unwrap().to_owned();
    let payload = tok.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&base64_url(payload)).unwrap();
    assert_eq!(claims["aud"], json!(["fastapi-users:auth"]));
    assert!(claims["exp"].as_i64().unwrap() > now() + 300_000_000);
    assert!(claims["sub"].is_string());

    for (u, p) in [("admin", "wrong"), ("nobody", "x")] {
        t.req("POST", "/user/login")
            .form(&[("username", u), ("password", p)])
            .send()
            .await
            .assert_detail(400, "LOGIN_BAD_CREDENTIALS");
    }
    let r = t
        .req("POST", "/user/login")
        .form(&[("username", "admin")])
        .send()
        .await;
    r.assert_422("missing", json!(["body", "password"]));
    let r = t
        .req("POST", "/user/login")
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("grant_type", "code"),
        ])
        .send()
        .await;
    assert_eq!(r.status, 422);
    let r = t
        .req("POST", "/user/login")
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("grant_type", "password"),
        ])
        .send()
        .await;
    assert_eq!(r.status, 200);

    // An invited user who has not accepted: not verified.
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "pending", "email": "pending@example.org", "send_email": false}),
        )
        .await;
    assert_eq!(r.status, 200);
    let id = ObjectId::parse_str(r.json()["user"]["id"].as_str().unwrap()).unwrap();
    let mut u = t.store.get_user(id).await.unwrap().unwrap();
    u.hashed_password = kernelci_server::auth::hash_password("pw").unwrap();
    t.store.update_user(u.clone()).await.unwrap();
    t.req("POST", "/user/login")
        .form(&[("username", "pending"), ("password", "pw")])
        .send()
        .await
        .assert_detail(400, "LOGIN_USER_NOT_VERIFIED");
    // Inactive: bad credentials.
    u.is_verified = true;
    u.is_active = false;
    t.store.update_user(u).await.unwrap();
    t.req("POST", "/user/login")
        .form(&[("username", "pending"), ("password", "pw")])
        .send()
        .await
        .assert_detail(400, "LOGIN_BAD_CREDENTIALS");
}

fn base64_url(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        let v = A.iter().position(|&a| a == c).expect("base64url") as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    out
}

#[tokio::test]
async fn whoami_and_verification_levels() {
    let t = app().await;
    let r = t.get_as(&t.admin, "/whoami").await;
    assert_eq!(r.status, 200);
    let keys: Vec<String> = r.json().as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        keys,
        [
            "id",
            "email",
            "is_active",
            "is_superuser",
            "is_verified",
            "username",
            "groups"
        ]
    );
    assert_eq!(r.json()["username"], "admin");
    assert_eq!(r.json()["email"], "admin@kernelci.org");
    t.get("/whoami").await.assert_detail(401, "Unauthorized");

    // An unverified user (a token minted for them): user level works, verified level is 403.
    let user = t.user_token("bob", &[]).await;
    let bob = t.get_as(&user, "/whoami").await.json();
    let id = ObjectId::parse_str(bob["id"].as_str().unwrap()).unwrap();
    let mut u = t.store.get_user(id).await.unwrap().unwrap();
    u.is_verified = false;
    t.store.update_user(u.clone()).await.unwrap();
    t.get_as(&user, "/whoami")
        .await
        .assert_detail(403, "Forbidden");
    t.req("POST", "/user/logout")
        .token(&user)
        .send()
        .await
        .assert_detail(403, "Forbidden");
    assert_eq!(t.get_as(&user, "/users").await.status, 200);
    // Inactive: 401 everywhere.
    u.is_active = false;
    t.store.update_user(u).await.unwrap();
    t.get_as(&user, "/whoami")
        .await
        .assert_detail(401, "Unauthorized");
    t.get_as(&user, "/users")
        .await
        .assert_detail(401, "Unauthorized");
}

/// A second accepted signing key (`UNIFIED_SECRET`), 32 bytes or more.
const UNIFIED: &str = "unified-secret-of-thirty-two-bytes-or-more";

#[tokio::test]
async fn jwt_edge_cases() {
    let t = app_with(|c| c.unified_secret = Some(UNIFIED.into())).await;
    let admin = t.get_as(&t.admin, "/whoami").await.json();
    let sub = admin["id"].as_str().unwrap();
    let good = |secret: &str| {
        jwt(
            secret,
            &json!({"sub": sub, "aud": ["fastapi-users:auth"], "exp": now() + 600}),
        )
    };
    // Accepted: primary secret, UNIFIED_SECRET, no exp, string aud.
    for tok in [
        good(TEST_SECRET_KEY),
        good(UNIFIED),
        jwt(
            TEST_SECRET_KEY,
            &json!({"sub": sub, "aud": ["fastapi-users:auth"]}),
        ),
        jwt(
            UNIFIED,
            &json!({"sub": sub, "aud": "fastapi-users:auth", "email": "x", "permissions": []}),
        ),
    ] {
        assert_eq!(t.get_as(&tok, "/whoami").await.status, 200, "{tok}");
    }
    // Refused: forged, expired, no aud, wrong aud, unknown sub, bad sub, alg none, garbage.
    let header_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    let payload = good("x").split('.').nth(1).unwrap().to_owned();
    let refused = [
        good("forged"),
        jwt(
            TEST_SECRET_KEY,
            &json!({"sub": sub, "aud": ["fastapi-users:auth"], "exp": now() - 10}),
        ),
        jwt(TEST_SECRET_KEY, &json!({"sub": sub, "exp": now() + 600})),
        jwt(
            TEST_SECRET_KEY,
            &json!({"sub": sub, "aud": ["fastapi-users:reset"], "exp": now() + 600}),
        ),
        jwt(
            TEST_SECRET_KEY,
            &json!({"sub": ObjectId::new().to_hex(), "aud": ["fastapi-users:auth"]}),
        ),
        jwt(
            TEST_SECRET_KEY,
            &json!({"sub": "zz", "aud": ["fastapi-users:auth"]}),
        ),
        jwt(TEST_SECRET_KEY, &json!({"aud": ["fastapi-users:auth"]})),
        format!("{header_none}.{payload}."),
        "garbage".to_owned(),
    ];
    for tok in refused {
        t.get_as(&tok, "/whoami")
            .await
            .assert_detail(401, "Unauthorized");
    }
    // Scheme is case-insensitive; other schemes and no header are 401.
    let ok = good(TEST_SECRET_KEY);
    let r = t
        .req("GET", "/whoami")
        .header("authorization", &format!("bearer {ok}"))
        .send()
        .await;
    assert_eq!(r.status, 200);
    let r = t
        .req("GET", "/whoami")
        .header("authorization", &format!("Basic {ok}"))
        .send()
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn logout_and_api_tokens_revoke() {
    let t = app().await;
    let user = t.user_token("carol", &[]).await;
    let other = t.user_token("dave", &[]).await;
    let r = t.req("POST", "/user/logout").token(&user).send().await;
    assert_eq!(r.status, 204);
    assert!(r.bytes.is_empty());
    // Deliberately better: the token no longer works.
    t.get_as(&user, "/whoami")
        .await
        .assert_detail(401, "Unauthorized");
    let user = t.login("carol", "carol-pass").await;
    assert_eq!(t.get_as(&user, "/whoami").await.status, 200);

    let r = t
        .post_as(
            &user,
            "/user/tokens",
            &json!({"name": "ci", "expires_in": 3600}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let api = r.json();
    let api_token = api["access_token"].as_str().unwrap();
    let jti = api["jti"].as_str().unwrap();
    assert_eq!(api["name"], "ci");
    assert_eq!(
        t.get_as(api_token, "/whoami").await.json()["username"],
        "carol"
    );
    assert_eq!(
        t.post_as(&user, "/user/tokens", &json!({"expires_in": -1}))
            .await
            .status,
        422
    );
    // Someone else cannot revoke it.
    assert_eq!(
        t.delete_as(&other, &format!("/user/tokens/{jti}"))
            .await
            .status,
        404
    );
    assert_eq!(t.get_as(api_token, "/whoami").await.status, 200);
    let r = t.delete_as(&user, &format!("/user/tokens/{jti}")).await;
    assert_eq!(r.status, 204);
    t.get_as(api_token, "/whoami")
        .await
        .assert_detail(401, "Unauthorized");
    // The login token still works; an admin can revoke any token.
    assert_eq!(t.get_as(&user, "/whoami").await.status, 200);
    let r = t.post_as(&other, "/user/tokens", &json!({})).await;
    let jti2 = r.json()["jti"].as_str().unwrap().to_owned();
    let tok2 = r.json()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(
        t.delete_as(&t.admin, &format!("/user/tokens/{jti2}"))
            .await
            .status,
        204
    );
    assert_eq!(t.get_as(&tok2, "/whoami").await.status, 401);
    assert_eq!(t.req("POST", "/user/tokens").send().await.status, 401);
}

#[tokio::test]
async fn bcrypt_hash_logs_in_and_is_rehashed() {
    let t = app().await;
    let user = User {
        id: ObjectId::new(),
        email: "legacy@example.org".into(),
        hashed_password: bcrypt::hash("old-secret", 4).unwrap(),
        is_active: true,
        is_superuser: false,
        is_verified: true,
        username: "legacy".into(),
        groups: vec![],
    };
    let id = user.id;
    t.store.insert_user(user).await.unwrap();
    let tok = t.login("legacy", "old-secret").await;
    assert_eq!(t.get_as(&tok, "/whoami").await.status, 200);
    let stored = t.store.get_user(id).await.unwrap().unwrap();
    assert!(
        stored.hashed_password.starts_with("$argon2id$"),
        "{}",
        stored.hashed_password
    );
    t.login("legacy", "old-secret").await;
}

#[tokio::test]
async fn invite_and_accept_invite() {
    let t = app_with(|c| c.public_base_url = Some("https://api.example.org/".into())).await;
    let user = t.user_token("erin", &[]).await;
    let body = json!({"username": "frank", "email": "frank@example.org", "send_email": false});
    // Superuser only.
    assert_eq!(
        t.req("POST", "/user/invite")
            .json(&body)
            .send()
            .await
            .status,
        401
    );
    t.post_as(&user, "/user/invite", &body)
        .await
        .assert_detail(403, "Forbidden");
    assert_eq!(t.get_as(&user, "/user/invite/url").await.status, 403);
    let r = t.get_as(&t.admin, "/user/invite/url").await;
    assert_eq!(
        r.json(),
        json!({"public_base_url": "https://api.example.org", "accept_invite_url": "https://api.example.org/user/accept-invite"})
    );
    // Validation.
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "x", "email": "not-an-email"}),
        )
        .await;
    assert_eq!(r.status, 422);
    for bad in [
        "a@example.org,b@example.org",
        "a@b@example.org",
        "Eve <eve@example.org>",
        "a;b@example.org",
        "a@example.org\r\nBcc: x@example.org",
    ] {
        let r = t
            .post_as(
                &t.admin,
                "/user/invite",
                &json!({"username": "x", "email": bad, "send_email": false}),
            )
            .await;
        r.assert_422("value_error", json!(["body", "email"]));
    }
    let r = t
        .post_as(&t.admin, "/user/invite", &json!({"email": "x@example.org"}))
        .await;
    r.assert_422("missing", json!(["body", "username"]));
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "x", "email": "x@example.org", "groups": ["a", "a"]}),
        )
        .await;
    assert_eq!(r.status, 422);
    t.post_as(
        &t.admin,
        "/user/invite",
        &json!({"username": "x", "email": "x@example.org", "groups": ["nogroup"]}),
    )
    .await
    .assert_detail(400, "User group does not exist with name: nogroup");

    let r = t.post_as(&t.admin, "/user/invite", &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let inv = r.json();
    assert_eq!(inv["user"]["username"], "frank");
    assert_eq!(inv["user"]["is_verified"], false);
    assert_eq!(inv["email_sent"], false);
    assert_eq!(inv["public_base_url"], "https://api.example.org");
    assert_eq!(
        inv["accept_invite_url"],
        "https://api.example.org/user/accept-invite"
    );
    assert_eq!(inv["invite_url"], Value::Null);
    assert_eq!(inv["token"], Value::Null);
    // Existing user.
    t.post_as(&t.admin, "/user/invite", &body)
        .await
        .assert_detail(400, "User already exists");
    let resend = json!({"username": "frank", "email": "frank@example.org", "send_email": false,
                        "resend_if_exists": true, "return_token": true});
    let r = t.post_as(&t.admin, "/user/invite", &resend).await;
    assert_eq!(r.status, 200);
    let token = r.json()["token"].as_str().unwrap().to_owned();
    assert_eq!(
        r.json()["invite_url"].as_str().unwrap(),
        format!("https://api.example.org/user/accept-invite?token={token}")
    );
    t.post_as(
        &t.admin,
        "/user/invite",
        &json!({"username": "frank", "email": "other@example.org", "resend_if_exists": true}),
    )
    .await
    .assert_detail(400, "Existing user has a different email");
    t.post_as(
        &t.admin,
        "/user/invite",
        &json!({"username": "frank2", "email": "frank@example.org", "resend_if_exists": true}),
    )
    .await
    .assert_detail(400, "Existing user has a different username");

    // Accept.
    let accept = |tok: &str| json!({"token": tok, "password": "frank-pass"});
    let r = t
        .req("POST", "/user/accept-invite")
        .json(&json!({"token": token}))
        .send()
        .await;
    r.assert_422("missing", json!(["body", "password"]));
    t.req("POST", "/user/accept-invite")
        .json(&accept("garbage"))
        .send()
        .await
        .assert_detail(400, "Invalid or expired invite token");
    let sub = inv["user"]["id"].as_str().unwrap();
    let wrong_purpose = jwt(
        TEST_SECRET_KEY,
        &json!({"sub": sub, "email": "frank@example.org", "purpose": "reset", "exp": now() + 60}),
    );
    t.req("POST", "/user/accept-invite")
        .json(&accept(&wrong_purpose))
        .send()
        .await
        .assert_detail(400, "Invalid invite token");
    let wrong_email = jwt(
        TEST_SECRET_KEY,
        &json!({"sub": sub, "email": "x@example.org", "purpose": "invite", "exp": now() + 60}),
    );
    t.req("POST", "/user/accept-invite")
        .json(&accept(&wrong_email))
        .send()
        .await
        .assert_detail(400, "Invalid invite token");
    let expired = jwt(
        TEST_SECRET_KEY,
        &json!({"sub": sub, "email": "frank@example.org", "purpose": "invite", "exp": now() - 60}),
    );
    t.req("POST", "/user/accept-invite")
        .json(&accept(&expired))
        .send()
        .await
        .assert_detail(400, "Invalid or expired invite token");
    let unknown = jwt(
        TEST_SECRET_KEY,
        &json!({"sub": ObjectId::new().to_hex(), "email": "frank@example.org", "purpose": "invite", "exp": now() + 60}),
    );
    t.req("POST", "/user/accept-invite")
        .json(&accept(&unknown))
        .send()
        .await
        .assert_detail(404, "User not found");
    let r = t
        .req("POST", "/user/accept-invite")
        .json(&accept(&token))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["is_verified"], true);
    t.req("POST", "/user/accept-invite")
        .json(&accept(&token))
        .send()
        .await
        .assert_detail(400, "Invite already accepted");
    t.login("frank", "frank-pass").await;
    t.post_as(&t.admin, "/user/invite", &resend)
        .await
        .assert_detail(400, "User already verified");
}

#[tokio::test]
async fn register_forgot_reset_update_password() {
    let t = app().await;
    let user = t.user_token("gina", &[]).await;
    let body = json!({"email": "g2@example.org", "password": "x", "username": "g2"});
    assert_eq!(
        t.req("POST", "/user/register")
            .json(&body)
            .send()
            .await
            .status,
        401
    );
    t.post_as(&user, "/user/register", &body)
        .await
        .assert_detail(403, "Forbidden");
    assert_eq!(
        t.post_as(&t.admin, "/user/register", &json!({"email": "x"}))
            .await
            .status,
        422
    );
    t.post_as(&t.admin, "/user/register", &body)
        .await
        .assert_detail(
            404,
            "User registration is disabled; use /user/invite instead.",
        );

    let r = t
        .req("POST", "/user/forgot-password")
        .json(&json!({"email": "nobody@example.org"}))
        .send()
        .await;
    assert_eq!((r.status, r.json()), (202, Value::Null));
    t.req("POST", "/user/reset-password")
        .json(&json!({"token": "bad", "password": "x"}))
        .send()
        .await
        .assert_detail(400, "RESET_PASSWORD_BAD_TOKEN");
    assert_eq!(
        t.req("POST", "/user/reset-password")
            .json(&json!({"token": "bad"}))
            .send()
            .await
            .status,
        422
    );

    // update-password: form credentials, no bearer.
    t.req("POST", "/user/update-password")
        .form(&[
            ("username", "gina"),
            ("password", "wrong"),
            ("new_password", "n"),
        ])
        .send()
        .await
        .assert_detail(400, "LOGIN_BAD_CREDENTIALS");
    let r = t
        .req("POST", "/user/update-password")
        .form(&[("username", "gina"), ("password", "gina-pass")])
        .send()
        .await;
    assert_eq!(r.status, 422);
    let r = t
        .req("POST", "/user/update-password")
        .form(&[
            ("username", "gina"),
            ("password", "gina-pass"),
            ("new_password", "new-pass"),
        ])
        .send()
        .await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    t.login("gina", "new-pass").await;
    t.req("POST", "/user/login")
        .form(&[("username", "gina"), ("password", "gina-pass")])
        .send()
        .await
        .assert_detail(400, "LOGIN_BAD_CREDENTIALS");
}

#[tokio::test]
async fn users_and_patches() {
    let t = app().await;
    t.create_group("team-a").await;
    t.create_group("team-b").await;
    let hank_id = t.create_user("hank", &["team-a"]).await;
    let hank = t.login("hank", "hank-pass").await;
    t.create_user("ivy", &[]).await;

    // GET /user/{id}: any user.
    let r = t.get_as(&hank, &format!("/user/{hank_id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["groups"][0]["name"], "team-a");
    assert!(r.json()["groups"][0]["id"].is_string());
    assert_eq!(t.get(&format!("/user/{hank_id}")).await.status, 401);
    t.get_as(&hank, "/user/zz")
        .await
        .assert_detail(404, "Not Found");
    t.get_as(&hank, &format!("/user/{}", ObjectId::new()))
        .await
        .assert_detail(404, "Not Found");

    // GET /users: paginated, raw equality filters.
    let r = t.get_as(&hank, "/users").await.json();
    assert_eq!(r["total"], 3);
    assert_eq!(
        (r["limit"].as_u64(), r["offset"].as_u64()),
        (Some(50), Some(0))
    );
    let item = &r["items"][0];
    assert!(item.get("hashed_password").is_none());
    assert_eq!(item["revision_id"], Value::Null);
    assert_eq!(
        t.get_as(&hank, "/users?username=ivy").await.json()["total"],
        1
    );
    assert_eq!(
        t.get_as(&hank, "/users?is_superuser=TRUE").await.json()["total"],
        1
    );
    assert_eq!(
        t.get_as(&hank, "/users?groups.name=team-a").await.json()["total"],
        1
    );
    assert_eq!(
        t.get_as(&hank, "/users?limit=1&offset=1").await.json()["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    t.get_as(&hank, "/users?limit=0")
        .await
        .assert_422("greater_than_equal", json!(["query", "limit"]));
    t.get_as(&hank, "/users?offset=x")
        .await
        .assert_422("int_parsing", json!(["query", "offset"]));

    // PATCH /user/me.
    t.patch_as(&hank, "/user/me", &json!({"groups": ["team-b"]}))
        .await
        .assert_detail(400, "User groups can only be updated by an admin user");
    t.patch_as(&hank, "/user/me", &json!({"username": "ivy"}))
        .await
        .assert_detail(400, "Username already exists: ivy");
    t.patch_as(&hank, "/user/me", &json!({"email": "ivy@example.org"}))
        .await
        .assert_detail(400, "UPDATE_USER_EMAIL_ALREADY_EXISTS");
    let r = t
        .patch_as(
            &hank,
            "/user/me",
            &json!({"is_superuser": true, "groups": [], "username": "hank2"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["is_superuser"], false, "safe mode ignores flags");
    assert_eq!(r.json()["username"], "hank2");
    assert_eq!(r.json()["groups"][0]["name"], "team-a", "[] keeps groups");

    // PATCH /user/{id}: admin.
    t.patch_as(
        &hank,
        &format!("/user/{hank_id}"),
        &json!({"is_superuser": true}),
    )
    .await
    .assert_detail(403, "Forbidden");
    let missing = ObjectId::new().to_hex();
    t.patch_as(&t.admin, &format!("/user/{missing}"), &json!({}))
        .await
        .assert_detail(404, &format!("User not found with id: {missing}"));
    assert_eq!(
        t.patch_as(&t.admin, "/user/zz", &json!({})).await.status,
        400
    );
    t.patch_as(
        &t.admin,
        &format!("/user/{hank_id}"),
        &json!({"groups": ["nope"]}),
    )
    .await
    .assert_detail(400, "User group does not exist with name: nope");
    t.patch_as(
        &t.admin,
        &format!("/user/{hank_id}"),
        &json!({"username": "ivy"}),
    )
    .await
    .assert_detail(400, "Username already exists: ivy");
    let r = t
        .patch_as(
            &t.admin,
            &format!("/user/{hank_id}"),
            &json!({"groups": ["team-b"], "email": "h@example.org", "is_verified": true}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["groups"],
        json!([{"id": r.json()["groups"][0]["id"], "name": "team-b"}])
    );
    assert_eq!(r.json()["is_verified"], true);
    let r = t
        .patch_as(
            &t.admin,
            &format!("/user/{hank_id}"),
            &json!({"email": "h2@example.org"}),
        )
        .await;
    assert_eq!(r.json()["is_verified"], false, "email change un-verifies");

    // DELETE /user/{id}.
    assert_eq!(
        t.delete_as(&hank, &format!("/user/{hank_id}")).await.status,
        403
    );
    let r = t.delete_as(&t.admin, &format!("/user/{hank_id}")).await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    t.delete_as(&t.admin, &format!("/user/{hank_id}"))
        .await
        .assert_detail(404, "Not Found");
}

#[tokio::test]
async fn user_groups() {
    let t = app().await;
    let user = t.user_token("jack", &[]).await;
    assert_eq!(t.get_as(&user, "/user-groups").await.status, 403);
    assert_eq!(t.get("/user-groups").await.status, 401);
    let id = t.create_group("lab-x").await;
    t.post_as(&t.admin, "/user-groups", &json!({"name": "lab-x"}))
        .await
        .assert_detail(400, "User group already exists with name: lab-x");
    assert_eq!(
        t.post_as(&t.admin, "/user-groups", &json!({})).await.status,
        422
    );
    let r = t.get_as(&t.admin, &format!("/user-groups/{id}")).await;
    assert_eq!(r.json(), json!({"id": id, "name": "lab-x"}));
    let l = t.get_as(&t.admin, "/user-groups?name=lab-x").await.json();
    assert_eq!(l["total"], 1);
    assert_eq!(l["items"][0]["name"], "lab-x");
    // node:edit:any is bootstrapped.
    assert_eq!(
        t.get_as(&t.admin, "/user-groups?name=node:edit:any")
            .await
            .json()["total"],
        1
    );
    assert_eq!(t.get_as(&t.admin, "/user-groups/zz").await.status, 400);
    let missing = ObjectId::new().to_hex();
    t.get_as(&t.admin, &format!("/user-groups/{missing}"))
        .await
        .assert_detail(404, &format!("User group not found with id: {missing}"));
    t.delete_as(&t.admin, &format!("/user-groups/{missing}"))
        .await
        .assert_detail(404, &format!("User group not found with id: {missing}"));
    // Assigned: 409.
    t.create_user("kate", &["lab-x"]).await;
    t.delete_as(&t.admin, &format!("/user-groups/{id}"))
        .await
        .assert_detail(
            409,
            "User group is assigned to users and cannot be deleted. Remove it from users first.",
        );
    let other = t.create_group("lab-y").await;
    assert_eq!(
        t.delete_as(&user, &format!("/user-groups/{other}"))
            .await
            .status,
        403
    );
    let r = t
        .delete_as(&t.admin, &format!("/user-groups/{other}"))
        .await;
    assert_eq!(r.status, 204);
    assert!(r.bytes.is_empty());
    assert_eq!(
        t.get_as(&t.admin, &format!("/user-groups/{other}"))
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn own_email_change_group_clearing_and_invite_letter_case() {
    let t = app().await;
    t.create_group("team-a").await;
    let kim_id = t.create_user("kim", &["team-a"]).await;
    let kim = t.login("kim", "kim-pass").await;

    // Deliberately better: changing one's own e-mail keeps the user verified (upstream
    // un-verified them, and their next login failed with LOGIN_USER_NOT_VERIFIED).
    let r = t
        .patch_as(&kim, "/user/me", &json!({"email": "kim.new@example.org"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["email"], "kim.new@example.org");
    assert_eq!(r.json()["is_verified"], true);
    let kim = t.login("kim", "kim-pass").await;
    let me = t.get_as(&kim, "/whoami").await;
    assert_eq!(me.status, 200, "{}", me.text());
    assert_eq!(me.json()["email"], "kim.new@example.org");
    // Still no way to verify oneself, or to take another user's address.
    t.create_user("lee", &[]).await;
    t.patch_as(&kim, "/user/me", &json!({"email": "LEE@example.org"}))
        .await
        .assert_detail(400, "UPDATE_USER_EMAIL_ALREADY_EXISTS");

    // Deliberately better: an admin's `"groups": []` clears the groups (upstream could not).
    let r = t
        .patch_as(&t.admin, &format!("/user/{kim_id}"), &json!({"groups": []}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["groups"], json!([]));
    let stored = t.get_as(&t.admin, &format!("/user/{kim_id}")).await.json();
    assert_eq!(stored["groups"], json!([]));
    // Leaving `groups` out keeps them.
    t.patch_as(
        &t.admin,
        &format!("/user/{kim_id}"),
        &json!({"groups": ["team-a"]}),
    )
    .await;
    let r = t
        .patch_as(
            &t.admin,
            &format!("/user/{kim_id}"),
            &json!({"username": "kim"}),
        )
        .await;
    assert_eq!(r.json()["groups"][0]["name"], "team-a");
    // `[]` from the user themselves still changes nothing.
    let r = t.patch_as(&kim, "/user/me", &json!({"groups": []})).await;
    assert_eq!(r.json()["groups"][0]["name"], "team-a");

    // Inviting an address that exists in another letter case: fastapi-users' answer.
    t.post_as(
        &t.admin,
        "/user/invite",
        &json!({"username": "kim-twin", "email": "Kim.New@EXAMPLE.org", "send_email": false}),
    )
    .await
    .assert_detail(400, "REGISTER_USER_ALREADY_EXISTS");
    t.post_as(
        &t.admin,
        "/user/invite",
        &json!({"username": "kim-twin", "email": "KIM.NEW@example.org", "send_email": false,
                "resend_if_exists": true}),
    )
    .await
    .assert_detail(400, "REGISTER_USER_ALREADY_EXISTS");
    // The same address in the same case is the existing user, as before.
    t.post_as(
        &t.admin,
        "/user/invite",
        &json!({"username": "kim-twin", "email": "kim.new@example.org", "send_email": false}),
    )
    .await
    .assert_detail(400, "User already exists");
    assert_eq!(
        t.get_as(&t.admin, "/users?username=kim-twin").await.json()["total"],
        0
    );
}
