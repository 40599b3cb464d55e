//! Validation errors in pydantic v2's shapes (api spec §1.2, §3.4, §4.2): the 422 lists of the
//! request models (types `missing`, `enum`, `list_type`, `int_type`, `string_type`,
//! `int_parsing`, `greater_than_equal`, `less_than_equal`, ...) and the 400 texts of the kind
//! sub-models (`N validation error(s) for <Model>` and pydantic's lines), on POST, PUT and
//! PATCH of `/node`, the hierarchy, invites and the telemetry query.

mod common;

use common::{TestApp, app, node};
use serde_json::{Value, json};

/// Words of serde's messages that must never reach a client.
const SERDE_WORDS: [&str; 5] = [
    "unknown variant",
    "invalid type",
    "missing field",
    "expected ",
    "line 1 column",
];

#[track_caller]
fn assert_no_serde_words(text: &str) {
    for w in SERDE_WORDS {
        assert!(!text.contains(w), "serde's words ({w}) in {text}");
    }
}

/// POSTs `body` to `/node` and returns the 422's `detail` list.
async fn post_422(t: &TestApp, token: &str, body: Value) -> Value {
    let r = t.post_as(token, "/node", &body).await;
    assert_eq!(r.status, 422, "{body}: {}", r.text());
    assert_no_serde_words(&r.text());
    r.detail()
}

/// The 400 text of a request.
#[track_caller]
fn text_400(r: &common::Reply) -> String {
    assert_eq!(r.status, 400, "{}", r.text());
    r.detail().as_str().expect("a text detail").to_owned()
}

const STATES: &str = "'running', 'available', 'closing' or 'done'";
const RESULTS: &str = "'pass', 'fail', 'skip' or 'incomplete'";

#[tokio::test]
async fn node_body_errors_are_pydantic_entries() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;

    let d = post_422(&t, &user, json!({"kind": "test", "name": "x"})).await;
    assert_eq!(
        d,
        json!([{"type": "missing", "loc": ["body", "path"], "msg": "Field required",
                "input": {"kind": "test", "name": "x"}}])
    );

    let d = post_422(
        &t,
        &user,
        json!({"kind": "test", "name": "x", "path": [], "state": "finished", "result": "ok"}),
    )
    .await;
    assert_eq!(
        d,
        json!([
            {"type": "enum", "loc": ["body", "state"], "msg": format!("Input should be {STATES}"),
             "input": "finished", "ctx": {"expected": STATES}},
            {"type": "enum", "loc": ["body", "result"], "msg": format!("Input should be {RESULTS}"),
             "input": "ok", "ctx": {"expected": RESULTS}},
        ])
    );

    // No string → int coercion for `retry_counter` (StrictInt); every problem is listed, in
    // the model's field order.
    let d = post_422(
        &t,
        &user,
        json!({"kind": "test", "name": 5, "path": "a", "retry_counter": "1", "group": ["g"]}),
    )
    .await;
    assert_eq!(
        d,
        json!([
            {"type": "string_type", "loc": ["body", "name"], "msg": "Input should be a valid string", "input": 5},
            {"type": "list_type", "loc": ["body", "path"], "msg": "Input should be a valid list", "input": "a"},
            {"type": "string_type", "loc": ["body", "group"], "msg": "Input should be a valid string", "input": ["g"]},
            {"type": "int_type", "loc": ["body", "retry_counter"], "msg": "Input should be a valid integer", "input": "1"},
        ])
    );
    let d = post_422(
        &t,
        &user,
        json!({"kind": "test", "name": "x", "path": [1], "retry_counter": 1.5}),
    )
    .await;
    assert_eq!(d[0]["loc"], json!(["body", "path", 0]));
    assert_eq!(d[0]["type"], "string_type");
    assert_eq!(d[1]["type"], "int_type");

    // Duplicate groups: upstream's validator text.
    let d = post_422(
        &t,
        &user,
        json!({"kind": "test", "name": "x", "path": [], "user_groups": ["a", "a"]}),
    )
    .await;
    assert_eq!(
        d,
        json!([{"type": "value_error", "loc": ["body", "user_groups"],
                "msg": "Value error, Groups must have unique names.", "input": ["a", "a"],
                "ctx": {"error": "Groups must have unique names."}}])
    );

    // Artifacts: each value an absolute http(s) URL, located by its key.
    let d = post_422(
        &t,
        &user,
        json!({"kind": "test", "name": "x", "path": [],
               "artifacts": {"a": "ftp://x/a", "b": "relative/b", "c": 3}}),
    )
    .await;
    assert_eq!(
        d,
        json!([
            {"type": "url_scheme", "loc": ["body", "artifacts", "a"],
             "msg": "URL scheme should be 'http' or 'https'", "input": "ftp://x/a",
             "ctx": {"expected_schemes": "'http' or 'https'"}},
            {"type": "url_parsing", "loc": ["body", "artifacts", "b"],
             "msg": "Input should be a valid URL, relative URL without a base", "input": "relative/b",
             "ctx": {"error": "relative URL without a base"}},
            {"type": "url_type", "loc": ["body", "artifacts", "c"],
             "msg": "URL input should be a string or URL", "input": 3},
        ])
    );

    // Other types: dictionaries, booleans, datetimes, ObjectIds.
    let d = post_422(
        &t,
        &user,
        json!({"kind": "test", "name": "x", "path": [], "data": [1], "parent": "zz",
               "processed_by_kcidb_bridge": "maybe", "created": "yesterday", "timeout": null}),
    )
    .await;
    let types: Vec<&str> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "value_error",
            "dict_type",
            "datetime_from_date_parsing",
            "datetime_type",
            "bool_parsing"
        ],
        "{d}"
    );
    assert_eq!(d[0]["msg"], "Value error, Invalid ObjectId: zz");
    assert_eq!(d[1]["msg"], "Input should be a valid dictionary");

    // A body that is no object.
    let d = post_422(&t, &user, json!([1])).await;
    assert_eq!(d[0]["type"], "model_type");
    assert_eq!(d[0]["loc"], json!(["body"]));

    // pydantic's lax booleans are accepted, as upstream accepts them.
    let n = t
        .create_node(
            &user,
            json!({"kind": "test", "name": "x", "path": [], "processed_by_kcidb_bridge": "yes"}),
        )
        .await;
    assert_eq!(n["processed_by_kcidb_bridge"], true);
}

#[tokio::test]
async fn invalid_json_names_pythons_error() {
    let t = app().await;
    let r = t.req("POST", "/node").raw("{\"name\": ").send().await;
    assert_eq!(r.status, 422);
    assert_eq!(r.detail()[0]["ctx"], json!({"error": "Expecting value"}));
    let r = t.req("POST", "/node").raw("{} x").send().await;
    assert_eq!(r.detail()[0]["ctx"], json!({"error": "Extra data"}));
    let r = t.req("POST", "/node").raw("{x: 1}").send().await;
    assert_eq!(
        r.detail()[0]["ctx"],
        json!({"error": "Expecting property name enclosed in double quotes"})
    );
}

#[tokio::test]
async fn kind_submodels_answer_400_with_pydantics_text() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let post = |body: Value| {
        let (t, user) = (&t, user.clone());
        async move { text_400(&t.post_as(&user, "/node", &body).await) }
    };
    assert_eq!(
        post(json!({"kind": "checkout", "name": "c", "path": ["c"], "data": null})).await,
        "1 validation error for Checkout\ndata\n  Input should be a valid dictionary or instance \
         of CheckoutData [type=model_type, input_value=None, input_type=NoneType]"
    );
    assert_eq!(
        post(json!({"kind": "checkout", "name": "c", "path": ["c"],
                    "data": {"kernel_revision": {"tree": "t"}}}))
        .await,
        "3 validation errors for Checkout\n\
         data.kernel_revision.url\n  Field required [type=missing, input_value={'tree': 't'}, input_type=dict]\n\
         data.kernel_revision.branch\n  Field required [type=missing, input_value={'tree': 't'}, input_type=dict]\n\
         data.kernel_revision.commit\n  Field required [type=missing, input_value={'tree': 't'}, input_type=dict]"
    );
    assert_eq!(
        post(json!({"kind": "checkout", "name": "c", "path": ["c"],
                    "data": {"kernel_revision": {"tree": "t", "url": "u", "branch": "b", "commit": "c",
                                                 "version": {"version": 6, "patchlevel": 1.5}}}}))
        .await,
        "2 validation errors for Checkout\n\
         data.kernel_revision.url\n  Input should be a valid URL, relative URL without a base \
         [type=url_parsing, input_value='u', input_type=str]\n\
         data.kernel_revision.version.patchlevel\n  Input should be a valid integer \
         [type=int_type, input_value=1.5, input_type=float]"
    );
    let codes = "'invalid_job_params', 'submit_error', 'node_timeout', 'Infrastructure', \
                 'Canceled', 'Job', 'Bug', 'Test', 'Configuration', 'LAVATimeout', \
                 'MultinodeTimeout', 'ObjectNotPersisted', 'Unexisting permission codename.', \
                 'job_generation_error' or 'kbuild_internal_error'";
    assert_eq!(
        post(json!({"kind": "kbuild", "name": "k", "path": ["k"],
                    "data": {"error_code": "nope", "arch": 5}}))
        .await,
        format!(
            "2 validation errors for Kbuild\ndata.arch\n  Input should be a valid string \
             [type=string_type, input_value=5, input_type=int]\ndata.error_code\n  Input should \
             be {codes} [type=enum, input_value='nope', input_type=str]"
        )
    );
    assert_eq!(
        post(json!({"kind": "test", "name": "t", "path": ["t"],
                    "data": {"test_source": "not a url", "misc": [1]}}))
        .await,
        "2 validation errors for Test\ndata.test_source\n  Input should be a valid URL, relative \
         URL without a base [type=url_parsing, input_value='not a url', input_type=str]\n\
         data.misc\n  Input should be a valid dictionary [type=dict_type, input_value=[1], \
         input_type=list]"
    );
    assert!(
        post(json!({"kind": "job", "name": "j", "path": ["j"], "data": {"error_code": "x"}}))
            .await
            .starts_with("1 validation error for Job\ndata.error_code\n  Input should be ")
    );
    assert_eq!(
        post(json!({"kind": "regression", "name": "r", "path": ["r"],
                    "data": {"fail_node": "zz", "node_sequence": ["65bb6a0a8e0f0d7d0c1b2a3f", 5]}}))
        .await,
        "2 validation errors for Regression\ndata.fail_node\n  Value error, Invalid ObjectId: zz \
         [type=value_error, input_value='zz', input_type=str]\ndata.node_sequence.1\n  Input \
         should be a valid string [type=string_type, input_value=5, input_type=int]"
    );
    // Long inputs are shortened the way pydantic shortens them.
    let long = "x".repeat(80);
    assert!(
        post(json!({"kind": "kbuild", "name": "k", "path": ["k"], "data": {"error_code": long}}))
            .await
            .ends_with(&format!(
                "input_value='{}...{}', input_type=str]",
                "x".repeat(24),
                "x".repeat(23)
            ))
    );
    // `process` data is free-form, and null is fine there.
    t.create_node(
        &user,
        json!({"kind": "process", "name": "p", "path": ["p"], "data": null}),
    )
    .await;
}

#[tokio::test]
async fn put_and_patch_check_the_kind_model_too() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let n = t.create_node(&user, node("checkout", "c")).await;
    let path = format!("/node/{}", n["id"].as_str().unwrap());

    // PUT: the body is a Node (422 stage), then the kind's model (400).
    let mut body = node("checkout", "c");
    body["data"] = Value::Null;
    assert!(
        text_400(&t.put_as(&user, &path, &body).await)
            .starts_with("1 validation error for Checkout\ndata\n")
    );
    body["data"] = json!({"kernel_revision": {"tree": "t", "url": "https://x.org/l.git"}});
    assert!(text_400(&t.put_as(&user, &path, &body).await).starts_with(
        "2 validation errors for Checkout\ndata.kernel_revision.branch\n  Field required"
    ));
    body["data"] = json!({});
    body["artifacts"] = json!({"log": "not a url"});
    let r = t.put_as(&user, &path, &body).await;
    r.assert_422("url_parsing", json!(["body", "artifacts", "log"]));
    body["artifacts"] = json!({});
    body["state"] = json!("bogus");
    t.put_as(&user, &path, &body)
        .await
        .assert_422("enum", json!(["body", "state"]));

    // PATCH: NodePatchRequest (422), then the merged node against the kind's model (400).
    t.patch_as(&user, &path, &json!({"jobfilter": "a"}))
        .await
        .assert_422("list_type", json!(["body", "jobfilter"]));
    t.patch_as(&user, &path, &json!({"state": "finished"}))
        .await
        .assert_422("enum", json!(["body", "state"]));
    t.patch_as(&user, &path, &json!({"processed_by_kcidb_bridge": [1]}))
        .await
        .assert_422("bool_type", json!(["body", "processed_by_kcidb_bridge"]));
    assert_eq!(
        text_400(
            &t.patch_as(&user, &path, &json!({"artifacts": {"log": "not a url"}}))
                .await
        ),
        "1 validation error for Checkout\nartifacts.log\n  Input should be a valid URL, relative \
         URL without a base [type=url_parsing, input_value='not a url', input_type=str]"
    );
    assert_eq!(
        text_400(
            &t.patch_as(
                &user,
                &path,
                &json!({"data": {"error_code": "submit_error"}})
            )
            .await
        ),
        "1 validation error for Checkout\ndata.error_code\n  Input should be 'node_timeout', \
         'git_checkout_failure' or 'git_commit_error' [type=enum, input_value='submit_error', \
         input_type=str]"
    );
    assert!(
        text_400(&t.patch_as(&user, &path, &json!({"data": null})).await)
            .starts_with("1 validation error for Checkout\ndata\n")
    );
    // Nothing of the refused writes was stored.
    let stored = t.get(&path).await.json();
    assert_eq!(stored["artifacts"], json!({}));
    assert_eq!(stored["state"], "running");
}

#[tokio::test]
async fn hierarchy_errors_are_located_in_the_tree() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    let root = t.create_node(&user, node("job", "j")).await;
    let path = format!("/nodes/{}", root["id"].as_str().unwrap());
    let body = json!({"node": {"kind": "job", "name": "j", "path": ["j"]},
                      "child_nodes": [{"node": {"kind": "test", "name": "t"}, "child_nodes": []}]});
    let r = t.put_as(&user, &path, &body).await;
    r.assert_422("missing", json!(["body", "child_nodes", 0, "node", "path"]));
    let body = json!({"node": {"kind": "job", "name": "j", "path": ["j"]},
                      "child_nodes": [{"node": {"kind": "test", "name": "t", "path": ["t"],
                                                "data": {"regression": "zz"}},
                                       "child_nodes": []}]});
    assert!(text_400(&t.put_as(&user, &path, &body).await).starts_with(
        "1 validation error for Test\ndata.regression\n  Value error, Invalid ObjectId: zz"
    ));
}

#[tokio::test]
async fn invite_groups_must_be_unique() {
    let t = app().await;
    t.create_group("g").await;
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "bob", "email": "bob@example.org", "groups": ["g", "g"]}),
        )
        .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        r.detail(),
        json!([{"type": "value_error", "loc": ["body", "groups"],
                "msg": "Value error, Groups must have unique names.", "input": ["g", "g"],
                "ctx": {"error": "Groups must have unique names."}}])
    );
}

#[tokio::test]
async fn query_numbers_have_pydantic_bounds() {
    let t = app().await;
    let d = t.get("/telemetry/anomalies?threshold=-0.1").await;
    assert_eq!(d.status, 422);
    assert_eq!(
        d.detail(),
        json!([{"type": "greater_than_equal", "loc": ["query", "threshold"],
                "msg": "Input should be greater than or equal to 0", "input": "-0.1",
                "ctx": {"ge": 0.0}}])
    );
    let d = t.get("/telemetry/anomalies?threshold=1.5").await.detail();
    assert_eq!(
        d,
        json!([{"type": "less_than_equal", "loc": ["query", "threshold"],
                "msg": "Input should be less than or equal to 1", "input": "1.5",
                "ctx": {"le": 1.0}}])
    );
    t.get("/telemetry/anomalies?threshold=x")
        .await
        .assert_422("float_parsing", json!(["query", "threshold"]));
    let d = t.get("/telemetry/anomalies?min_total=abc").await;
    d.assert_422("int_parsing", json!(["query", "min_total"]));
    assert_eq!(
        d.detail()[0]["msg"],
        "Input should be a valid integer, unable to parse string as an integer"
    );
    let d = t.get("/telemetry/anomalies?min_total=0").await.detail();
    assert_eq!(
        d,
        json!([{"type": "greater_than_equal", "loc": ["query", "min_total"],
                "msg": "Input should be greater than or equal to 1", "input": "0",
                "ctx": {"ge": 1}}])
    );
    let ok = t
        .get("/telemetry/anomalies?threshold=1&min_total=2.0")
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["min_total"], 2);
    let d = t.get("/telemetry?limit=0").await;
    d.assert_422("greater_than_equal", json!(["query", "limit"]));
    assert_eq!(
        d.detail()[0]["msg"],
        "Input should be greater than or equal to 1"
    );
    t.get("/telemetry?limit=abc")
        .await
        .assert_422("int_parsing", json!(["query", "limit"]));
}

#[tokio::test]
async fn error_lists_are_bounded() {
    let t = app().await;
    let user = t.user_token("alice", &[]).await;
    // A body of many wrong items answers with the first 1,000 problems, not one per item.
    let d = post_422(
        &t,
        &user,
        json!({"kind": "test", "name": "x", "path": vec![1; 5000]}),
    )
    .await;
    assert_eq!(d.as_array().unwrap().len(), 1000);
    assert_eq!(d[999]["loc"], json!(["body", "path", 999]));
    let r = t
        .post_as(
            &user,
            "/node",
            &json!({"kind": "kbuild", "name": "k", "path": ["k"],
                    "data": {"fragments": vec![1; 3000]}}),
        )
        .await;
    let text = text_400(&r);
    assert!(
        text.starts_with("3000 validation errors for Kbuild\ndata.fragments.0\n"),
        "{}",
        &text[..200]
    );
    assert!(text.ends_with("\n(2000 more not shown)"));
    assert_eq!(text.lines().count(), 1 + 2 * 1000 + 1);
}

#[tokio::test]
async fn user_booleans_are_read_as_pydantic_reads_them() {
    let t = app().await;
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "bob", "email": "bob@example.org", "is_superuser": "maybe"}),
        )
        .await;
    assert_eq!(
        r.detail(),
        json!([{"type": "bool_parsing", "loc": ["body", "is_superuser"],
                "msg": "Input should be a valid boolean, unable to interpret input",
                "input": "maybe"}])
    );
    t.post_as(
        &t.admin,
        "/user/invite",
        &json!({"username": "bob", "email": "bob@example.org", "send_email": [true]}),
    )
    .await
    .assert_422("bool_type", json!(["body", "send_email"]));
    // `"true"` is a boolean to pydantic, as upstream's clients may send it.
    let r = t
        .post_as(
            &t.admin,
            "/user/invite",
            &json!({"username": "bob", "email": "bob@example.org", "send_email": "false",
                    "return_token": "true"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["token"].is_string(), "{}", r.text());
}
