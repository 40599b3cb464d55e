//! `GET /latest/openapi.json`: an OpenAPI 3.1 description of every route.

use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::json_reply;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// An active user with a token.
    User,
    /// An active, verified user.
    Verified,
    /// An admin.
    Superuser,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// `application/json`.
    Json,
    /// `text/html` (the pages).
    Html,
    /// `text/plain; version=0.0.4`: the Prometheus text format of `/metrics`.
    Metrics,
    /// `image/png`.
    Png,
    /// `text/css`.
    Css,
    /// `application/javascript`.
    Js,
    /// No body (204).
    Empty,
}

impl Content {
    /// The media type documented for it (`None`: no body).
    pub fn media_type(self) -> Option<&'static str> {
        match self {
            Content::Json => Some("application/json"),
            Content::Html => Some("text/html"),
            Content::Metrics => Some("text/plain; version=0.0.4"),
            Content::Png => Some("image/png"),
            Content::Css => Some("text/css"),
            Content::Js => Some("application/javascript"),
            Content::Empty => None,
        }
    }
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path template below `/latest`.
    pub path: &'static str,
    /// What it does.
    pub summary: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Body: `json`, `form`, or none.
    pub body: Option<&'static str>,
    /// The success status.
    pub ok: u16,
    /// The success content.
    pub content: Content,
    /// Error statuses of its own, beyond the ones every route of its kind has (see
    /// [`Route::statuses`]).
    pub errors: &'static [u16],
}

const fn r(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    body: Option<&'static str>,
) -> Route {
    Route {
        method,
        path,
        summary,
        access,
        body,
        ok: 200,
        content: Content::Json,
        errors: &[],
    }
}

impl Route {
    /// Answers `content` on success.
    pub const fn content(mut self, content: Content) -> Route {
        self.content = content;
        self
    }

    /// Succeeds with `status` (202, 204) instead of 200; 204 has no body.
    pub const fn ok(mut self, status: u16) -> Route {
        self.ok = status;
        if status == 204 {
            self.content = Content::Empty;
        }
        self
    }

    /// Also answers these error statuses.
    pub const fn errors(mut self, errors: &'static [u16]) -> Route {
        self.errors = errors;
        self
    }

    /// Whether it is an API route (JSON in and out, backed by the store), not a page or file.
    pub fn is_api(&self) -> bool {
        matches!(self.content, Content::Json | Content::Empty) && self.path != "/openapi.json"
    }

    /// Every status it can answer, sorted: success, auth (401; 403 for verified-only and
    /// admin routes), its own errors, and for API routes 400 and 422 (bad input), 408 and 413
    /// (body too slow or over the limit) when it takes a body, 503 and 504 (store unavailable
    /// or too slow).
    pub fn statuses(&self) -> Vec<u16> {
        let mut out = vec![self.ok];
        match self.access {
            Access::Public => {}
            Access::User => out.push(401),
            Access::Verified | Access::Superuser => out.extend([401, 403]),
        }
        out.extend_from_slice(self.errors);
        if self.is_api() {
            out.extend([400, 422, 503, 504]);
            if self.body.is_some() {
                out.extend([408, 413]);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

use Access::*;
use Content::*;

/// Every route the server serves.
pub const ROUTES: &[Route] = &[
    r("GET", "/", "Index page", Public, None).content(Html),
    r("GET", "/openapi.json", "This document", Public, None),
    r("GET", "/docs", "API docs page", Public, None).content(Html),
    r(
        "POST",
        "/user/login",
        "Log in (OAuth2 password form); returns a bearer token (429: too many failed \
         attempts from this address, see `--login-rate`)",
        Public,
        Some("form"),
    )
    .errors(&[429]),
    r(
        "POST",
        "/user/logout",
        "Log out: revokes the token used",
        Verified,
        None,
    )
    .ok(204),
    r(
        "POST",
        "/user/register",
        "Disabled: use /user/invite (404 for a valid body)",
        Superuser,
        Some("json"),
    )
    .errors(&[404]),
    r("GET", "/user/invite", "Invite page", Public, None).content(Html),
    r(
        "POST",
        "/user/invite",
        "Invite a user; e-mails the accept-invite link when SMTP is configured",
        Superuser,
        Some("json"),
    ),
    r(
        "GET",
        "/user/accept-invite",
        "Accept-invite page",
        Public,
        None,
    )
    .content(Html),
    r(
        "POST",
        "/user/accept-invite",
        "Accept an invite and set a password",
        Public,
        Some("json"),
    )
    .errors(&[404]),
    r(
        "GET",
        "/user/invite/url",
        "The invite URLs",
        Superuser,
        None,
    ),
    r(
        "POST",
        "/user/forgot-password",
        "Request a password reset: the token goes by e-mail (400: SMTP not configured; \
         429: too many requests from this address, see `--forgot-password-rate`; 500: the \
         e-mail could not be sent)",
        Public,
        Some("json"),
    )
    .ok(202)
    .errors(&[429, 500]),
    r(
        "POST",
        "/user/reset-password",
        "Reset a password with a reset token; a confirmation e-mail follows (500: it could \
         not be sent)",
        Public,
        Some("json"),
    )
    .errors(&[500]),
    r(
        "POST",
        "/user/update-password",
        "Change a password (form; failed checks count as failed logins: 429)",
        Public,
        Some("form"),
    )
    .errors(&[429]),
    r(
        "POST",
        "/user/tokens",
        "Create a named, revocable API token",
        User,
        Some("json"),
    ),
    r(
        "DELETE",
        "/user/tokens/{jti}",
        "Revoke an API token",
        User,
        None,
    )
    .ok(204)
    .errors(&[404]),
    r("GET", "/whoami", "The current user", Verified, None),
    r(
        "PATCH",
        "/user/me",
        "Update the current user",
        User,
        Some("json"),
    ),
    r("GET", "/user/{id}", "A user", User, None).errors(&[404]),
    r("DELETE", "/user/{id}", "Delete a user", Superuser, None).errors(&[404]),
    r(
        "PATCH",
        "/user/{user_id}",
        "Update a user",
        Superuser,
        Some("json"),
    )
    .errors(&[404]),
    r("GET", "/users", "Users (paginated)", User, None),
    r(
        "GET",
        "/user-groups",
        "User groups (paginated)",
        Superuser,
        None,
    ),
    r(
        "POST",
        "/user-groups",
        "Create a user group",
        Superuser,
        Some("json"),
    ),
    r(
        "GET",
        "/user-groups/{group_id}",
        "A user group",
        Superuser,
        None,
    )
    .errors(&[404]),
    r(
        "DELETE",
        "/user-groups/{group_id}",
        "Delete a user group (409 while users are in it)",
        Superuser,
        None,
    )
    .ok(204)
    .errors(&[404, 409]),
    r("GET", "/node/{node_id}", "A node, or null", Public, None),
    r(
        "GET",
        "/nodes",
        "Nodes matching field__op=value filters (paginated)",
        Public,
        None,
    ),
    r(
        "GET",
        "/nodes/fast",
        "Nodes matching filters (bare array)",
        Public,
        None,
    ),
    r(
        "GET",
        "/count",
        "How many nodes match filters",
        Public,
        None,
    ),
    r("POST", "/node", "Create a node", User, Some("json")).errors(&[404]),
    r(
        "PUT",
        "/node/{node_id}",
        "Replace a node",
        User,
        Some("json"),
    )
    .errors(&[403, 404]),
    r(
        "PATCH",
        "/node/{node_id}",
        "Update some fields of a node",
        User,
        Some("json"),
    )
    .errors(&[403, 404]),
    r(
        "PUT",
        "/batch/nodeset",
        "Set processed_by_kcidb_bridge on nodes",
        User,
        Some("json"),
    )
    .errors(&[404]),
    r(
        "PUT",
        "/nodes/{node_id}",
        "Submit a result hierarchy",
        User,
        Some("json"),
    )
    .errors(&[403, 404]),
    r("GET", "/events", "Event history", Public, None),
    r(
        "POST",
        "/subscribe/{channel}",
        "Subscribe to a channel (durable with subscriber_id; 409: another user's id)",
        User,
        None,
    )
    .errors(&[409]),
    r(
        "POST",
        "/unsubscribe/{sub_id}",
        "Unsubscribe (404: unknown subscription; 403: another user's)",
        User,
        None,
    )
    .errors(&[403, 404]),
    r(
        "GET",
        "/listen/{sub_id}",
        "Wait for the next event (long poll; 404: unknown subscription; 410: events past \
         retention; 403: another user's)",
        User,
        None,
    )
    .errors(&[403, 404, 410]),
    r(
        "POST",
        "/ack/{sub_id}",
        "Acknowledge events up to a sequence number (404: unknown subscription; 403: another \
         user's)",
        User,
        Some("json"),
    )
    .errors(&[403, 404]),
    r(
        "POST",
        "/publish/{channel}",
        "Publish an event",
        User,
        Some("json"),
    ),
    r(
        "POST",
        "/push/{list_name}",
        "Append to a list",
        User,
        Some("json"),
    ),
    r(
        "GET",
        "/pop/{list_name}",
        "Take the first item of a list (blocking)",
        User,
        None,
    ),
    r(
        "GET",
        "/stats/subscriptions",
        "This process's subscriptions",
        Superuser,
        None,
    ),
    r("GET", "/kv/{namespace}/{key}", "Read a value", User, None),
    r(
        "POST",
        "/kv/{namespace}/{key}",
        "Write a value (JSON string; empty deletes)",
        User,
        Some("json"),
    ),
    r(
        "DELETE",
        "/kv/{namespace}/{key}",
        "Delete a value",
        User,
        None,
    ),
    r(
        "POST",
        "/telemetry",
        "Add telemetry events",
        User,
        Some("json"),
    ),
    r(
        "GET",
        "/telemetry",
        "Telemetry events (paginated)",
        Public,
        None,
    ),
    r(
        "GET",
        "/telemetry/stats",
        "Telemetry counts by group",
        Public,
        None,
    ),
    r(
        "GET",
        "/telemetry/anomalies",
        "Devices and runtimes failing unusually",
        Public,
        None,
    ),
    r("GET", "/viewer", "Node viewer page", Public, None).content(Html),
    r("GET", "/dashboard", "Dashboard page", Public, None).content(Html),
    r("GET", "/manage", "Manage page", Public, None).content(Html),
    r("GET", "/analytics", "Analytics page", Public, None).content(Html),
    r("GET", "/stats", "Statistics page", Public, None).content(Html),
    r("GET", "/icons/{icon_name}", "Icons", Public, None)
        .content(Png)
        .errors(&[400, 404]),
    r("GET", "/static/css/{filename}", "Stylesheets", Public, None)
        .content(Css)
        .errors(&[400, 404]),
    r("GET", "/static/js/{filename}", "Scripts", Public, None)
        .content(Js)
        .errors(&[400, 404]),
    r(
        "GET",
        "/metrics",
        "Prometheus metrics (text format 0.0.4)",
        Public,
        None,
    )
    .content(Metrics),
    // Our extension: the viewer's data (schemas and parameters: `viewer::openapi`).
    r("GET", "/viewer/api/trees", "Viewer: trees", Public, None),
    r(
        "GET",
        "/viewer/api/checkout/{id}",
        "Viewer: revision",
        Public,
        None,
    )
    .errors(&[404]),
    r(
        "GET",
        "/viewer/api/checkout/{id}/results",
        "Viewer: results",
        Public,
        None,
    )
    .errors(&[404]),
    r(
        "GET",
        "/viewer/api/checkout/{id}/history",
        "Viewer: history",
        Public,
        None,
    )
    .errors(&[404]),
    r(
        "GET",
        "/viewer/api/result/{id}",
        "Viewer: result",
        Public,
        None,
    )
    .errors(&[404]),
    r("GET", "/viewer/api/log/{id}", "Viewer: log", Public, None).errors(&[403, 404, 502]),
    r("GET", "/viewer/api/log", "Viewer: log by URL", Public, None).errors(&[403, 404, 502]),
    r(
        "GET",
        "/viewer/api/compare/{base}/{target}",
        "Viewer: compare",
        Public,
        None,
    )
    .errors(&[404]),
    r("GET", "/viewer/api/health", "Viewer: health", Public, None),
];

fn describe(status: u16) -> &'static str {
    match status {
        200 => "Success",
        202 => "Accepted",
        204 => "Done (no body)",
        400 => "Bad request",
        401 => "Missing, invalid or revoked token",
        403 => "Not allowed: unverified user, not an admin, or not the owner",
        404 => "Not found",
        409 => "Conflict",
        408 => "The request body did not arrive within the server's time (--body-timeout)",
        410 => "Gone: the events were removed by retention",
        413 => "Request body over the server's limit",
        422 => "Validation error",
        429 => "Too many attempts from this address; retry after `Retry-After` seconds",
        500 => "Server error (see the summary)",
        503 => "The store or the event bus is unavailable",
        504 => "The store did not answer in time",
        _ => "Other",
    }
}

/// One documented response: the success content, or the JSON error body.
fn response(route: &Route, status: u16) -> Value {
    let description = describe(status);
    if status == route.ok {
        return match route.content.media_type() {
            Some(m) => {
                let schema = match route.content {
                    Content::Json => json!({}),
                    Content::Png => json!({"type": "string", "format": "binary"}),
                    _ => json!({"type": "string"}),
                };
                json!({"description": description, "content": {m: {"schema": schema}}})
            }
            None => json!({"description": description}),
        };
    }
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn string() -> Value {
    json!({"type": "string"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties})
}

/// The request body of a route, as its handler checks it (upstream's pydantic models).
fn body_schema(route: &Route) -> Value {
    let email = json!({"type": "string", "format": "email"});
    let groups = json!({"type": "array", "items": {"type": "string"}, "uniqueItems": true});
    match (route.method, route.path) {
        ("POST", "/user/login") => object(
            &["username", "password"],
            json!({"username": string(), "password": string(),
                   "grant_type": {"type": "string", "pattern": "^password$"},
                   "scope": string(), "client_id": string(), "client_secret": string()}),
        ),
        ("POST", "/user/update-password") => object(
            &["username", "password", "new_password"],
            json!({"username": string(), "password": string(), "new_password": string()}),
        ),
        ("POST", "/user/register") => object(
            &["email", "password", "username"],
            json!({"email": email, "password": string(), "username": string(),
                   "is_active": boolean(), "is_superuser": boolean(), "is_verified": boolean(),
                   "groups": groups}),
        ),
        ("POST", "/user/invite") => object(
            &["username", "email"],
            json!({"username": string(), "email": email, "groups": groups,
                   "is_superuser": boolean(),
                   "send_email": {"type": "boolean", "default": true},
                   "return_token": boolean(), "resend_if_exists": boolean()}),
        ),
        ("POST", "/user/accept-invite") | ("POST", "/user/reset-password") => object(
            &["token", "password"],
            json!({"token": string(), "password": string()}),
        ),
        ("POST", "/user/forgot-password") => object(&["email"], json!({"email": email})),
        ("POST", "/user/tokens") => object(
            &[],
            json!({"name": string(), "expires_in": {"type": "integer", "minimum": 1}}),
        ),
        ("PATCH", "/user/me") | ("PATCH", "/user/{user_id}") => object(
            &[],
            json!({"password": string(), "email": email, "is_active": boolean(),
                   "is_superuser": boolean(), "is_verified": boolean(), "username": string(),
                   "groups": groups}),
        ),
        ("POST", "/user-groups") => object(&["name"], json!({"name": string()})),
        ("PUT", "/batch/nodeset") => object(
            &["nodes", "field", "value"],
            json!({"nodes": {"type": "array", "items": string()}, "field": string(),
                   "value": {}}),
        ),
        ("POST", "/ack/{sub_id}") => object(
            &["sequence_id"],
            json!({"sequence_id": {"type": "integer", "minimum": 0}}),
        ),
        ("POST", "/publish/{channel}") => object(
            &[],
            json!({"data": {}, "type": string(), "source": string(),
                   "attributes": {"type": "object"}}),
        ),
        ("POST", "/push/{list_name}") => object(
            &["data"],
            json!({"data": {}, "type": string(), "source": string()}),
        ),
        ("POST", "/kv/{namespace}/{key}") => json!({"type": ["string", "null"]}),
        ("POST", "/telemetry") => json!({"type": "array", "items": object(
            &["kind", "runtime"],
            json!({"ts": {"type": "string", "format": "date-time"}, "kind": string(),
                   "runtime": string(), "device_type": string(), "device_id": string(),
                   "job_name": string(), "job_id": string(), "tree": string(),
                   "branch": string(), "arch": string(), "result": string(),
                   "is_infra_error": boolean(), "error_type": string(),
                   "error_msg": string(), "retry": {"type": "integer"},
                   "extra": {"type": "object"}}),
        )}),
        ("POST", "/node") | ("PUT", "/node/{node_id}") => object(
            &["kind", "name", "path"],
            json!({"kind": {"enum": ["checkout", "kbuild", "test", "job", "process", "regression"]},
                   "name": string(),
                   "path": {"type": "array", "items": string()},
                   "parent": {"type": ["string", "null"]}, "group": {"type": ["string", "null"]},
                   "state": {"enum": ["running", "available", "closing", "done"]},
                   "result": {"enum": ["pass", "fail", "skip", "incomplete", null]},
                   "data": {"type": "object"}, "artifacts": {"type": "object"},
                   "user_groups": groups}),
        ),
        _ => json!({"type": "object"}),
    }
}

/// A path parameter: object ids are 24 hex digits, subscription ids integers, file names
/// follow the pages' allow-list patterns (other values are a 400/404/422, documented).
fn path_schema(route: &Route, name: &str) -> Value {
    match name {
        "id" | "user_id" | "group_id" | "node_id" => {
            json!({"type": "string", "pattern": "^[0-9a-f]{24}$"})
        }
        "sub_id" => json!({"type": "integer", "minimum": 0}),
        "icon_name" => json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+\\.png$"}),
        "filename" if route.path.contains("/css/") => {
            json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+\\.css$"})
        }
        "filename" => json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+\\.js$"}),
        _ => string(),
    }
}

/// The tags that group the operations (in the documentation page and client generators), in
/// order, with what each holds.
const TAGS: &[(&str, &str)] = &[
    ("users", "Login, tokens, invites, users and groups"),
    ("nodes", "Query, create and update nodes; submit results"),
    ("events", "The event history"),
    ("pubsub", "Subscriptions, listening, publishing and lists"),
    ("kv", "The key/value store"),
    ("telemetry", "Job and device telemetry"),
    (
        "viewer",
        "The web viewer's data (our extension): trees, revisions, results, logs, compare, health",
    ),
    ("pages", "HTML pages, files, metrics and this description"),
];

/// The tag of a route, from its first path segment.
fn tag(path: &str) -> &'static str {
    match path.split('/').find(|s| !s.is_empty()).unwrap_or_default() {
        "user" | "users" | "user-groups" | "whoami" => "users",
        "node" | "nodes" | "count" | "batch" => "nodes",
        "events" => "events",
        "subscribe" | "unsubscribe" | "listen" | "ack" | "publish" | "push" | "pop" => "pubsub",
        "stats" if path == "/stats/subscriptions" => "pubsub",
        "kv" => "kv",
        "telemetry" => "telemetry",
        _ => "pages",
    }
}

fn operation_id(method: &str, path: &str) -> String {
    format!(
        "{}_{}",
        method.to_lowercase(),
        path.replace(['/', '{', '}', '-', '.'], "_")
            .trim_matches('_')
    )
}

/// OpenAPI links from the routes that create things to the routes that use them (so a
/// client generator, or schemathesis' stateful phase, can follow them).
fn links(route: &Route) -> Map<String, Value> {
    let targets: &[(&str, &str, &str)] = match (route.method, route.path) {
        ("POST", "/node") => &[
            ("GET", "/node/{node_id}", "node_id"),
            ("PUT", "/node/{node_id}", "node_id"),
            ("PATCH", "/node/{node_id}", "node_id"),
            ("PUT", "/nodes/{node_id}", "node_id"),
        ],
        ("POST", "/user-groups") => &[
            ("GET", "/user-groups/{group_id}", "group_id"),
            ("DELETE", "/user-groups/{group_id}", "group_id"),
        ],
        ("POST", "/subscribe/{channel}") => &[
            ("GET", "/listen/{sub_id}", "sub_id"),
            ("POST", "/ack/{sub_id}", "sub_id"),
            ("POST", "/unsubscribe/{sub_id}", "sub_id"),
        ],
        _ => &[],
    };
    targets
        .iter()
        .map(|(method, path, param)| {
            let id = operation_id(method, path);
            (
                id.clone(),
                json!({"operationId": id, "parameters": {*param: "$response.body#/id"}}),
            )
        })
        .collect()
}

/// Query parameters of a route: pagination on the paginated lists, upstream's flags.
fn query_parameters(route: &Route) -> Vec<Value> {
    let q = |name: &str, schema: Value| json!({"name": name, "in": "query", "required": false, "schema": schema});
    let paged = |maximum: Option<u64>| {
        let mut limit = json!({"type": "integer", "minimum": 1});
        if let Some(m) = maximum {
            limit["maximum"] = json!(m);
        }
        vec![
            q("limit", limit),
            q("offset", json!({"type": "integer", "minimum": 0})),
        ]
    };
    match (route.method, route.path) {
        // Streamed: no maximum.
        ("GET", "/nodes" | "/events") => paged(None),
        ("GET", "/users" | "/user-groups" | "/telemetry") => {
            paged(Some(crate::routes::MAX_PAGE_LIMIT))
        }
        ("GET", "/telemetry/stats") => {
            vec![json!({"name": "group_by", "in": "query", "required": true, "schema": string()})]
        }
        ("PUT" | "PATCH", "/node/{node_id}") => vec![q("noevent", boolean())],
        ("GET", "/listen/{sub_id}") => {
            vec![q("acknowledge", json!({"type": "integer", "minimum": 0}))]
        }
        _ => Vec::new(),
    }
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| {
                let name = s.trim_matches(['{', '}']);
                json!({"name": name, "in": "path", "required": true, "schema": path_schema(route, name)})
            })
            .collect();
        let mut responses = Map::new();
        for status in route.statuses() {
            responses.insert(status.to_string(), response(route, status));
        }
        let mut op = json!({
            "tags": [tag(route.path)],
            "summary": route.summary,
            "operationId": operation_id(route.method, route.path),
            "parameters": params,
            "responses": responses,
        });
        if route.access != Access::Public {
            op["security"] = json!([{"bearer": []}]);
        }
        let links = links(route);
        if !links.is_empty() {
            op["responses"][route.ok.to_string()]["links"] = Value::Object(links);
        }
        match route.body {
            Some("json") => {
                op["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body_schema(route)}}})
            }
            Some(_) => {
                op["requestBody"] = json!({"required": true, "content": {"application/x-www-form-urlencoded": {"schema": body_schema(route)}}})
            }
            None => {}
        }
        let query = query_parameters(route);
        if !query.is_empty()
            && let Some(list) = op["parameters"].as_array_mut()
        {
            list.extend(query);
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = op;
    }
    // Our extension: the viewer's data endpoints, with their parameters and answer schemas.
    crate::viewer::openapi::enrich(&mut paths);
    json!({
        "openapi": "3.1.0",
        "info": {"title": "KernelCI API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Wire-compatible with the upstream KernelCI API; every route is also served under /v0 and without a prefix."},
        "servers": [{"url": "/latest"}],
        "tags": TAGS.iter().map(|(name, description)| json!({"name": name, "description": description})).collect::<Vec<_>>(),
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {"Error": {"type": "object", "properties": {"detail": {}}}},
        },
    })
}

/// The document as a reply.
pub fn reply() -> Response {
    json_reply(StatusCode::OK, &document())
}
