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
    }
}

use Access::*;

/// Every route the server serves.
pub const ROUTES: &[Route] = &[
    r("GET", "/", "Index page", Public, None),
    r("GET", "/openapi.json", "This document", Public, None),
    r(
        "POST",
        "/user/login",
        "Log in (OAuth2 password form); returns a bearer token",
        Public,
        Some("form"),
    ),
    r(
        "POST",
        "/user/logout",
        "Log out: revokes the token used",
        Verified,
        None,
    ),
    r(
        "POST",
        "/user/register",
        "Disabled: use /user/invite",
        Superuser,
        Some("json"),
    ),
    r("GET", "/user/invite", "Invite page", Public, None),
    r(
        "POST",
        "/user/invite",
        "Invite a user",
        Superuser,
        Some("json"),
    ),
    r(
        "GET",
        "/user/accept-invite",
        "Accept-invite page",
        Public,
        None,
    ),
    r(
        "POST",
        "/user/accept-invite",
        "Accept an invite and set a password",
        Public,
        Some("json"),
    ),
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
        "Request a password reset",
        Public,
        Some("json"),
    ),
    r(
        "POST",
        "/user/reset-password",
        "Reset a password with a reset token",
        Public,
        Some("json"),
    ),
    r(
        "POST",
        "/user/update-password",
        "Change a password (form)",
        Public,
        Some("form"),
    ),
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
    ),
    r("GET", "/whoami", "The current user", Verified, None),
    r(
        "PATCH",
        "/user/me",
        "Update the current user",
        User,
        Some("json"),
    ),
    r("GET", "/user/{id}", "A user", User, None),
    r("DELETE", "/user/{id}", "Delete a user", Superuser, None),
    r(
        "PATCH",
        "/user/{user_id}",
        "Update a user",
        Superuser,
        Some("json"),
    ),
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
    ),
    r(
        "DELETE",
        "/user-groups/{group_id}",
        "Delete a user group",
        Superuser,
        None,
    ),
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
    r("POST", "/node", "Create a node", User, Some("json")),
    r(
        "PUT",
        "/node/{node_id}",
        "Replace a node",
        User,
        Some("json"),
    ),
    r(
        "PATCH",
        "/node/{node_id}",
        "Update some fields of a node",
        User,
        Some("json"),
    ),
    r(
        "PUT",
        "/batch/nodeset",
        "Set processed_by_kcidb_bridge on nodes",
        User,
        Some("json"),
    ),
    r(
        "PUT",
        "/nodes/{node_id}",
        "Submit a result hierarchy",
        User,
        Some("json"),
    ),
    r("GET", "/events", "Event history", Public, None),
    r(
        "POST",
        "/subscribe/{channel}",
        "Subscribe to a channel (durable with subscriber_id)",
        User,
        None,
    ),
    r("POST", "/unsubscribe/{sub_id}", "Unsubscribe", User, None),
    r(
        "GET",
        "/listen/{sub_id}",
        "Wait for the next event (long poll)",
        User,
        None,
    ),
    r(
        "POST",
        "/ack/{sub_id}",
        "Acknowledge events up to a sequence number",
        User,
        Some("json"),
    ),
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
    r("GET", "/viewer", "Node viewer page", Public, None),
    r("GET", "/dashboard", "Dashboard page", Public, None),
    r("GET", "/manage", "Manage page", Public, None),
    r("GET", "/analytics", "Analytics page", Public, None),
    r("GET", "/stats", "Statistics page", Public, None),
    r("GET", "/icons/{icon_name}", "Icons", Public, None),
    r("GET", "/static/css/{filename}", "Stylesheets", Public, None),
    r("GET", "/static/js/{filename}", "Scripts", Public, None),
    r("GET", "/metrics", "Prometheus metrics", Public, None),
];

/// The OpenAPI document.
pub fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for route in ROUTES {
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| json!({"name": s.trim_matches(['{', '}']), "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "summary": route.summary,
            "operationId": format!("{}_{}", route.method.to_lowercase(), route.path.replace(['/', '{', '}', '-', '.'], "_").trim_matches('_')),
            "parameters": params,
            "responses": {
                "200": {"description": "Success", "content": {"application/json": {"schema": {}}}},
                "400": {"description": "Bad request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                "422": {"description": "Validation error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if route.access != Access::Public {
            op["security"] = json!([{"bearer": []}]);
            op["responses"]["401"] = json!({"description": "Unauthorized"});
        }
        match route.body {
            Some("json") => {
                op["requestBody"] = json!({"content": {"application/json": {"schema": {}}}})
            }
            Some(_) => {
                op["requestBody"] = json!({"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}})
            }
            None => {}
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "KernelCI API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Wire-compatible with the upstream KernelCI API; every route is also served under /v0 and without a prefix."},
        "servers": [{"url": "/latest"}],
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
