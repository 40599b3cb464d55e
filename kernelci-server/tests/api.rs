//! Transport conventions (api spec §1), pages, metrics, OpenAPI, key/value, events history and
//! telemetry, through the router without a socket.

mod common;

use common::{app, node};
use kernelci_server::table;
use serde_json::{Value, json};

#[tokio::test]
async fn version_prefixes_and_redirects() {
    let t = app().await;
    let n = t.create_node(&t.admin, node("checkout", "prefixes")).await;
    let id = n["id"].as_str().unwrap();
    for prefix in ["/latest", "/v0", ""] {
        let r = t.get(&format!("{prefix}/node/{id}")).await;
        assert_eq!(r.status, 200, "{prefix}");
        assert_eq!(r.json()["id"], id);
    }
    for bad in ["/v1/nodes", "/v0.1/nodes", "/v2"] {
        let r = t.get(bad).await;
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.header("content-type").unwrap().starts_with("text/plain"));
        let v = bad.split('/').nth(1).unwrap();
        assert_eq!(r.text(), format!("Unsupported API version: {v}"));
    }
    for (from, to) in [
        ("/latest", "/latest/"),
        ("/v0", "/v0/"),
        ("/nodes/", "/latest/nodes"),
        ("/latest/nodes/", "/latest/nodes"),
        ("/v0/nodes/", "/v0/nodes"),
    ] {
        let r = t.get(from).await;
        assert_eq!(r.status, 307, "{from}");
        assert_eq!(r.header("location"), Some(to), "{from}");
    }
    assert_eq!(t.get("/latestfoo").await.status, 404);
    t.get("/latest/nope").await.assert_detail(404, "Not Found");
    t.req("DELETE", "/latest/nodes")
        .send()
        .await
        .assert_detail(405, "Method Not Allowed");
}

#[tokio::test]
async fn bad_json_is_422_before_auth() {
    let t = app().await;
    for (method, path) in [
        ("POST", "/latest/node"),
        ("PUT", "/latest/node/65bb0c1d3d2e7c5a1c0c0c0c"),
        ("PATCH", "/latest/node/65bb0c1d3d2e7c5a1c0c0c0c"),
        ("PUT", "/latest/batch/nodeset"),
        ("POST", "/latest/publish/node"),
        ("POST", "/latest/kv/ns/key"),
        ("POST", "/latest/telemetry"),
        ("POST", "/latest/user-groups"),
    ] {
        let r = t.req(method, path).raw("{not json").send().await;
        assert_eq!(r.status, 422, "{method} {path}: {}", r.text());
        let d = r.detail();
        assert_eq!(d[0]["type"], "json_invalid", "{d}");
        assert_eq!(d[0]["msg"], "JSON decode error");
        assert_eq!(d[0]["loc"][0], "body");
        // Good JSON without a token: 401.
        let r = t.req(method, path).json(&json!({})).send().await;
        assert_eq!(r.status, 401, "{method} {path}");
        assert_eq!(r.json(), json!({"detail": "Unauthorized"}));
    }
}

#[tokio::test]
async fn pages_icons_static() {
    let t = app().await;
    let r = t.get("/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert!(r.text().contains("KernelCI API Server"));
    assert!(r.header("cache-control").is_none());
    assert_eq!(t.get("/latest/").await.status, 200);
    for (page, title) in [
        ("viewer", None),
        ("dashboard", Some("KernelCI Dashboard")),
        ("manage", Some("Maestro API Manage")),
        ("analytics", Some("KernelCI Pipeline Analytics")),
        ("stats", Some("KernelCI API Statistics")),
    ] {
        let r = t.get(&format!("/{page}")).await;
        assert_eq!(r.status, 200, "{page}");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        assert_eq!(
            r.header("cache-control"),
            Some("no-cache, no-store, must-revalidate")
        );
        assert_eq!(r.header("pragma"), Some("no-cache"));
        assert_eq!(r.header("expires"), Some("0"));
        if let Some(title) = title {
            assert!(r.text().contains(title), "{page}");
        }
    }
    for (p, title) in [
        ("/user/invite", "KernelCI API - Invite User"),
        ("/user/accept-invite", "KernelCI API - Accept Invite"),
    ] {
        let r = t.get(p).await;
        assert_eq!(r.status, 200);
        assert!(r.text().contains(title));
        assert!(r.header("cache-control").is_none());
    }
    for icon in ["ok.png", "bad.png", "warning.png"] {
        let r = t.get(&format!("/icons/{icon}")).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("image/png"));
        assert_eq!(&r.bytes[1..4], b"PNG");
    }
    t.get("/icons/x.gif")
        .await
        .assert_detail(400, "Invalid icon name");
    t.get("/icons/a%20b.png")
        .await
        .assert_detail(400, "Invalid icon name");
    // Deliberately better than upstream's 500.
    assert_eq!(t.get("/icons/missing.png").await.status, 404);
    let r = t.get("/static/css/viewer.css").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=3600"));
    let r = t.get("/static/js/viewer.js").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/javascript"));
    t.get("/static/css/viewer.js")
        .await
        .assert_detail(400, "Invalid filename");
    t.get("/static/js/x.css")
        .await
        .assert_detail(400, "Invalid filename");
    t.get("/static/css/nope.css")
        .await
        .assert_detail(404, "File not found");
}

#[tokio::test]
async fn metrics_format() {
    let t = app().await;
    t.get("/nodes").await;
    let before = t.get("/metrics").await;
    assert_eq!(before.status, 200);
    assert!(
        before
            .header("content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    let text = before.text();
    let count = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("http_requests_total{instance=\"api\"} "))
            .expect("http_requests_total line")
            .parse()
            .unwrap()
    };
    assert!(text.contains("subscriptions_cleaned{instance=\"api\"} 0\n"));
    assert!(text.contains("nodes_purged{instance=\"api\"} 0\n"));
    let n = count(&text);
    // /nodes/fast is not counted, other routes are.
    t.get("/nodes/fast").await;
    t.get("/nodes").await;
    let after = count(&t.get("/metrics").await.text());
    assert_eq!(after, n + 2, "one /metrics and one /nodes");
}

#[tokio::test]
async fn openapi_lists_every_dispatched_route() {
    let t = app().await;
    let r = t.get("/latest/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().expect("paths");
    let expect = [
        ("get", "/"),
        ("post", "/user/login"),
        ("post", "/user/logout"),
        ("post", "/user/register"),
        ("get", "/user/invite"),
        ("post", "/user/invite"),
        ("get", "/user/accept-invite"),
        ("get", "/user/invite/url"),
        ("post", "/user/accept-invite"),
        ("post", "/user/forgot-password"),
        ("post", "/user/reset-password"),
        ("get", "/whoami"),
        ("get", "/user/{id}"),
        ("delete", "/user/{id}"),
        ("patch", "/user/me"),
        ("patch", "/user/{user_id}"),
        ("get", "/user-groups"),
        ("get", "/user-groups/{group_id}"),
        ("post", "/user-groups"),
        ("delete", "/user-groups/{group_id}"),
        ("get", "/users"),
        ("post", "/user/update-password"),
        ("post", "/user/tokens"),
        ("delete", "/user/tokens/{jti}"),
        ("get", "/events"),
        ("post", "/telemetry"),
        ("get", "/telemetry"),
        ("get", "/telemetry/stats"),
        ("get", "/telemetry/anomalies"),
        ("get", "/node/{node_id}"),
        ("get", "/nodes"),
        ("get", "/nodes/fast"),
        ("get", "/count"),
        ("post", "/node"),
        ("put", "/node/{node_id}"),
        ("patch", "/node/{node_id}"),
        ("put", "/batch/nodeset"),
        ("put", "/nodes/{node_id}"),
        ("get", "/kv/{namespace}/{key}"),
        ("post", "/kv/{namespace}/{key}"),
        ("delete", "/kv/{namespace}/{key}"),
        ("post", "/subscribe/{channel}"),
        ("post", "/unsubscribe/{sub_id}"),
        ("get", "/listen/{sub_id}"),
        ("post", "/ack/{sub_id}"),
        ("post", "/publish/{channel}"),
        ("post", "/push/{list_name}"),
        ("get", "/pop/{list_name}"),
        ("get", "/stats/subscriptions"),
        ("get", "/viewer"),
        ("get", "/dashboard"),
        ("get", "/manage"),
        ("get", "/analytics"),
        ("get", "/stats"),
        ("get", "/icons/{icon_name}"),
        ("get", "/static/css/{filename}"),
        ("get", "/static/js/{filename}"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("get", "/docs"),
    ];
    let mut missing = Vec::new();
    for (m, p) in expect {
        let ok = paths.get(p).and_then(|o| o.get(m)).is_some();
        if !ok {
            missing.push(format!("{m} {p}"));
        }
    }
    assert!(
        missing.is_empty(),
        "missing from openapi.json: {missing:?}; has {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    // Every operation has one of the declared tags (the documentation page groups by them).
    let tags: Vec<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().expect("tag name"))
        .collect();
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let tag = op["tags"][0].as_str().unwrap_or_default();
            assert!(tags.contains(&tag), "{method} {path}: tag {tag:?}");
        }
    }
    assert_eq!(paths["/node/{node_id}"]["get"]["tags"], json!(["nodes"]));
    assert_eq!(paths["/listen/{sub_id}"]["get"]["tags"], json!(["pubsub"]));
}

/// A concrete path for a route template: ids are 24 hex digits, subscription ids numbers.
fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|s| match s {
            "{sub_id}" => "7",
            s if s.starts_with('{') => "65bb6a0a8e0f0d7d0c1b2a3f",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The `route` labels of `/metrics` with their method, e.g. `("GET", "/node/{node_id}")`.
fn metric_routes(metrics: &str) -> std::collections::BTreeSet<(String, String)> {
    metrics
        .lines()
        .filter(|l| l.starts_with("kernelci_http_requests_total{"))
        .filter_map(|l| {
            let field = |k: &str| {
                let start = l.find(&format!("{k}=\""))? + k.len() + 2;
                let end = start + l[start..].find('"')?;
                Some(l[start..end].to_owned())
            };
            Some((field("method")?, field("route")?))
        })
        .collect()
}

#[tokio::test]
async fn every_table_entry_is_dispatched_and_nothing_else_is() {
    let t = app().await;
    // Every entry reaches its handler: the request is counted under the entry's own route
    // label, never under the fallback's `-` (the fallback answers 404/405 and nothing else).
    for (_, route) in table::routes() {
        let path = format!("/latest{}", concrete(route.path));
        // (Not logging the admin out: the other requests use its token.)
        let req = match route.path {
            "/user/logout" => t.req(route.method, &path),
            _ => t.req(route.method, &path).token(&t.admin),
        };
        // `/pop` waits for an item: its handler holds the request, the fallback would not.
        if route.path == "/pop/{list_name}" {
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(1500), req.send()).await;
            assert!(
                waited.is_err(),
                "GET /pop answered at once: {:?}",
                waited.map(|r| r.status)
            );
            continue;
        }
        let r = req.send().await;
        assert!(
            r.status != 405,
            "{} {}: 405 from the fallback",
            route.method,
            route.path
        );
        if route.path == "/nodes/fast" {
            // Not counted in the metrics (upstream's way): its own answer shows it.
            assert_eq!(r.status, 200);
            continue;
        }
        let seen = metric_routes(&t.get("/metrics").await.text());
        assert!(
            seen.contains(&(route.method.to_owned(), route.path.to_owned())),
            "{} {} ({path}: {}) was not answered by its entry; labels: {seen:?}",
            route.method,
            route.path,
            r.status
        );
    }
    // Paths beside the table are the fallback's: 404 (or 405 for a table path with another
    // method), counted as `-`.
    for (method, path, status) in [
        ("GET", "/latest/nodes/fast/more", 404),
        ("GET", "/latest/no-such-route", 404),
        ("DELETE", "/latest/nodes", 405),
        ("POST", "/latest/viewer/trees", 405),
        ("GET", "/latest/viewer/api", 404),
    ] {
        let r = t.req(method, path).token(&t.admin).send().await;
        assert_eq!(r.status, status, "{method} {path}");
    }
    // And nothing but table entries and the fallback was ever counted.
    let table: std::collections::BTreeSet<(String, String)> = table::routes()
        .map(|(_, r)| (r.method.to_owned(), r.path.to_owned()))
        .collect();
    for (method, route) in metric_routes(&t.get("/metrics").await.text()) {
        assert!(
            route == "-" || table.contains(&(method.clone(), route.clone())),
            "{method} {route} answered outside the table"
        );
    }
}

#[tokio::test]
async fn docs_page_is_served_with_its_own_files_only() {
    let t = app().await;
    for path in ["/latest/docs", "/docs", "/v0/docs"] {
        let r = t.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        let csp = r.header("content-security-policy").expect("a CSP");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        let html = r.text();
        assert!(html.contains("/static/js/docs.js") && html.contains("openapi.json"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "no inline script");
    }
    for (path, ctype) in [
        ("/static/js/docs.js", "application/javascript"),
        ("/static/css/docs.css", "text/css; charset=utf-8"),
    ] {
        let r = t.get(path).await;
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.header("content-type"), Some(ctype));
        let text = r.text();
        // Nothing from elsewhere: no URL to another host, no dynamic code.
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "{path}"
        );
        assert!(
            !text.contains("eval(") && !text.contains("innerHTML"),
            "{path}"
        );
    }
}

/// The documented media types of one operation's `status` response.
fn media_types(doc: &Value, method: &str, path: &str, status: u16) -> Vec<String> {
    doc["paths"][path][method]["responses"][status.to_string()]["content"]
        .as_object()
        .map(|c| c.keys().cloned().collect())
        .unwrap_or_default()
}

/// `type/subtype` of a content type, without parameters.
fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

#[tokio::test]
async fn openapi_documents_real_statuses_and_content_types() {
    let t = app().await;
    let doc = t.get("/latest/openapi.json").await.json();
    // The document is the table: one operation per entry, and every response has a status.
    let mut operations = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            operations += 1;
            let responses = op["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path}");
            for code in responses.keys() {
                let n: u16 = code.parse().unwrap();
                assert!((200..600).contains(&n), "{method} {path}: {code}");
            }
        }
    }
    assert_eq!(operations, table::routes().count());
    // Links name real operations and their real path parameters.
    let mut by_id = std::collections::HashMap::new();
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            by_id.insert(op["operationId"].as_str().unwrap().to_owned(), op.clone());
        }
    }
    assert_eq!(by_id.len(), operations, "operation ids are unique");
    let mut links = 0;
    for ops in doc["paths"].as_object().unwrap().values() {
        for op in ops.as_object().unwrap().values() {
            for response in op["responses"].as_object().unwrap().values() {
                for link in response["links"]
                    .as_object()
                    .into_iter()
                    .flat_map(|l| l.values())
                {
                    links += 1;
                    let target = &by_id[link["operationId"].as_str().unwrap()];
                    for name in link["parameters"].as_object().unwrap().keys() {
                        assert!(
                            target["parameters"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .any(|p| p["name"] == name.as_str() && p["in"] == "path"),
                            "{link}"
                        );
                    }
                }
            }
        }
    }
    assert!(links >= 9, "{links} links");
    // Request bodies say what the handlers require (through a component, derived from the
    // request type).
    let required = |m: &str, p: &str| {
        let schema = &doc["paths"][p][m]["requestBody"]["content"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()["schema"];
        let name = schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .unwrap_or_else(|| panic!("{m} {p}: {schema}"));
        doc["components"]["schemas"][name]["required"].clone()
    };
    assert_eq!(
        required("post", "/user/invite"),
        json!(["username", "email"])
    );
    assert_eq!(
        required("post", "/user/login"),
        json!(["username", "password"])
    );
    assert_eq!(required("post", "/user/forgot-password"), json!(["email"]));
    assert_eq!(required("post", "/node"), json!(["kind", "name", "path"]));

    // Every public GET without path parameters: the real status is documented, and so is
    // the real content type.
    for (_, route) in table::routes() {
        if route.method != "GET" || route.path.contains('{') {
            continue;
        }
        let r = t.get_as(&t.admin, &format!("/latest{}", route.path)).await;
        let documented = media_types(&doc, "get", route.path, r.status);
        let real = essence(r.header("content-type").unwrap_or_default());
        assert!(
            documented.iter().any(|m| essence(m) == real),
            "GET {}: {} {real} is not documented ({documented:?})",
            route.path,
            r.status
        );
    }
    // The pages are HTML, /metrics is Prometheus text 0.0.4, icons and static files have
    // their own types.
    for page in [
        "/",
        "/viewer",
        "/dashboard",
        "/manage",
        "/analytics",
        "/stats",
        "/user/invite",
        "/user/accept-invite",
    ] {
        assert_eq!(media_types(&doc, "get", page, 200), ["text/html"], "{page}");
        let r = t.get(&format!("/latest{page}")).await;
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
    }
    assert_eq!(
        media_types(&doc, "get", "/metrics", 200),
        ["text/plain; version=0.0.4"]
    );
    assert!(
        t.get("/metrics")
            .await
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for (path, real, ctype) in [
        ("/icons/{icon_name}", "/icons/ok.png", "image/png"),
        (
            "/static/css/{filename}",
            "/static/css/viewer.css",
            "text/css",
        ),
        (
            "/static/js/{filename}",
            "/static/js/viewer.js",
            "application/javascript",
        ),
    ] {
        assert_eq!(media_types(&doc, "get", path, 200), [ctype], "{path}");
        let r = t.get(real).await;
        assert_eq!(essence(r.header("content-type").unwrap()), ctype);
        let (dir, ext) = (
            real.rsplit_once('/').unwrap().0,
            real.rsplit('.').next().unwrap(),
        );
        for (wrong, status) in [
            (format!("{dir}/missing.{ext}"), 404),
            (format!("{dir}/bad%20name.{ext}"), 400),
        ] {
            let r = t.get(&wrong).await;
            assert_eq!(r.status, status, "{wrong}");
            assert_eq!(
                media_types(&doc, "get", path, status),
                ["application/json"],
                "{path} {status}"
            );
        }
    }

    // Unknown subscriptions are 404, documented; so are 204s without content, the 202 of
    // forgot-password, and the auth statuses.
    let user = t.user_token("oa", &[]).await;
    for (method, path, real) in [
        ("get", "/listen/{sub_id}", "/listen/987654"),
        ("post", "/unsubscribe/{sub_id}", "/unsubscribe/987654"),
    ] {
        let r = t
            .req(&method.to_uppercase(), real)
            .token(&user)
            .send()
            .await;
        assert_eq!(r.status, 404, "{real}: {}", r.text());
        assert_eq!(media_types(&doc, method, path, 404), ["application/json"]);
    }
    let responses = |m: &str, p: &str| -> Vec<String> {
        doc["paths"][p][m]["responses"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    };
    let logout = responses("post", "/user/logout");
    assert!(
        ["204", "401", "403"]
            .iter()
            .all(|s| logout.contains(&s.to_string()))
            && !logout.contains(&"200".to_owned()),
        "{logout:?}"
    );
    assert!(media_types(&doc, "post", "/user/logout", 204).is_empty());
    assert!(responses("post", "/user/forgot-password").contains(&"202".to_owned()));
    assert!(responses("post", "/user/forgot-password").contains(&"500".to_owned()));
    assert!(responses("get", "/whoami").contains(&"403".to_owned()));
    assert!(responses("get", "/users").contains(&"401".to_owned()));
    assert!(!responses("get", "/users").contains(&"403".to_owned()));
    assert!(!responses("get", "/nodes").contains(&"401".to_owned()));
    assert!(responses("delete", "/user-groups/{group_id}").contains(&"409".to_owned()));
}

#[tokio::test]
async fn kv_store() {
    let t = app().await;
    let user = t.user_token("kvuser", &[]).await;
    // Auth needed.
    assert_eq!(t.get("/kv/ns/k").await.status, 401);
    let r = t.get_as(&user, "/kv/ns/k").await;
    assert_eq!((r.status, r.json()), (200, Value::Null));
    let r = t.post_as(&user, "/kv/ns/k", &json!("value 1")).await;
    assert_eq!((r.status, r.json()), (200, json!("OK")));
    assert_eq!(t.get_as(&user, "/kv/ns/k").await.json(), json!("value 1"));
    // Another user reads it too (no namespace ACL upstream).
    assert_eq!(
        t.get_as(&t.admin, "/kv/ns/k").await.json(),
        json!("value 1")
    );
    // A bare word is not JSON: 422; a number is not a string: 422.
    let r = t
        .req("POST", "/kv/ns/k")
        .token(&user)
        .raw("bare")
        .send()
        .await;
    r.assert_422("json_invalid", json!(["body", 0]));
    let r = t.post_as(&user, "/kv/ns/k", &json!(5)).await;
    assert_eq!(r.status, 422);
    // Empty string deletes; null deletes.
    t.post_as(&user, "/kv/ns/k", &json!("")).await;
    assert_eq!(t.get_as(&user, "/kv/ns/k").await.json(), Value::Null);
    t.post_as(&user, "/kv/ns/k", &json!("x")).await;
    t.post_as(&user, "/kv/ns/k", &Value::Null).await;
    assert_eq!(t.get_as(&user, "/kv/ns/k").await.json(), Value::Null);
    t.post_as(&user, "/kv/ns/k", &json!("y")).await;
    let r = t.delete_as(&user, "/kv/ns/k").await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!("Key-value pair deleted successfully"))
    );
    let r = t.delete_as(&user, "/kv/ns/never").await;
    assert_eq!(r.status, 200);
    assert_eq!(t.get_as(&user, "/kv/ns/k").await.json(), Value::Null);
}

#[tokio::test]
async fn events_history_filters() {
    let t = app().await;
    let a = t.create_node(&t.admin, node("checkout", "ev-a")).await;
    let b = t.create_node(&t.admin, node("kbuild", "ev-b")).await;
    let aid = a["id"].as_str().unwrap();
    let r = t
        .put_as(
            &t.admin,
            &format!("/node/{aid}"),
            &json!({"kind": "checkout", "name": "ev-a", "path": ["checkout", "ev-a"], "state": "done", "result": "pass"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = t
        .post_as(&t.admin, "/publish/other", &json!({"data": {"x": 1}}))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());

    let all = t.get("/events").await.json();
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 4, "{all:?}");
    // Sequence order; the upstream document shape, id last.
    let seqs: Vec<u64> = all
        .iter()
        .map(|e| e["sequence_id"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let keys: Vec<&String> = all[0].as_object().unwrap().keys().collect();
    assert_eq!(keys.last().unwrap().as_str(), "id");
    for k in ["timestamp", "sequence_id", "channel", "owner", "data"] {
        assert!(all[0].get(k).is_some(), "{k} in {}", all[0]);
    }
    let count = |v: Value| v.as_array().unwrap().len();
    assert_eq!(count(t.get("/events?kind=checkout").await.json()), 2);
    assert_eq!(
        count(t.get("/events?kind=").await.json()),
        4,
        "empty ignored"
    );
    assert_eq!(count(t.get("/events?op=updated").await.json()), 1);
    assert_eq!(count(t.get("/events?state=done").await.json()), 1);
    assert_eq!(count(t.get("/events?channel=other").await.json()), 1);
    assert_eq!(count(t.get("/events?channel=node").await.json()), 3);
    assert_eq!(
        count(t.get(&format!("/events?node_id={aid}")).await.json()),
        2
    );
    assert_eq!(
        count(t.get(&format!("/events?data.id={aid}")).await.json()),
        2
    );
    assert_eq!(count(t.get("/events?path=ev-b").await.json()), 1);
    assert_eq!(count(t.get("/events?owner=admin").await.json()), 3);
    assert_eq!(count(t.get("/events?limit=2").await.json()), 2);
    assert_eq!(count(t.get("/events?limit=2&offset=3").await.json()), 1);
    let first_id = all[0]["id"].as_str().unwrap();
    let r = t.get(&format!("/events?id={first_id}")).await.json();
    assert_eq!(r[0]["id"], first_id);
    let second = all[1]["id"].as_str().unwrap();
    assert_eq!(
        count(
            t.get(&format!("/events?ids={first_id},{second}"))
                .await
                .json()
        ),
        2
    );
    assert_eq!(count(t.get("/events?from=2000-01-01").await.json()), 4);
    assert_eq!(
        count(t.get("/events?from=2999-01-01T00:00:00Z").await.json()),
        0
    );
    // Recursive: the node is attached.
    let r = t
        .get("/events?recursive=true&limit=10&kind=kbuild")
        .await
        .json();
    assert_eq!(r[0]["node"]["id"], b["id"]);
    // Errors.
    t.get(&format!("/events?node_id={aid}&data.id={aid}"))
        .await
        .assert_detail(400, "Provide either node_id or data.id, not both");
    t.get("/events?id=zz")
        .await
        .assert_detail(400, "Invalid id format");
    t.get("/events?ids=zz")
        .await
        .assert_detail(400, "Invalid ids format");
    t.get("/events?ids=,")
        .await
        .assert_detail(400, "ids must contain at least one id");
    t.get(&format!("/events?id={first_id}&ids={first_id}"))
        .await
        .assert_detail(400, "Provide either id or ids, not both");
    t.get("/events?from=yesterday").await.assert_detail(
        400,
        "Invalid 'from' parameter, must be an ISO 8601 datetime",
    );
    t.get("/events?recursive=true")
        .await
        .assert_detail(400, "Recursive limit is too large, max is 1000");
    assert_eq!(t.get("/events?limit=abc").await.status, 422);
}

#[tokio::test]
async fn events_recursive_false_is_off_and_from_takes_unix_time() {
    let t = app().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    t.create_node(&t.admin, node("checkout", "ev-1")).await;
    t.create_node(&t.admin, node("kbuild", "ev-2")).await;
    let count = |v: Value| v.as_array().map_or(usize::MAX, Vec::len);

    // Deliberately better: `recursive=false` is off (upstream turned it on for any value),
    // so no limit is needed and no node is attached.
    for off in ["false", "0", "no", "off", ""] {
        let r = t.get(&format!("/events?recursive={off}&limit=1001")).await;
        assert_eq!(r.status, 200, "recursive={off}: {}", r.text());
        assert_eq!(count(r.json()), 2);
        assert!(r.json()[0].get("node").is_none(), "recursive={off}");
        let r = t.get(&format!("/events?recursive={off}")).await;
        assert_eq!(r.status, 200, "recursive={off} without limit");
    }
    for on in ["true", "1", "yes", "TRUE"] {
        let r = t.get(&format!("/events?recursive={on}&limit=10")).await;
        assert_eq!(r.status, 200, "recursive={on}: {}", r.text());
        assert!(r.json()[0]["node"]["id"].is_string(), "recursive={on}");
        t.get(&format!("/events?recursive={on}"))
            .await
            .assert_detail(400, "Recursive limit is too large, max is 1000");
    }
    let r = t.get("/events?recursive=perhaps&limit=10").await;
    r.assert_422("bool_parsing", json!(["query", "recursive"]));

    // `from` as upstream documents it: an ISO 8601 time or a Unix time in seconds.
    let from = |v: String| {
        let t = &t;
        async move {
            let r = t.get(&format!("/events?from={v}")).await;
            assert_eq!(r.status, 200, "from={v}: {}", r.text());
            count(r.json())
        }
    };
    assert_eq!(from(format!("{}", before as i64 - 60)).await, 2);
    assert_eq!(from(format!("{:.3}", before - 60.5)).await, 2);
    assert_eq!(from(format!("{}", before as i64 + 3600)).await, 0);
    assert_eq!(from("0".into()).await, 2);
    assert_eq!(from("-1".into()).await, 2);
    for bad in ["1e400", "NaN", "inf", "99999999999999999999", "1.5.2"] {
        t.get(&format!("/events?from={bad}")).await.assert_detail(
            400,
            "Invalid 'from' parameter, must be an ISO 8601 datetime",
        );
    }
}

fn tel(kind: &str, runtime: &str, device_type: &str, result: Option<&str>, infra: bool) -> Value {
    json!({"kind": kind, "runtime": runtime, "device_type": device_type, "device_id": format!("{device_type}-1"),
           "result": result, "is_infra_error": infra, "error_type": if infra { json!("Infrastructure") } else { Value::Null }})
}

#[tokio::test]
async fn telemetry_insert_list_stats_anomalies() {
    let t = app().await;
    let user = t.user_token("teluser", &[]).await;
    assert_eq!(
        t.req("POST", "/telemetry")
            .json(&json!([]))
            .send()
            .await
            .status,
        401
    );
    t.post_as(&user, "/telemetry", &json!([]))
        .await
        .assert_detail(400, "Events list cannot be empty");
    let r = t
        .post_as(&user, "/telemetry", &json!([{"kind": "job_result"}]))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.detail()
            .as_str()
            .unwrap()
            .starts_with("Invalid telemetry event: "),
        "{}",
        r.text()
    );
    let r = t
        .post_as(
            &user,
            "/telemetry",
            &json!([{"kind": "x", "runtime": "r", "retry": "1"}]),
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Nothing was inserted by the failures.
    assert_eq!(t.get("/telemetry").await.json()["total"], 0);

    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(tel("job_result", "lava-a", "rpi", Some("fail"), false));
    }
    events.push(tel("job_result", "lava-a", "bbb", Some("pass"), false));
    for _ in 0..4 {
        events.push(tel(
            "job_result",
            "lava-b",
            "qemu",
            Some("incomplete"),
            true,
        ));
    }
    for _ in 0..3 {
        events.push(json!({"kind": "runtime_error", "runtime": "lava-b", "error_type": "Infrastructure", "id": "dropme"}));
    }
    let r = t.post_as(&user, "/telemetry", &Value::Array(events)).await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"inserted": 11})),
        "{}",
        r.text()
    );

    let r = t.get("/telemetry?limit=5").await.json();
    assert_eq!(
        (
            r["total"].as_u64(),
            r["limit"].as_u64(),
            r["offset"].as_u64()
        ),
        (Some(11), Some(5), Some(0))
    );
    assert_eq!(r["items"].as_array().unwrap().len(), 5);
    assert!(r["items"][0]["id"].is_string());
    assert_eq!(t.get("/telemetry?runtime=lava-a").await.json()["total"], 4);
    assert_eq!(
        t.get("/telemetry?is_infra_error=TRUE").await.json()["total"],
        4
    );
    assert_eq!(
        t.get("/telemetry?retry=0").await.json()["total"],
        0,
        "numeric strings stay strings"
    );
    t.get("/telemetry?is_infra_error=maybe")
        .await
        .assert_detail(400, "Bad is_infra_error value, use 'true' or 'false'");
    assert_eq!(t.get("/telemetry?since=bad").await.status, 400);
    assert_eq!(
        t.get("/telemetry?since=2000-01-01").await.json()["total"],
        11
    );
    assert_eq!(
        t.get("/telemetry?until=2000-01-01").await.json()["total"],
        0
    );
    t.get("/telemetry?limit=0")
        .await
        .assert_422("greater_than_equal", json!(["query", "limit"]));

    // Stats.
    t.get("/telemetry/stats")
        .await
        .assert_detail(400, "'group_by' parameter is required");
    t.get("/telemetry/stats?group_by=foo")
        .await
        .assert_detail(400, "Invalid group_by fields: {'foo'}");
    t.get("/telemetry/stats?group_by=runtime&lab=a&runtime=b")
        .await
        .assert_detail(400, "'lab' and 'runtime' must match when both are provided");
    let s = t
        .get("/telemetry/stats?group_by=runtime&kind=job_result")
        .await
        .json();
    let s = s.as_array().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0]["runtime"], "lava-a");
    // Rows carry exactly the keys asked for (upstream): no `lab` when grouped by `runtime`.
    let keys: Vec<&str> = s[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "runtime",
            "total",
            "pass",
            "fail",
            "incomplete",
            "skip",
            "infra_error"
        ],
        "{s:?}"
    );
    assert_eq!(
        (
            s[0]["total"].as_u64(),
            s[0]["fail"].as_u64(),
            s[0]["pass"].as_u64()
        ),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!(
        (
            s[1]["total"].as_u64(),
            s[1]["incomplete"].as_u64(),
            s[1]["infra_error"].as_u64()
        ),
        (Some(4), Some(4), Some(4))
    );
    let s = t
        .get("/telemetry/stats?group_by=runtime,device_type&lab=lava-a")
        .await
        .json();
    assert_eq!(s.as_array().unwrap().len(), 2);
    // Grouped by `lab`: the rows say `lab` (read from `runtime`), not `runtime`.
    let s = t
        .get("/telemetry/stats?group_by=lab&kind=job_result")
        .await
        .json();
    let s = s.as_array().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0]["lab"], "lava-a");
    assert_eq!(s[0]["total"], 4);
    assert!(s[0].get("runtime").is_none(), "{s:?}");

    // Anomalies.
    t.get("/telemetry/anomalies?window=2h")
        .await
        .assert_detail(400, "Invalid window '2h'. Use: 1h, 3h, 6h, 12h, 24h, 48h");
    assert_eq!(
        t.get("/telemetry/anomalies?threshold=1.5").await.status,
        422
    );
    assert_eq!(t.get("/telemetry/anomalies?threshold=x").await.status, 422);
    assert_eq!(t.get("/telemetry/anomalies?min_total=0").await.status, 422);
    t.get("/telemetry/anomalies?scope=lab")
        .await
        .assert_422("string_pattern_mismatch", json!(["query", "scope"]));
    let a = t.get("/telemetry/anomalies").await.json();
    assert_eq!(a["window"], "6h");
    assert_eq!(a["threshold"], 0.5);
    assert_eq!(a["min_total"], 3);
    assert_eq!(a["scope"], "device_type");
    assert!(a["since"].as_str().unwrap().ends_with("+00:00"));
    let ra = a["result_anomalies"].as_array().unwrap();
    assert_eq!(ra.len(), 2, "{ra:?}");
    // Sorted by infra_rate first.
    assert_eq!(ra[0]["runtime"], "lava-b");
    assert_eq!(ra[0]["infra_rate"], 1.0);
    assert_eq!(ra[0]["constant_infra_failure"], true);
    assert_eq!(ra[0]["latest_error_type"], "Infrastructure");
    assert_eq!(ra[1]["device_type"], "rpi");
    assert_eq!(ra[1]["constant_failure"], true);
    assert_eq!(ra[1]["fail_rate"], 1.0);
    assert_eq!(
        a["error_anomalies"],
        json!([{"runtime": "lava-b", "error_type": "Infrastructure", "count": 3}])
    );
    let a = t
        .get("/telemetry/anomalies?scope=device&window=48h&threshold=1&min_total=4")
        .await
        .json();
    let ra = a["result_anomalies"].as_array().unwrap();
    assert_eq!(ra.len(), 1, "{ra:?}");
    assert_eq!(ra[0]["device_id"], "qemu-1");
    assert_eq!(a["error_anomalies"], json!([]));
}

#[tokio::test]
async fn odd_methods_and_paths() {
    let t = app().await;
    // No HEAD support upstream.
    assert_eq!(t.req("HEAD", "/").send().await.status, 405);
    // /user/me is only PATCH; GET /user/me is GET /user/{id} with an id that does not parse.
    let r = t.get_as(&t.admin, "/user/me").await;
    r.assert_detail(404, "Not Found");
    // Routes that exist in no form upstream.
    // (`/docs` exists: upstream's docs promised it and answered 404; we serve it.)
    for p in ["/group", "/groups", "/regression"] {
        assert_eq!(t.get_as(&t.admin, p).await.status, 404, "{p}");
    }
    assert_eq!(t.get("/openapi.json").await.status, 200);
    assert_eq!(t.get("/v0/openapi.json").await.status, 200);
}
