//! Node routes (api spec §3.3, §3.4, §4, §5): create, get, find, count, PUT/PATCH with the
//! state machine, batch nodeset, hierarchy submission, and the authorization matrix.

mod common;

use common::{TestApp, app, node};
use kernelci::models::ObjectId;
use serde_json::{Value, json};

const KEYS: [&str; 23] = [
    "id",
    "kind",
    "name",
    "path",
    "group",
    "parent",
    "state",
    "result",
    "artifacts",
    "data",
    "debug",
    "jobfilter",
    "platform_filter",
    "created",
    "updated",
    "timeout",
    "holdoff",
    "owner",
    "submitter",
    "treeid",
    "user_groups",
    "processed_by_kcidb_bridge",
    "retry_counter",
];

async fn events(t: &TestApp, q: &str) -> Vec<Value> {
    t.get(&format!("/events?{q}"))
        .await
        .json()
        .as_array()
        .expect("array")
        .clone()
}

#[tokio::test]
async fn create_and_get() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let body = json!({"kind": "checkout", "name": "co", "path": ["co"], "owner": "someone-else",
                      "data": {"extra": 1}, "artifacts": {"tarball": "https://x.org"},
                      "created": "2025-01-01T00:00:00", "state": "available", "treeid": "t1"});
    assert_eq!(t.req("POST", "/node").json(&body).send().await.status, 401);
    let n = t.create_node(&user, body.clone()).await;
    for k in KEYS {
        assert!(n.get(k).is_some(), "missing {k} in {n}");
    }
    assert_eq!(n.as_object().unwrap().len(), 23, "{n}");
    assert_eq!(n["owner"], "alice", "owner forced to the caller");
    assert_eq!(n["state"], "available");
    assert_eq!(n["data"]["extra"], 1);
    assert_eq!(n["artifacts"]["tarball"], "https://x.org/");
    assert_eq!(n["treeid"], "t1");
    assert_eq!(n["retry_counter"], 0);
    assert_eq!(n["processed_by_kcidb_bridge"], false);
    assert!(
        n["created"]
            .as_str()
            .unwrap()
            .starts_with("2025-01-01T00:00:00")
    );
    let id = n["id"].as_str().unwrap();
    assert_eq!(id.len(), 24);
    let g = t.get(&format!("/node/{id}")).await;
    assert_eq!(g.status, 200);
    assert_eq!(g.json()["name"], "co");
    let r = t.get(&format!("/node/{}", ObjectId::new())).await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    t.get("/node/zz").await.assert_detail(
        400,
        "'zz' is not a valid ObjectId, it must be a 12-byte input or a 24-character hex string",
    );
    // Created event: 11 keys, owner attribute.
    let ev = events(&t, &format!("node_id={id}")).await;
    assert_eq!(ev.len(), 1);
    let d = ev[0]["data"].as_object().unwrap();
    let keys: Vec<&str> = d.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "op",
            "id",
            "kind",
            "name",
            "path",
            "group",
            "state",
            "result",
            "owner",
            "data",
            "is_hierarchy"
        ]
    );
    assert_eq!(d["op"], "created");
    assert_eq!(d["is_hierarchy"], false);
    assert_eq!(ev[0]["owner"], "alice");
}

#[tokio::test]
async fn create_validation() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let post = |b: Value| {
        let t = &t;
        let user = user.clone();
        async move { t.post_as(&user, "/node", &b).await }
    };
    // 422s.
    for bad in [
        json!({"kind": "test", "path": []}),
        json!({"kind": "test", "name": "x"}),
        json!({"kind": "test", "name": 5, "path": []}),
        json!({"kind": "test", "name": "x", "path": [], "state": "bogus"}),
        json!({"kind": "test", "name": "x", "path": [], "result": "bogus"}),
        json!({"kind": "test", "name": "x", "path": [], "artifacts": {"a": "ftp://x"}}),
        json!({"kind": "test", "name": "x", "path": [], "artifacts": {"a": "relative/path"}}),
        json!({"kind": "test", "name": "x", "path": [], "user_groups": ["a", "a"]}),
        json!({"kind": "test", "name": "x", "path": [], "parent": "zz"}),
        json!({"kind": "test", "name": "x", "path": [], "retry_counter": "1"}),
    ] {
        let r = post(bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text());
        assert!(r.detail().is_array(), "{}", r.text());
    }
    post(json!({"name": "x", "path": []}))
        .await
        .assert_detail(400, "Unsupported node kind: node");
    post(json!({"kind": "bogus", "name": "x", "path": []}))
        .await
        .assert_detail(400, "Unsupported node kind: bogus");
    let r = post(json!({"kind": "checkout", "name": "x", "path": [], "data": {"kernel_revision": {"tree": "t"}}})).await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.detail().as_str().unwrap().contains("validation error"),
        "{}",
        r.text()
    );
    let missing = ObjectId::new();
    post(json!({"kind": "test", "name": "x", "path": [], "parent": missing.to_hex()}))
        .await
        .assert_detail(404, &format!("Parent not found with id: {missing}"));
    post(json!({"kind": "test", "name": "x", "path": [], "user_groups": ["nogroup"]}))
        .await
        .assert_detail(400, "User group does not exist with name: nogroup");
    let fake = ObjectId::new().to_hex();
    post(json!({"kind": "test", "name": "x", "path": [], "id": fake}))
        .await
        .assert_detail(400, &format!("Object cannot be created with id: {fake}"));
    // Kernel version strings are coerced to ints on POST.
    let n = t
        .create_node(
            &user,
            json!({"kind": "checkout", "name": "v", "path": ["v"], "data": {"kernel_revision": {
                "tree": "mainline", "url": "https://git.kernel.org/x.git", "branch": "master", "commit": "abc",
                "version": {"version": "6", "patchlevel": "7", "sublevel": "1"}}}}),
        )
        .await;
    assert_eq!(n["data"]["kernel_revision"]["version"]["version"], 6);
    assert_eq!(n["data"]["kernel_revision"]["version"]["patchlevel"], 7);
}

#[tokio::test]
async fn find_count_fast() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let root = t.create_node(&user, node("checkout", "root")).await;
    let rid = root["id"].as_str().unwrap();
    for i in 0..5 {
        let mut n = node("kbuild", &format!("build-{i}"));
        n["parent"] = json!(rid);
        n["state"] = json!(if i < 2 { "done" } else { "running" });
        n["data"] = json!({"arch": if i % 2 == 0 { "x86_64" } else { "arm64" }});
        n["retry_counter"] = json!(i);
        t.create_node(&user, n).await;
    }
    let page = t.get("/nodes?limit=2&offset=1&kind=kbuild").await.json();
    assert_eq!(page["total"], 5);
    assert_eq!(
        (page["limit"].as_u64(), page["offset"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let d = t.get("/nodes").await.json();
    assert_eq!(
        (d["limit"].as_u64(), d["total"].as_u64()),
        (Some(50), Some(6))
    );
    t.get("/nodes?limit=0")
        .await
        .assert_422("greater_than_equal", json!(["query", "limit"]));
    t.get("/nodes?limit=abc")
        .await
        .assert_422("int_parsing", json!(["query", "limit"]));
    t.get("/nodes?offset=-1")
        .await
        .assert_422("greater_than_equal", json!(["query", "offset"]));

    let count = |q: &str| {
        let t = &t;
        let q = q.to_owned();
        async move {
            let r = t.get(&format!("/count?{q}")).await;
            assert_eq!(r.status, 200, "{q}: {}", r.text());
            r.json().as_u64().unwrap()
        }
    };
    assert_eq!(count("kind=kbuild").await, 5);
    assert_eq!(count("state__in=done,available").await, 2);
    assert_eq!(count("state__ne=done&kind=kbuild").await, 3);
    assert_eq!(count("data.arch=arm64").await, 2);
    assert_eq!(count("name__re=^build-[12]").await, 2);
    assert_eq!(count(&format!("parent={rid}")).await, 5);
    // Deliberately better: parent=null finds roots; operators on parent and retry_counter work.
    assert_eq!(count("parent=null").await, 1);
    assert_eq!(count(&format!("parent__ne={rid}")).await, 1);
    assert_eq!(count("retry_counter__gt=2").await, 2);
    assert_eq!(count("retry_counter=3").await, 1);
    assert_eq!(
        count("created__gt=2000-01-01&created__lt=2999-01-01T00:00:00Z").await,
        6
    );
    assert_eq!(count("result=null").await, 6);
    assert_eq!(count("processed_by_kcidb_bridge=false").await, 6);
    t.get("/count?created__gt=bad")
        .await
        .assert_detail(400, "Invalid isoformat string: 'bad'");
    assert_eq!(t.get("/count?parent=zz").await.status, 400);

    let fast = t.get("/nodes/fast?kind=kbuild&limit=2&offset=1").await;
    assert_eq!(fast.status, 200);
    assert_eq!(fast.json().as_array().unwrap().len(), 2);
    assert_eq!(
        t.get("/nodes/fast?kind=kbuild")
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        5
    );
    t.get("/nodes/fast?limit=x")
        .await
        .assert_detail(400, "invalid literal for int() with base 10: 'x'");
}

async fn put(t: &TestApp, token: &str, id: &str, body: Value) -> common::Reply {
    t.put_as(token, &format!("/node/{id}"), &body).await
}

#[tokio::test]
async fn put_full_replacement_and_transitions() {
    let t = app().await;
    t.create_group("grp").await;
    let user = t.user_token("alice", &["grp"]).await;
    let mut body = node("test", "t1");
    body["created"] = json!("2025-01-01T00:00:00");
    body["data"] = json!({"runtime": "shell"});
    body["user_groups"] = json!(["grp"]);
    body["submitter"] = json!("sub-1");
    let n = t.create_node(&user, body).await;
    let id = n["id"].as_str().unwrap().to_owned();

    // Order: bad JSON 422, no auth 401, bad id 400, missing 404.
    let r = t.req("PUT", &format!("/node/{id}")).raw("{").send().await;
    assert_eq!(r.status, 422);
    assert_eq!(
        t.req("PUT", &format!("/node/{id}"))
            .json(&json!({}))
            .send()
            .await
            .status,
        401
    );
    assert_eq!(put(&t, &user, "zz", json!({})).await.status, 400);
    let missing = ObjectId::new();
    put(&t, &user, &missing.to_hex(), json!({}))
        .await
        .assert_detail(404, &format!("Node not found with id: {missing}"));
    // Body validation comes after the existence check.
    assert_eq!(put(&t, &user, &id, json!({"name": 1})).await.status, 422);

    // Full replacement: omitted fields reset, identity kept.
    let r = put(
        &t,
        &user,
        &id,
        json!({"id": ObjectId::new().to_hex(), "kind": "job", "name": "t1-renamed", "path": ["x"],
               "state": "available", "owner": "mallory", "submitter": "evil", "user_groups": []}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let u = r.json();
    assert_eq!(u["id"], id.as_str(), "path id wins");
    assert_eq!(u["kind"], "job", "kind may change");
    assert_eq!(u["name"], "t1-renamed");
    assert_eq!(u["state"], "available");
    assert_eq!(u["owner"], "alice");
    assert_eq!(u["submitter"], "sub-1");
    assert_eq!(u["user_groups"], json!(["grp"]));
    assert_eq!(u["data"], json!({}), "data reset");
    // Deliberately better: a body without `created` keeps the stored creation time (upstream
    // reset it to now).
    assert_eq!(u["created"], n["created"], "created kept");
    assert_ne!(u["updated"], n["updated"]);
    // Updated event with previous_state/result.
    let ev = events(&t, &format!("node_id={id}&op=updated")).await;
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["data"]["previous_state"], "running");
    assert_eq!(ev[0]["data"]["previous_result"], Value::Null);
    assert_eq!(ev[0]["data"]["state"], "available");
    // noevent.
    let r = put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "n", "path": [], "state": "available"}),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = t
        .put_as(
            &user,
            &format!("/node/{id}?noevent=true"),
            &json!({"kind": "job", "name": "n", "path": [], "state": "closing"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        events(&t, &format!("node_id={id}&op=updated")).await.len(),
        2
    );
    // Transitions: closing -> available refused; -> done ok; done -> running refused.
    put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "n", "path": [], "state": "available"}),
    )
    .await
    .assert_detail(400, "Transition not allowed with state: available");
    put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "n", "path": [], "state": "running"}),
    )
    .await
    .assert_detail(400, "Transition not allowed with state: running");
    let r = put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "n", "path": [], "state": "done", "result": "pass"}),
    )
    .await;
    assert_eq!(r.status, 200);
    put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "n", "path": [], "state": "running"}),
    )
    .await
    .assert_detail(400, "Transition not allowed with state: running");
    let r = put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "n", "path": [], "state": "done"}),
    )
    .await;
    assert_eq!(r.status, 200, "same state is allowed");
    // Parent == self; unknown kind.
    put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "n", "path": [], "state": "done", "parent": id}),
    )
    .await
    .assert_detail(400, "Parent cannot be the same as the object");
    put(
        &t,
        &user,
        &id,
        json!({"kind": "weird", "name": "n", "path": [], "state": "done"}),
    )
    .await
    .assert_detail(400, "Unsupported node kind: weird");
    let r = put(
        &t,
        &user,
        &id,
        json!({"kind": "job", "name": "t1-renamed", "path": ["x"], "state": "done",
               "created": "2024-06-01T12:00:00"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["created"],
        "2024-06-01T12:00:00",
        "a given created is used"
    );
}

#[tokio::test]
async fn put_kcidb_flag_rules() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let n = t.create_node(&user, node("test", "k")).await;
    let id = n["id"].as_str().unwrap().to_owned();
    let b = |state: &str, flag: bool| json!({"kind": "test", "name": "k", "path": [], "state": state, "processed_by_kcidb_bridge": flag});
    // Same state, sent true, stored false: true.
    assert_eq!(
        put(&t, &user, &id, b("running", true)).await.json()["processed_by_kcidb_bridge"],
        true
    );
    // Stored true, sent true: false.
    assert_eq!(
        put(&t, &user, &id, b("running", true)).await.json()["processed_by_kcidb_bridge"],
        false
    );
    // State changes: false.
    assert_eq!(
        put(&t, &user, &id, b("done", true)).await.json()["processed_by_kcidb_bridge"],
        false
    );
}

#[tokio::test]
async fn patch_node() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let mut body = node("test", "p");
    body["data"] = json!({"a": 1, "b": 2});
    let n = t.create_node(&user, body).await;
    let id = n["id"].as_str().unwrap().to_owned();
    let path = format!("/node/{id}");
    assert_eq!(t.req("PATCH", &path).raw("x").send().await.status, 422);
    assert_eq!(
        t.req("PATCH", &path).json(&json!({})).send().await.status,
        401
    );
    t.patch_as(&user, &path, &json!({}))
        .await
        .assert_detail(400, "No fields to update");
    t.patch_as(&user, &path, &json!({"name": "ignored"}))
        .await
        .assert_detail(400, "No fields to update");
    let r = t.patch_as(&user, &path, &json!({"state": null})).await;
    assert_eq!(r.status, 200, "null state counts as a field");
    assert_eq!(
        t.patch_as(&user, &path, &json!({"state": "bogus"}))
            .await
            .status,
        422
    );
    let r = t
        .patch_as(
            &user,
            &path,
            &json!({"data": {"c": 3}, "state": "closing", "result": "fail", "name": "ignored"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let p = r.json();
    assert_eq!(p["data"], json!({"c": 3}), "data replaced, not merged");
    assert_eq!(p["state"], "closing");
    assert_eq!(p["result"], "fail");
    assert_eq!(p["name"], "p");
    t.patch_as(&user, &path, &json!({"state": "running"}))
        .await
        .assert_detail(400, "Transition not allowed with state: running");
    t.patch_as(&user, &path, &json!({"state": "available"}))
        .await
        .assert_detail(400, "Transition not allowed with state: available");
    let r = t
        .patch_as(&user, &path, &json!({"artifacts": {"log": "not a url"}}))
        .await;
    assert!(matches!(r.status, 400 | 422), "{}", r.text());
    let r = t
        .patch_as(&user, &path, &json!({"data": {"error_code": "not-a-code"}}))
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let ev = events(&t, &format!("node_id={id}&op=updated")).await;
    let last = ev.last().unwrap();
    assert_eq!(last["data"]["previous_state"], "running");
    assert_eq!(last["data"]["previous_result"], Value::Null);
    assert_eq!(last["data"]["state"], "closing");
    let before = ev.len();
    let r = t
        .patch_as(
            &user,
            &format!("{path}?noevent=true"),
            &json!({"state": "done"}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        events(&t, &format!("node_id={id}&op=updated")).await.len(),
        before
    );
    let missing = ObjectId::new();
    t.patch_as(
        &user,
        &format!("/node/{missing}"),
        &json!({"state": "done"}),
    )
    .await
    .assert_detail(404, &format!("Node not found with id: {missing}"));
}

#[tokio::test]
async fn authorization_matrix() {
    let t = app().await;
    t.create_group("grp").await;
    t.create_group("runtime:lava-x:node-editor").await;
    t.create_group("runtime:lava-y:node-admin").await;
    let owner = t.user_token("owner", &[]).await;
    let stranger = t.user_token("stranger", &[]).await;
    let any = t.user_token("any", &["node:edit:any"]).await;
    let member = t.user_token("member", &["grp"]).await;
    let rt_editor = t
        .user_token("rteditor", &["runtime:lava-x:node-editor"])
        .await;
    let rt_admin = t
        .user_token("rtadmin", &["runtime:lava-y:node-admin"])
        .await;
    let mk = |rt: &str, groups: Value| {
        let mut b = node("test", "auth");
        b["data"] = json!({"runtime": rt});
        b["user_groups"] = groups;
        b
    };
    let plain = t.create_node(&owner, mk("lava-x", json!([]))).await;
    let grouped = t.create_node(&owner, mk("lava-z", json!(["grp"]))).await;
    let lava_y = t.create_node(&owner, mk("lava-y", json!([]))).await;
    let try_patch = |tok: String, n: Value| {
        let t = &t;
        async move {
            t.patch_as(
                &tok,
                &format!("/node/{}", n["id"].as_str().unwrap()),
                &json!({"debug": {"x": 1}}),
            )
            .await
            .status
        }
    };
    let cases = [
        (&owner, &plain, 200),
        (&t.admin, &plain, 200),
        (&any, &plain, 200),
        (&rt_editor, &plain, 200),
        (&rt_editor, &grouped, 403),
        (&member, &grouped, 200),
        (&member, &plain, 403),
        (&rt_admin, &lava_y, 200),
        (&rt_admin, &plain, 403),
        (&stranger, &plain, 403),
        (&stranger, &grouped, 403),
    ];
    for (i, (tok, n, want)) in cases.iter().enumerate() {
        assert_eq!(
            try_patch((*tok).clone(), (*n).clone()).await,
            *want,
            "case {i}"
        );
    }
    let pid = plain["id"].as_str().unwrap();
    t.patch_as(&stranger, &format!("/node/{pid}"), &json!({"debug": {}}))
        .await
        .assert_detail(403, "Unauthorized to complete the operation");
    t.put_as(
        &stranger,
        &format!("/node/{pid}"),
        &json!({"kind": "test", "name": "x", "path": []}),
    )
    .await
    .assert_detail(403, "Unauthorized to complete the operation");
    // Permission is checked before body validation.
    t.put_as(&stranger, &format!("/node/{pid}"), &json!({"name": 5}))
        .await
        .assert_detail(403, "Unauthorized to complete the operation");
    t.put_as(
        &stranger,
        &format!("/nodes/{pid}"),
        &json!({"node": {}, "child_nodes": []}),
    )
    .await
    .assert_detail(403, "Unauthorized to complete the operation");
}

#[tokio::test]
async fn batch_nodeset() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let bob = t.user_token("bob", &[]).await;
    let a1 = t.create_node(&alice, node("test", "a1")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a2 = t.create_node(&alice, node("test", "a2")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let b1 = t.create_node(&bob, node("test", "b1")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events_before = events(&t, "").await.len();
    let set = |nodes: Value, field: &str, value: &str| json!({"nodes": nodes, "field": field, "value": value});
    assert_eq!(
        t.req("PUT", "/batch/nodeset")
            .json(&set(json!([]), "x", "y"))
            .send()
            .await
            .status,
        401
    );
    t.put_as(
        &alice,
        "/batch/nodeset",
        &json!({"nodes": [], "field": "processed_by_kcidb_bridge"}),
    )
    .await
    .assert_422("missing", json!(["body", "value"]));
    let r = t
        .put_as(
            &alice,
            "/batch/nodeset",
            &set(json!([]), "processed_by_kcidb_bridge", "True"),
        )
        .await;
    assert_eq!((r.status, r.json()), (200, json!(0)));
    // Bob's node is skipped silently.
    let r = t
        .put_as(
            &alice,
            "/batch/nodeset",
            &set(json!([a1, b1, a2]), "processed_by_kcidb_bridge", "True"),
        )
        .await;
    assert_eq!((r.status, r.json()), (200, json!(2)), "{}", r.text());
    assert_eq!(
        t.get(&format!("/node/{a1}")).await.json()["processed_by_kcidb_bridge"],
        true
    );
    assert_eq!(
        t.get(&format!("/node/{b1}")).await.json()["processed_by_kcidb_bridge"],
        false
    );
    assert_eq!(events(&t, "").await.len(), events_before, "no events");
    t.put_as(&alice, "/batch/nodeset", &set(json!([a1]), "name", "x"))
        .await
        .assert_detail(400, "Field not supported");
    let missing = ObjectId::new();
    t.put_as(
        &alice,
        "/batch/nodeset",
        &set(
            json!([a1, missing.to_hex()]),
            "processed_by_kcidb_bridge",
            "false",
        ),
    )
    .await
    .assert_detail(404, &format!("Node not found with id: {missing}"));
    // Updates before the failure are kept.
    assert_eq!(
        t.get(&format!("/node/{a1}")).await.json()["processed_by_kcidb_bridge"],
        false
    );
}

#[tokio::test]
async fn hierarchy_submission() {
    let t = app().await;
    let alice = t.user_token("alice", &[]).await;
    let stranger = t.user_token("stranger", &[]).await;
    let mut root = node("job", "job-1");
    root["submitter"] = json!("root-sub");
    root["treeid"] = json!("tree-1");
    let root = t.create_node(&alice, root).await;
    let rid = root["id"].as_str().unwrap().to_owned();
    let seq_before = events(&t, "").await.len();
    let body = json!({
        "node": {"kind": "job", "name": "job-1", "path": ["job-1"], "state": "done", "result": "pass",
                 "id": ObjectId::new().to_hex()},
        "child_nodes": [
            {"node": {"kind": "test", "name": "t1", "path": ["job-1", "t1"], "result": "pass", "state": "done",
                      "submitter": "other", "treeid": "other"},
             "child_nodes": [
                {"node": {"kind": "test", "name": "t1a", "path": ["job-1", "t1", "t1a"], "result": "fail", "state": "done"},
                 "child_nodes": []}]},
            {"node": {"kind": "test", "name": "t2", "path": ["job-1", "t2"], "result": "skip", "state": "done"},
             "child_nodes": []}
        ]
    });
    assert_eq!(
        t.req("PUT", &format!("/nodes/{rid}"))
            .json(&body)
            .send()
            .await
            .status,
        401
    );
    assert_eq!(
        t.put_as(&alice, &format!("/nodes/{rid}"), &json!({"node": {}}))
            .await
            .status,
        422
    );
    let r = t.put_as(&alice, &format!("/nodes/{rid}"), &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let written = r.json();
    let written = written.as_array().unwrap();
    assert_eq!(written.len(), 4);
    let names: Vec<&str> = written
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["job-1", "t1", "t1a", "t2"], "pre-order, root first");
    assert_eq!(
        written[0]["id"],
        rid.as_str(),
        "root id forced to the path id"
    );
    assert_eq!(written[0]["state"], "done");
    assert_eq!(written[1]["parent"], rid.as_str());
    assert_eq!(written[2]["parent"], written[1]["id"]);
    assert_eq!(written[3]["parent"], rid.as_str());
    for n in written {
        assert_eq!(n["submitter"], "root-sub");
        assert_eq!(n["treeid"], "tree-1");
        assert_eq!(n["owner"], "alice");
    }
    assert_eq!(t.get(&format!("/count?parent={rid}")).await.json(), 2);
    // One event, for the root.
    let ev = events(&t, "").await;
    assert_eq!(ev.len(), seq_before + 1);
    let e = &ev.last().unwrap()["data"];
    assert_eq!(e["op"], "updated");
    assert_eq!(e["id"], rid.as_str());
    assert_eq!(e["is_hierarchy"], true);
    assert_eq!(e["previous_state"], "running");
    assert_eq!(e["previous_result"], Value::Null);
    // Kind validation in children.
    let bad = json!({"node": {"kind": "job", "name": "job-1", "path": []},
                     "child_nodes": [{"node": {"name": "x", "path": []}, "child_nodes": []}]});
    t.put_as(&alice, &format!("/nodes/{rid}"), &bad)
        .await
        .assert_detail(400, "Unsupported node kind: node");
    assert_eq!(
        t.put_as(&stranger, &format!("/nodes/{rid}"), &body)
            .await
            .status,
        403
    );
    // The root is `done` now: a hierarchy moving it back to `running` is refused like
    // `PUT /node/{id}`, and nothing of it is written.
    let back = json!({
        "node": {"kind": "job", "name": "job-1", "path": ["job-1"], "state": "running"},
        "child_nodes": [{"node": {"kind": "test", "name": "t3", "path": ["job-1", "t3"],
                                  "state": "done", "result": "pass"}, "child_nodes": []}]
    });
    let events_before = events(&t, "").await.len();
    t.put_as(&alice, &format!("/nodes/{rid}"), &back)
        .await
        .assert_detail(400, "Transition not allowed with state: running");
    assert_eq!(t.get(&format!("/count?parent={rid}")).await.json(), 2);
    assert_eq!(t.get(&format!("/node/{rid}")).await.json()["state"], "done");
    assert_eq!(events(&t, "").await.len(), events_before, "no event");
    // Staying `done` is allowed.
    let mut same = back.clone();
    same["node"]["state"] = json!("done");
    let r = t.put_as(&alice, &format!("/nodes/{rid}"), &same).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(t.get(&format!("/count?parent={rid}")).await.json(), 3);
    let missing = ObjectId::new();
    t.put_as(&alice, &format!("/nodes/{missing}"), &body)
        .await
        .assert_detail(404, &format!("Node not found with id: {missing}"));
}
