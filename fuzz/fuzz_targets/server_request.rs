//! Request decoding of the API server, through the router without a socket: bodies of every
//! JSON route (node POST/PUT/PATCH, hierarchy, batch, publish, push, key/value, telemetry,
//! groups, accept-invite, acks), query strings of the find routes, raw paths, and the `Authorization` header (JWT
//! decoding). Invariants: no panic, never a 5xx, and every 4xx carries a JSON `detail`.
//!
//! Input layout: byte 0 picks the route; the rest is split at the first NUL into the variable
//! part (path id / query string / token) and the body.
#![no_main]

use std::sync::{Arc, OnceLock};

use kernelci::events::LocalBus;
use kernelci::models::{ObjectId, User};
use kernelci::store::{NodeStore, SqliteStore};
use kernelci_server::App;
use kernelci_server::config::ServerConfig;
use libfuzzer_sys::fuzz_target;

struct World {
    rt: tokio::runtime::Runtime,
    app: Arc<App>,
    token: String,
    node: String,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(dir.path().join("fuzz.sqlite3")).expect("store");
        // No password hashing here (argon2 without optimisation takes minutes): the admin is
        // stored directly and its token signed by the app.
        let config = ServerConfig::for_tests();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let app = App::new(config, Arc::new(store.clone()), Arc::new(store.clone()), Arc::new(LocalBus::new())).expect("app");
        rt.block_on(app.bootstrap()).expect("bootstrap");
        let admin = User {
            id: ObjectId::new(),
            email: "admin@example.org".into(),
            hashed_password: "not-a-hash".into(),
            is_active: true,
            is_superuser: true,
            is_verified: true,
            username: "admin".into(),
            groups: vec![],
        };
        rt.block_on(store.insert_user(admin.clone())).expect("admin");
        let (token, _) = app.auth.login_token(&admin, 3600).expect("token");
        let filter = kernelci_server::routes(app.clone());
        let node = rt.block_on(
            warp::test::request()
                .method("POST")
                .path("/latest/node")
                .header("authorization", format!("Bearer {token}"))
                .body(r#"{"kind":"checkout","name":"fuzz","path":["checkout"],"data":{"kernel_revision":{"tree":"t","url":"https://x.org/t.git","branch":"b","commit":"c"}}}"#)
                .reply(&filter),
        );
        let v: serde_json::Value = serde_json::from_slice(node.body()).expect("node json");
        let node = v["id"].as_str().expect("node id").to_owned();
        World { rt, app, token, node, _dir: dir }
    })
}

fn enc(s: &str) -> String {
    // Keep the fuzzed text inside one path segment / the query string.
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn enc_query(s: &str) -> String {
    // The query string keeps its structure characters (`&`, `=`, `%`, `+`); the rest is
    // percent-encoded as a client would.
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z'
            | b'A'..=b'Z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'~'
            | b'&'
            | b'='
            | b'%'
            | b'+' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let (var, body) = match rest.iter().position(|b| *b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let var = String::from_utf8_lossy(var).into_owned();
    let node = &w.node;
    let mut auth = Some(w.token.clone());
    let (method, path): (&str, String) = match pick % 20 {
        0 => ("POST", "/latest/node".into()),
        1 => ("PUT", format!("/latest/node/{node}")),
        2 => ("PATCH", format!("/latest/node/{node}")),
        3 => ("PUT", format!("/latest/nodes/{node}")),
        4 => ("PUT", "/latest/batch/nodeset".into()),
        5 => ("GET", format!("/latest/nodes?{}", enc_query(&var))),
        6 => ("GET", format!("/latest/count?{}", enc_query(&var))),
        7 => ("GET", format!("/latest/events?{}", enc_query(&var))),
        8 => ("GET", format!("/latest/nodes/fast?{}", enc_query(&var))),
        9 => ("POST", format!("/latest/publish/{}", enc(&var))),
        10 => ("POST", "/latest/push/fuzz".into()),
        11 => ("POST", format!("/latest/kv/ns/{}", enc(&var))),
        12 => ("POST", "/latest/telemetry".into()),
        13 => ("GET", format!("/latest/telemetry?{}", enc_query(&var))),
        14 => ("POST", "/latest/user/accept-invite".into()),
        // (Invites and PATCH /user/me with a password hash one with argon2: too slow here.)
        15 => ("POST", "/latest/user-groups".into()),
        16 => ("POST", format!("/latest/ack/{}", enc(&var))),
        // The bearer token itself is the input: JWT decoding and the claim checks.
        17 => {
            auth = Some(var.clone());
            ("GET", "/latest/whoami".into())
        }
        18 => ("GET", format!("/latest/node/{}", enc(&var))),
        // A raw path (anything a client can put in a request line), no token.
        _ => {
            auth = None;
            let p: String = var
                .chars()
                .filter(|c| c.is_ascii_graphic() && *c != '#')
                .collect();
            ("GET", format!("/{}", p.trim_start_matches('/')))
        }
    };
    // What a client cannot send (an invalid request target) never reaches a server.
    if path.parse::<warp::http::Uri>().is_err() {
        return;
    }
    let mut req = warp::test::request()
        .method(method)
        .path(&path)
        .body(body.to_vec());
    if let Some(t) = auth {
        // Header values must be visible ASCII: drop what a client could not send.
        let t: String = t
            .chars()
            .filter(|c| c.is_ascii_graphic() || *c == ' ')
            .collect();
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if pick % 20 == 14 || pick % 20 == 15 || pick % 20 == 16 {
        req = req.header("content-type", "application/json");
    }
    let filter = kernelci_server::routes(w.app.clone());
    let resp = w.rt.block_on(req.reply(&filter));
    let status = resp.status().as_u16();
    assert!(
        status < 500,
        "{method} {path}: {status}: {:?}",
        String::from_utf8_lossy(resp.body())
    );
    if (400..500).contains(&status) && path.starts_with("/latest/") && status != 405 {
        let v: serde_json::Value = serde_json::from_slice(resp.body())
            .unwrap_or_else(|e| panic!("{method} {path}: {status} body not JSON ({e})"));
        assert!(
            v.get("detail").is_some(),
            "{method} {path}: {status} without detail: {v}"
        );
    }
});
