//! `GET /latest/openapi.json`: an OpenAPI 3.1 description of every route, made from the route
//! table ([`crate::table`]): its paths, access, statuses, query parameters, and the request and
//! answer schemas derived from the typed models (schemars; JSON Schema 2020-12, which OpenAPI
//! 3.1 uses as is).

use std::sync::OnceLock;

use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use crate::http::json_reply;
use crate::table::{Access, Body, Content, GROUPS, Route, routes};

fn describe(status: u16) -> &'static str {
    match status {
        200 => "Success",
        202 => "Accepted",
        204 => "Done (no body)",
        303 => "See other (a redirect)",
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
        502 => "The storage the log lives in did not answer",
        503 => "The store or the event bus is unavailable",
        504 => "The store did not answer in time",
        _ => "Other",
    }
}

/// One documented response: the success content, or the error body (JSON; an HTML page for
/// the pages).
fn response(route: &Route, status: u16, answer: Option<Value>) -> Value {
    let description = describe(status);
    if status == route.ok {
        return match route.content.media_type() {
            Some(m) => {
                let schema = match route.content {
                    Content::Json => answer.unwrap_or_else(|| json!({"type": "object"})),
                    Content::Png => json!({"type": "string", "format": "binary"}),
                    _ => json!({"type": "string"}),
                };
                json!({"description": description, "content": {m: {"schema": schema}}})
            }
            None => json!({"description": description}),
        };
    }
    if route.content == Content::Html {
        return json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}});
    }
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

/// A path parameter: object ids are 24 hex digits, subscription ids integers, file names
/// follow the pages' allow-list patterns (other values are a 400/404/422, documented).
fn path_schema(route: &Route, name: &str) -> Value {
    match name {
        "id" | "user_id" | "group_id" | "node_id" | "base" | "target" => {
            json!({"type": "string", "pattern": "^[0-9a-f]{24}$"})
        }
        "sub_id" => json!({"type": "integer", "minimum": 0}),
        "icon_name" => json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+\\.png$"}),
        "filename" if route.path.contains("/css/") => {
            json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+\\.css$"})
        }
        "filename" => json!({"type": "string", "pattern": "^[A-Za-z0-9_.-]+\\.js$"}),
        _ => json!({"type": "string"}),
    }
}

/// The operation id of a route: `get_node_node_id`.
pub fn operation_id(method: &str, path: &str) -> String {
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

/// The OpenAPI document (built once: the table does not change while the server runs).
pub fn document() -> &'static Value {
    static DOCUMENT: OnceLock<Value> = OnceLock::new();
    DOCUMENT.get_or_init(build)
}

fn build() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.definitions_path = "/components/schemas".into())
        .into_generator();
    let mut paths: Map<String, Value> = Map::new();
    for (tag, route) in routes() {
        let mut params: Vec<Value> = route
            .path_params()
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": path_schema(route, name)})
            })
            .collect();
        for q in route.query.iter().copied().flatten() {
            let schema = Value::from((q.schema)(&mut generator));
            let mut p = json!({"name": q.name, "in": "query", "required": q.required,
                               "description": q.description, "schema": schema});
            if p["schema"]["type"] == "array" {
                p["style"] = json!("form");
                p["explode"] = json!(true);
            }
            params.push(p);
        }
        let answer = route.response.map(|f| Value::from(f(&mut generator)));
        let mut responses = Map::new();
        for status in route.statuses() {
            responses.insert(status.to_string(), response(route, status, answer.clone()));
        }
        let mut op = json!({
            "tags": [tag],
            "summary": route.summary,
            "operationId": operation_id(route.method, route.path),
            "parameters": params,
            "responses": responses,
        });
        if tag == "viewer" {
            op["x-kernelci-extension"] = json!(true);
        }
        if route.access != Access::Public {
            op["security"] = json!([{"bearer": []}]);
        }
        let links = links(route);
        if !links.is_empty() {
            op["responses"][route.ok.to_string()]["links"] = Value::Object(links);
        }
        let body = match route.body {
            Body::None => None,
            Body::Json(f) => Some(("application/json", f)),
            Body::Form(f) => Some(("application/x-www-form-urlencoded", f)),
        };
        if let Some((media, f)) = body {
            let schema = Value::from(f(&mut generator));
            op["requestBody"] = json!({"required": true, "content": {media: {"schema": schema}}});
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| json!({}));
        entry[route.method.to_lowercase()] = op;
    }
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "properties": {"detail": {}}}),
    );
    let mut tags: Vec<Value> = Vec::new();
    for g in GROUPS {
        if !tags.iter().any(|t| t["name"] == g.tag) {
            tags.push(json!({"name": g.tag, "description": g.description}));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "KernelCI API", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Wire-compatible with the upstream KernelCI API; every route is also served under /v0 and without a prefix."},
        "servers": [{"url": "/latest"}],
        "tags": tags,
        "paths": paths,
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": schemas,
        },
    })
}

/// The document as a reply.
pub fn reply() -> Response {
    json_reply(StatusCode::OK, document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_answers_have_derived_schemas_that_resolve() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        // Every reference names a component.
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(schemas.contains_key(name), "dangling $ref {name}");
        }
        for name in ["Node", "UserRead", "UserGroup", "CheckoutData", "TestData"] {
            assert!(schemas.contains_key(name), "{name} missing");
        }
        let ok = |m: &str, p: &str| {
            doc["paths"][p][m]["responses"]["200"]["content"]["application/json"]["schema"].clone()
        };
        assert_eq!(ok("get", "/count")["type"], "integer");
        assert_eq!(
            ok("get", "/nodes")["$ref"],
            "#/components/schemas/Page_of_Node"
        );
        let trees = ok("get", "/viewer/api/trees");
        assert!(trees["$ref"].is_string(), "{trees}");
    }
}
