//! The access matrix (issue 11, api spec §1.3 and §5): every route of the server × every kind
//! of caller, with the expected status, generated from ONE table ([`TABLE`]) and run against
//! the real `kernelci-server` binary over loopback.
//!
//! Callers: anonymous (no header), a user (`alice`, owner of the nodes, subscriptions and
//! tokens the rows act on), another user (`bob`), a group member (`carol`, in the group the
//! nodes name in `user_groups`), an admin, and four bad tokens carrying alice's identity:
//! expired, forged (signed with a wrong key), `alg: none`, and revoked.
//!
//! The rows must name every entry of the server's route table (`kernelci_server::table`, which
//! drives the router and `/openapi.json`), one row each, with the access rule the entry
//! declares; a new route without a row, or a row whose rule disagrees with the entry, fails
//! this test.
//!
//! Set `KCI_ACCESS_MATRIX_OUT=<file>` to write the matrix as a Markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reliability_support;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use jsonwebtoken::{EncodingKey, Header, encode};
use kernelci_server::table::{self, Access};
use reliability_support::{ADMIN_PASSWORD, Body, Http, SECRET, ServerProc, ServerSpec, node};
use serde_json::{Value, json};

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    User,
    Other,
    Member,
    Admin,
    Expired,
    Forged,
    AlgNone,
    Revoked,
}

const WHO: [Who; 9] = [
    Who::Anonymous,
    Who::User,
    Who::Other,
    Who::Member,
    Who::Admin,
    Who::Expired,
    Who::Forged,
    Who::AlgNone,
    Who::Revoked,
];

impl Who {
    fn label(self) -> &'static str {
        match self {
            Who::Anonymous => "anonymous",
            Who::User => "user",
            Who::Other => "other user",
            Who::Member => "group member",
            Who::Admin => "admin",
            Who::Expired => "expired",
            Who::Forged => "forged",
            Who::AlgNone => "alg none",
            Who::Revoked => "revoked",
        }
    }
    /// A caller whose token is not accepted (or who has none).
    fn unauthenticated(self) -> bool {
        matches!(
            self,
            Who::Anonymous | Who::Expired | Who::Forged | Who::AlgNone | Who::Revoked
        )
    }
}

/// The access rule of a row: what each caller gets.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// Anyone, token or not, valid or not: `ok`.
    Public(u16),
    /// Any active user: `ok`; no valid token: 401.
    User(u16),
    /// A verified active user (all ours are verified): as `User`.
    Verified(u16),
    /// An admin: `ok`; other users 403; no valid token 401.
    Admin(u16),
    /// Node edit permission (api spec §5): owner, group member and admin `ok`; another user
    /// 403 "Unauthorized to complete the operation" (upstream: 401); no valid token 401.
    NodeEdit(u16),
    /// A subscription of the user: only its owner `ok`; any other user (admin too) 403
    /// "Subscription N not owned by U" (upstream: 500); no valid token 401.
    SubOwner(u16),
    /// An API token of the user: its owner and admins `ok`; others 404; no valid token 401.
    TokenOwner(u16),
}

impl Rule {
    fn expect(self, who: Who) -> u16 {
        match self {
            Rule::Public(ok) => ok,
            _ if who.unauthenticated() => 401,
            Rule::User(ok) | Rule::Verified(ok) => ok,
            Rule::Admin(ok) => {
                if who == Who::Admin {
                    ok
                } else {
                    403
                }
            }
            Rule::NodeEdit(ok) => {
                if who == Who::Other {
                    403
                } else {
                    ok
                }
            }
            Rule::SubOwner(ok) => {
                if who == Who::User {
                    ok
                } else {
                    403
                }
            }
            Rule::TokenOwner(ok) => {
                if matches!(who, Who::User | Who::Admin) {
                    ok
                } else {
                    404
                }
            }
        }
    }
}

/// What a row needs before the request: a fresh object to act on, or a body.
#[derive(Debug, Clone, Copy)]
enum Fx {
    /// No body.
    Nothing,
    /// A JSON body (text).
    Json(&'static str),
    /// The login form of alice.
    LoginForm,
    /// The update-password form of dave (a user no test logs in as), password unchanged.
    UpdatePasswordForm,
    /// A fresh invite (username per cell).
    Invite,
    /// A fresh invite token, accepted with a password.
    AcceptInvite,
    /// A fresh user to delete or patch (`{id}`), with a JSON body.
    Victim(&'static str),
    /// A fresh group (`{id}`).
    Group,
    /// A fresh node of alice's with `user_groups: ["team"]` (`{id}`), with a body:
    /// `put` (the node), `patch`, `hierarchy`, `batch`.
    AliceNode(&'static str),
    /// A fresh subscription of alice's (`{id}`) with an event waiting; the body for `/ack`.
    AliceSub(bool),
    /// A fresh API token of alice's (`{id}` = its jti).
    AliceTokenId,
    /// An item waiting on a fresh list (`{id}`).
    ListItem,
    /// Alice's user id (`{id}`).
    AliceId,
    /// A unique channel or key (`{id}`) with a JSON body.
    Unique(&'static str),
}

/// One row: method, path (below `/latest`, `{id}` filled by the fixture), what it needs, who
/// may call it.
struct Row(&'static str, &'static str, Fx, Rule);

/// THE table: every route × the rule that decides every caller's status.
const TABLE: &[Row] = &[
    Row("GET", "/", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/openapi.json", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/docs", Fx::Nothing, Rule::Public(200)),
    Row("POST", "/user/login", Fx::LoginForm, Rule::Public(200)),
    Row("POST", "/user/logout", Fx::Nothing, Rule::Verified(204)),
    Row(
        "POST",
        "/user/register",
        Fx::Json(r#"{"email":"r@example.org","password":"p","username":"r"}"#),
        // Disabled for everyone; an admin learns it with a 404 (upstream).
        Rule::Admin(404),
    ),
    Row("GET", "/user/invite", Fx::Nothing, Rule::Public(200)),
    Row("POST", "/user/invite", Fx::Invite, Rule::Admin(200)),
    Row("GET", "/user/accept-invite", Fx::Nothing, Rule::Public(200)),
    Row(
        "POST",
        "/user/accept-invite",
        Fx::AcceptInvite,
        Rule::Public(200),
    ),
    Row("GET", "/user/invite/url", Fx::Nothing, Rule::Admin(200)),
    Row(
        "POST",
        "/user/forgot-password",
        Fx::Json(r#"{"email":"nobody@example.org"}"#),
        Rule::Public(202),
    ),
    Row(
        "POST",
        "/user/reset-password",
        Fx::Json(r#"{"token":"not-a-token","password":"x"}"#),
        Rule::Public(400),
    ),
    Row(
        "POST",
        "/user/update-password",
        Fx::UpdatePasswordForm,
        Rule::Public(200),
    ),
    Row(
        "POST",
        "/user/tokens",
        Fx::Json(r#"{"name":"m"}"#),
        Rule::User(200),
    ),
    Row(
        "DELETE",
        "/user/tokens/{id}",
        Fx::AliceTokenId,
        Rule::TokenOwner(204),
    ),
    Row("GET", "/whoami", Fx::Nothing, Rule::Verified(200)),
    Row("PATCH", "/user/me", Fx::Json("{}"), Rule::User(200)),
    Row("GET", "/user/{id}", Fx::AliceId, Rule::User(200)),
    Row("DELETE", "/user/{id}", Fx::Victim(""), Rule::Admin(200)),
    Row("PATCH", "/user/{id}", Fx::Victim("{}"), Rule::Admin(200)),
    Row("GET", "/users", Fx::Nothing, Rule::User(200)),
    Row("GET", "/user-groups", Fx::Nothing, Rule::Admin(200)),
    Row(
        "POST",
        "/user-groups",
        Fx::Unique("group"),
        Rule::Admin(200),
    ),
    Row("GET", "/user-groups/{id}", Fx::Group, Rule::Admin(200)),
    Row("DELETE", "/user-groups/{id}", Fx::Group, Rule::Admin(204)),
    Row("GET", "/node/{id}", Fx::AliceNode(""), Rule::Public(200)),
    Row("GET", "/nodes", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/nodes/fast", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/count", Fx::Nothing, Rule::Public(200)),
    Row(
        "POST",
        "/node",
        Fx::Json(r#"{"kind":"test","name":"m","path":["checkout","m"]}"#),
        Rule::User(200),
    ),
    Row(
        "PUT",
        "/node/{id}",
        Fx::AliceNode("put"),
        Rule::NodeEdit(200),
    ),
    Row(
        "PATCH",
        "/node/{id}",
        Fx::AliceNode("patch"),
        Rule::NodeEdit(200),
    ),
    // Items the caller may not edit are skipped (the count says so), never refused.
    Row(
        "PUT",
        "/batch/nodeset",
        Fx::AliceNode("batch"),
        Rule::User(200),
    ),
    Row(
        "PUT",
        "/nodes/{id}",
        Fx::AliceNode("hierarchy"),
        Rule::NodeEdit(200),
    ),
    Row("GET", "/events", Fx::Nothing, Rule::Public(200)),
    Row("POST", "/subscribe/{id}", Fx::Unique(""), Rule::User(200)),
    Row(
        "POST",
        "/unsubscribe/{id}",
        Fx::AliceSub(false),
        Rule::SubOwner(200),
    ),
    Row(
        "GET",
        "/listen/{id}",
        Fx::AliceSub(false),
        Rule::SubOwner(200),
    ),
    Row("POST", "/ack/{id}", Fx::AliceSub(true), Rule::SubOwner(200)),
    Row(
        "POST",
        "/publish/{id}",
        Fx::Unique(r#"{"data":{"x":1}}"#),
        Rule::User(200),
    ),
    Row(
        "POST",
        "/push/{id}",
        Fx::Unique(r#"{"data":{"x":1}}"#),
        Rule::User(200),
    ),
    Row("GET", "/pop/{id}", Fx::ListItem, Rule::User(200)),
    Row("GET", "/stats/subscriptions", Fx::Nothing, Rule::Admin(200)),
    Row("GET", "/kv/ns/{id}", Fx::Unique(""), Rule::User(200)),
    Row(
        "POST",
        "/kv/ns/{id}",
        Fx::Unique(r#""value""#),
        Rule::User(200),
    ),
    Row("DELETE", "/kv/ns/{id}", Fx::Unique(""), Rule::User(200)),
    Row(
        "POST",
        "/telemetry",
        Fx::Json(r#"[{"kind":"job_submission","runtime":"shell"}]"#),
        Rule::User(200),
    ),
    Row("GET", "/telemetry", Fx::Nothing, Rule::Public(200)),
    Row(
        "GET",
        "/telemetry/stats?group_by=runtime",
        Fx::Nothing,
        Rule::Public(200),
    ),
    Row(
        "GET",
        "/telemetry/anomalies",
        Fx::Nothing,
        Rule::Public(200),
    ),
    Row("GET", "/viewer", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/dashboard", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/manage", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/analytics", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/stats", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/icons/ok.png", Fx::Nothing, Rule::Public(200)),
    Row(
        "GET",
        "/static/css/viewer.css",
        Fx::Nothing,
        Rule::Public(200),
    ),
    Row(
        "GET",
        "/static/js/viewer.js",
        Fx::Nothing,
        Rule::Public(200),
    ),
    Row("GET", "/metrics", Fx::Nothing, Rule::Public(200)),
    // The viewer's data: public reads. Alice's node is a test: the revision routes answer
    // "not a checkout" (400), the log route "no log artifact" (404).
    Row("GET", "/viewer/api/trees", Fx::Nothing, Rule::Public(200)),
    Row(
        "GET",
        "/viewer/api/checkout/{id}",
        Fx::AliceNode(""),
        Rule::Public(400),
    ),
    Row(
        "GET",
        "/viewer/api/checkout/{id}/results",
        Fx::AliceNode(""),
        Rule::Public(400),
    ),
    Row(
        "GET",
        "/viewer/api/checkout/{id}/history",
        Fx::AliceNode(""),
        Rule::Public(400),
    ),
    Row(
        "GET",
        "/viewer/api/result/{id}",
        Fx::AliceNode(""),
        Rule::Public(200),
    ),
    Row(
        "GET",
        "/viewer/api/log/{id}",
        Fx::AliceNode(""),
        Rule::Public(404),
    ),
    Row("GET", "/viewer/api/log", Fx::Nothing, Rule::Public(400)),
    Row(
        "GET",
        "/viewer/api/compare/{id}/{id}",
        Fx::AliceNode(""),
        Rule::Public(400),
    ),
    Row("GET", "/viewer/api/health", Fx::Nothing, Rule::Public(200)),
    // The viewer's pages: public; errors are HTML pages with the error's status.
    Row("GET", "/viewer/trees", Fx::Nothing, Rule::Public(200)),
    Row(
        "GET",
        "/viewer/tree/no-such-tree/master",
        Fx::Nothing,
        Rule::Public(404),
    ),
    Row(
        "GET",
        "/viewer/checkout/{id}",
        Fx::AliceNode(""),
        Rule::Public(400),
    ),
    Row(
        "GET",
        "/viewer/result/{id}",
        Fx::AliceNode(""),
        Rule::Public(200),
    ),
    Row("GET", "/viewer/log", Fx::Nothing, Rule::Public(400)),
    Row(
        "GET",
        "/viewer/log/{id}",
        Fx::AliceNode(""),
        Rule::Public(404),
    ),
    Row(
        "GET",
        "/viewer/compare/{id}",
        Fx::AliceNode(""),
        Rule::Public(400),
    ),
    Row(
        "GET",
        "/viewer/compare/{id}/{id}",
        Fx::AliceNode(""),
        Rule::Public(400),
    ),
    Row("GET", "/viewer/health", Fx::Nothing, Rule::Public(200)),
    Row(
        "GET",
        "/viewer/node/{id}",
        Fx::AliceNode(""),
        Rule::Public(200),
    ),
    Row("GET", "/viewer/nodes", Fx::Nothing, Rule::Public(200)),
    Row("GET", "/viewer/manage", Fx::Nothing, Rule::Public(200)),
    // The token is in the form, not the header: without one, 401 for everyone.
    Row("POST", "/viewer/manage", Fx::Nothing, Rule::Public(401)),
];

/// The test's world: the server, the callers' long-lived tokens, the bad tokens.
struct World {
    http: Http,
    admin: String,
    alice: String,
    bob: String,
    carol: String,
    alice_id: String,
    expired: String,
    forged: String,
    alg_none: String,
    revoked: String,
    counter: std::cell::Cell<u64>,
}

fn b64url(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let mut b = [0u8; 3];
        b[..n].copy_from_slice(chunk);
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=n {
            out.push(A[((v >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl World {
    async fn new(http: Http) -> World {
        let admin = http.login("admin", ADMIN_PASSWORD).await;
        http.call(
            "POST",
            "/latest/user-groups",
            Some(&admin),
            Body::Json(json!({"name": "team"})),
        )
        .await;
        let alice_id = http.create_user(&admin, "alice", &[]).await;
        http.create_user(&admin, "bob", &[]).await;
        http.create_user(&admin, "carol", &["team"]).await;
        http.create_user(&admin, "dave", &[]).await;
        let alice = http.login("alice", "alice-pass").await;
        let bob = http.login("bob", "bob-pass").await;
        let carol = http.login("carol", "carol-pass").await;
        let (expired, _) = http.api_token(&alice, Some(1)).await;
        let (revoked, jti) = http.api_token(&alice, None).await;
        let r = http
            .call(
                "DELETE",
                &format!("/latest/user/tokens/{jti}"),
                Some(&alice),
                Body::None,
            )
            .await;
        assert_eq!(r.status, 204, "revoke: {}", r.text);
        let claims = json!({"sub": alice_id, "aud": ["fastapi-users:auth"], "exp": now() + 3600});
        let forged = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"not-the-server-secret"),
        )
        .unwrap();
        // The same claims the server would sign, with `alg: none` and no signature.
        let alg_none = format!(
            "{}.{}.",
            b64url(br#"{"alg":"none","typ":"JWT"}"#),
            b64url(claims.to_string().as_bytes())
        );
        // Sanity: the same claims signed with the right key are accepted, so the refusals
        // below are about the key, the algorithm, the expiry and revocation only.
        let genuine = encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let r = http
            .call("GET", "/latest/whoami", Some(&genuine), Body::None)
            .await;
        assert_eq!(r.status, 200, "a genuine token: {}", r.text);
        assert_eq!(r.json()["username"], "alice");
        // Let the 1-second token expire.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        World {
            http,
            admin,
            alice,
            bob,
            carol,
            alice_id,
            expired,
            forged,
            alg_none,
            revoked,
            counter: std::cell::Cell::new(0),
        }
    }

    fn unique(&self) -> u64 {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        n
    }

    async fn ok(&self, method: &str, path: &str, token: &str, body: Value) -> Value {
        let r = self
            .http
            .call(method, path, Some(token), Body::Json(body))
            .await;
        assert!(
            r.status < 300,
            "fixture {method} {path}: {} {}",
            r.status,
            r.text
        );
        r.json()
    }

    /// The token the caller presents (a fresh one for valid callers: `/user/logout` revokes
    /// the token it is called with).
    async fn token(&self, who: Who) -> Option<String> {
        let master = match who {
            Who::Anonymous => return None,
            Who::Expired => return Some(self.expired.clone()),
            Who::Forged => return Some(self.forged.clone()),
            Who::AlgNone => return Some(self.alg_none.clone()),
            Who::Revoked => return Some(self.revoked.clone()),
            Who::User => &self.alice,
            Who::Other => &self.bob,
            Who::Member => &self.carol,
            Who::Admin => &self.admin,
        };
        Some(self.http.api_token(master, None).await.0)
    }

    /// Prepares a row's fixture: the path and the body.
    async fn prepare(&self, row: &Row) -> (String, Body) {
        let n = self.unique();
        let fill = |id: &str| format!("/latest{}", row.1.replace("{id}", id));
        let json = |s: &str| {
            if s.is_empty() {
                Body::None
            } else {
                Body::Json(serde_json::from_str(s).expect("fixture json"))
            }
        };
        match row.2 {
            Fx::Nothing => (fill(""), Body::None),
            Fx::Json(s) => (fill(""), json(s)),
            Fx::LoginForm => (
                fill(""),
                Body::Form(vec![
                    ("username".into(), "alice".into()),
                    ("password".into(), "alice-pass".into()),
                ]),
            ),
            Fx::UpdatePasswordForm => (
                fill(""),
                Body::Form(vec![
                    ("username".into(), "dave".into()),
                    ("password".into(), "dave-pass".into()),
                    ("new_password".into(), "dave-pass".into()),
                ]),
            ),
            Fx::Invite => (
                fill(""),
                Body::Json(json!({"username": format!("inv{n}"),
                    "email": format!("inv{n}@example.org"), "send_email": false})),
            ),
            Fx::AcceptInvite => {
                let v = self
                    .ok(
                        "POST",
                        "/latest/user/invite",
                        &self.admin,
                        json!({"username": format!("acc{n}"), "email": format!("acc{n}@example.org"),
                           "send_email": false, "return_token": true}),
                    )
                    .await;
                (
                    fill(""),
                    Body::Json(json!({"token": v["token"], "password": "pw"})),
                )
            }
            Fx::Victim(body) => {
                let v = self
                    .ok(
                        "POST",
                        "/latest/user/invite",
                        &self.admin,
                        json!({"username": format!("victim{n}"),
                               "email": format!("victim{n}@example.org"), "send_email": false}),
                    )
                    .await;
                (fill(v["user"]["id"].as_str().unwrap()), json(body))
            }
            Fx::Group => {
                let v = self
                    .ok(
                        "POST",
                        "/latest/user-groups",
                        &self.admin,
                        json!({"name": format!("g{n}")}),
                    )
                    .await;
                (fill(v["id"].as_str().unwrap()), Body::None)
            }
            Fx::AliceNode(kind) => {
                let mut body = node(&format!("node{n}"));
                body["user_groups"] = json!(["team"]);
                let v = self.ok("POST", "/latest/node", &self.alice, body).await;
                let id = v["id"].as_str().unwrap().to_owned();
                let body = match kind {
                    "put" => {
                        let mut put = v.clone();
                        put["result"] = json!("pass");
                        Body::Json(put)
                    }
                    "patch" => Body::Json(json!({"result": "pass"})),
                    "hierarchy" => Body::Json(json!({"node": v, "child_nodes": [
                        {"node": node(&format!("child{n}")), "child_nodes": []}]})),
                    "batch" => Body::Json(json!({"nodes": [id],
                        "field": "processed_by_kcidb_bridge", "value": "true"})),
                    _ => Body::None,
                };
                (fill(&id), body)
            }
            Fx::AliceSub(ack) => {
                let ch = format!("ch{n}");
                let sub = self
                    .ok(
                        "POST",
                        &format!("/latest/subscribe/{ch}?promisc=true"),
                        &self.alice,
                        Value::Null,
                    )
                    .await;
                self.ok(
                    "POST",
                    &format!("/latest/publish/{ch}"),
                    &self.alice,
                    json!({"data": {"n": n}}),
                )
                .await;
                let id = sub["id"].as_u64().unwrap().to_string();
                let body = if ack {
                    Body::Json(json!({"sequence_id": 1}))
                } else {
                    Body::None
                };
                (fill(&id), body)
            }
            Fx::AliceTokenId => {
                let (_, jti) = self.http.api_token(&self.alice, None).await;
                (fill(&jti), Body::None)
            }
            Fx::ListItem => {
                let list = format!("list{n}");
                self.ok(
                    "POST",
                    &format!("/latest/push/{list}"),
                    &self.alice,
                    json!({"data": {"n": n}}),
                )
                .await;
                (fill(&list), Body::None)
            }
            Fx::AliceId => (fill(&self.alice_id), Body::None),
            Fx::Unique(body) => {
                let body = if body == "group" {
                    Body::Json(json!({"name": format!("ug{n}")}))
                } else {
                    json(body)
                };
                (fill(&format!("u{n}")), body)
            }
        }
    }
}

/// The route template a row's path stands for (to compare with the route table).
fn template(path: &str) -> String {
    let segs: Vec<String> = path
        .split('/')
        .map(|s| {
            if s.starts_with('{') {
                "{}".to_owned()
            } else {
                s.to_owned()
            }
        })
        .collect();
    segs.join("/")
}

fn route_key(method: &str, path: &str) -> String {
    let t = template(path.split('?').next().unwrap_or_default());
    // Concrete file names in the table stand for their route's parameter.
    let t = t
        .replace("/icons/ok.png", "/icons/{}")
        .replace("/static/css/viewer.css", "/static/css/{}")
        .replace("/static/js/viewer.js", "/static/js/{}")
        .replace("/kv/ns/{}", "/kv/{}/{}")
        .replace("/viewer/tree/no-such-tree/master", "/viewer/tree/{}/{}");
    format!("{method} {t}")
}

/// Whether a row's rule is the access an entry declares.
fn rule_is(rule: Rule, access: Access) -> bool {
    matches!(
        (rule, access),
        (Rule::Public(_), Access::Public)
            | (
                Rule::User(_) | Rule::NodeEdit(_) | Rule::SubOwner(_) | Rule::TokenOwner(_),
                Access::User
            )
            | (Rule::Verified(_), Access::Verified)
            | (Rule::Admin(_), Access::Superuser)
    )
}

#[test]
fn table_names_every_route() {
    let table: BTreeSet<String> = TABLE.iter().map(|r| route_key(r.0, r.1)).collect();
    let routes: BTreeSet<String> = table::routes()
        .map(|(_, r)| route_key(r.method, r.path))
        .collect();
    let missing: Vec<_> = routes.difference(&table).collect();
    let extra: Vec<_> = table.difference(&routes).collect();
    assert!(missing.is_empty(), "routes without a row: {missing:?}");
    assert!(extra.is_empty(), "rows without a route: {extra:?}");
    assert_eq!(TABLE.len(), routes.len(), "one row per route");
    // The access each entry declares (and documents) is the rule the matrix holds it to.
    for row in TABLE {
        let (_, entry) = table::routes()
            .find(|(_, r)| route_key(r.method, r.path) == route_key(row.0, row.1))
            .unwrap();
        assert!(
            rule_is(row.3, entry.access),
            "{} {}: the table says {:?}, the row {:?}",
            row.0,
            row.1,
            entry.access,
            row.3
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_for_every_caller() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(ServerSpec::sqlite(&dir.path().join("db.sqlite3")));
    let http = Http::new(&server.url(), Duration::from_secs(20));
    let w = World::new(http).await;

    let mut failures = Vec::new();
    let mut md = String::from("| route |");
    for who in WHO {
        let _ = write!(md, " {} |", who.label());
    }
    md.push_str("\n|---|");
    for _ in WHO {
        md.push_str("---|");
    }
    md.push('\n');
    let mut cells = 0;
    for row in TABLE {
        let _ = write!(md, "| `{} {}` |", row.0, row.1);
        for who in WHO {
            let (path, body) = w.prepare(row).await;
            let token = w.token(who).await;
            let r = w
                .http
                .send(row.0, &path, token.as_deref(), &body)
                .await
                .unwrap_or_else(|e| panic!("{} {path} as {}: {e}", row.0, who.label()));
            let want = row.3.expect(who);
            cells += 1;
            let mark = if r.status == want { "" } else { " ✗" };
            let _ = write!(md, " {}{mark} |", r.status);
            if r.status != want {
                failures.push(format!(
                    "{} {} as {}: got {} want {want}: {}",
                    row.0,
                    row.1,
                    who.label(),
                    r.status,
                    r.text.chars().take(200).collect::<String>()
                ));
            }
            // The refusals are upstream's bodies (a page's refusal is its HTML page: the
            // manage form reads its token from the form, not the header).
            if r.status == 401 && want == 401 && !matches!(row.3, Rule::Public(_)) {
                let detail = r.json()["detail"].clone();
                let ok = detail == "Unauthorized";
                if !ok {
                    failures.push(format!(
                        "{} {} as {}: 401 body {}",
                        row.0,
                        row.1,
                        who.label(),
                        r.text
                    ));
                }
            }
            if r.status == 403 {
                // Admin-only routes say `Forbidden`; a node another user may not edit and a
                // subscription of another user say why.
                let detail = r.json()["detail"].clone();
                let text = detail.as_str().unwrap_or_default();
                let ok = match row.3 {
                    Rule::NodeEdit(_) => text == "Unauthorized to complete the operation",
                    Rule::SubOwner(_) => {
                        text.starts_with("Subscription ") && text.contains(" not owned by ")
                    }
                    _ => text == "Forbidden",
                };
                assert!(
                    ok,
                    "{} {} as {}: 403 body {}",
                    row.0,
                    row.1,
                    who.label(),
                    r.text
                );
            }
        }
        md.push('\n');
    }
    // Batch: another user's items are skipped, not refused; the owner's are counted.
    let (path, body) = w
        .prepare(TABLE.iter().find(|r| r.1 == "/batch/nodeset").unwrap())
        .await;
    let as_bob = w
        .http
        .send("PUT", &path, Some(&w.bob), &body)
        .await
        .unwrap();
    assert_eq!(as_bob.json(), json!(0), "bob edits none of alice's nodes");
    let as_alice = w
        .http
        .send("PUT", &path, Some(&w.alice), &body)
        .await
        .unwrap();
    assert_eq!(as_alice.json(), json!(1), "alice edits hers");
    // The forged and alg:none tokens name alice: nothing they did may have reached her data.
    let whoami = w
        .http
        .call("GET", "/latest/whoami", Some(&w.alice), Body::None)
        .await;
    assert_eq!(whoami.status, 200);

    if let Ok(out) = std::env::var("KCI_ACCESS_MATRIX_OUT") {
        std::fs::write(&out, &md).unwrap();
    }
    eprintln!(
        "access matrix: {cells} cells, {} mismatches\n{md}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {cells} cells differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
    drop(server);
}
