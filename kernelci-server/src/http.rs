//! Request and response plumbing: the parsed request, upstream's error bodies, JSON replies.

use std::net::SocketAddr;

use bytes::Bytes;
use kernelci::models::{ModelError, ValidationErrors};
use kernelci::query::QueryError;
use kernelci::store::{Conflict, Entity, StoreError};
use serde::Serialize;
use serde_json::{Value, json};
use warp::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

/// One API request, after the version prefix was taken off the path. Its `Debug` output shows
/// neither header values nor the body (tokens, passwords).
#[derive(Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The path below the version prefix, e.g. `/node/65bb...`.
    pub path: String,
    /// `latest` or `v0`: the prefix the client used (bare paths count as `latest`).
    pub version: &'static str,
    /// Decoded query pairs, in order.
    pub query: Vec<(String, String)>,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// The peer address, when known.
    pub remote: Option<SocketAddr>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("version", &self.version)
            .field("query", &self.query)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("remote", &self.remote)
            .finish()
    }
}

impl Request {
    /// The client's address: the socket peer, or behind one of `proxies` the address it
    /// forwarded (see [`crate::proxy::client_ip`]).
    pub fn client_ip(&self, proxies: &[crate::proxy::Cidr]) -> Option<std::net::IpAddr> {
        crate::proxy::client_ip(self.remote.map(|a| a.ip()), &self.headers, proxies)
    }

    /// The path split into segments (no empty ones).
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The first value of a query parameter.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; invalid JSON is upstream's 422 `json_invalid` error.
    pub fn json(&self) -> Result<Value, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::unprocessable(json!([{
                "type": "json_invalid",
                "loc": ["body", e.column().saturating_sub(1)],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": python_json_error(&e)},
            }]))
        })
    }

    /// The body as an urlencoded form.
    pub fn form(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(&self.body).into_owned().collect()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What Python's `json` module says about a body serde_json could not parse (upstream shows
/// that text in the 422's `ctx.error`), e.g. `Expecting value`.
fn python_json_error(e: &serde_json::Error) -> &'static str {
    let text = e.to_string();
    if e.is_eof() {
        if text.contains("string") {
            "Unterminated string starting at"
        } else {
            "Expecting value"
        }
    } else if text.starts_with("trailing characters") {
        "Extra data"
    } else if text.starts_with("key must be a string") {
        "Expecting property name enclosed in double quotes"
    } else if text.starts_with("expected `:`") {
        "Expecting ':' delimiter"
    } else if text.starts_with("expected `,`") {
        "Expecting ',' delimiter"
    } else if text.starts_with("control character") {
        "Invalid control character at"
    } else if text.starts_with("invalid escape") || text.starts_with("invalid unicode") {
        "Invalid \\escape"
    } else {
        "Expecting value"
    }
}

/// A body that must be a JSON object: pydantic's 422 `model_attributes_type` otherwise.
pub fn json_object(body: &Value) -> Result<&serde_json::Map<String, Value>, ApiError> {
    body.as_object().ok_or_else(|| {
        ApiError::validation(
            "body",
            "",
            "model_attributes_type",
            "Input should be a valid dictionary",
            body,
        )
    })
}

/// Parses a boolean like pydantic does.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// An error reply: a status and a body (usually `{"detail": ...}`).
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The JSON body.
    pub body: Value,
    /// `Retry-After` seconds (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// `{"detail": "<message>"}` with `status`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: json!({ "detail": detail.into() }),
            retry_after: None,
        }
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn too_many_requests(what: &str, wait: std::time::Duration) -> ApiError {
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        ApiError {
            retry_after: Some(secs),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("Too many {what} from this address; try again in {secs} s"),
            )
        }
    }

    /// 422 for a query integer above `max` (pydantic's `less_than_equal`).
    pub fn above_maximum(field: &str, value: u64, max: u64) -> ApiError {
        ApiError::bound("query", field, &value.to_string(), "le", json!(max))
    }

    /// 422 for a value outside a bound: `bound` is `ge` (`greater_than_equal`) or `le`
    /// (`less_than_equal`), with pydantic's text (`Input should be greater than or equal to
    /// 0`; a whole float bound is written without its `.0`).
    pub fn bound(place: &str, field: &str, input: &str, bound: &str, limit: Value) -> ApiError {
        let (ty, words) = if bound == "ge" {
            ("greater_than_equal", "greater than or equal to")
        } else {
            ("less_than_equal", "less than or equal to")
        };
        let shown = match limit.as_f64() {
            Some(x) if x.fract() == 0.0 => format!("{}", x as i64),
            _ => limit.to_string(),
        };
        let mut e = ApiError::validation(
            place,
            field,
            ty,
            &format!("Input should be {words} {shown}"),
            input,
        );
        e.body["detail"][0]["ctx"] = json!({ bound: limit });
        e
    }

    /// 400 with a detail.
    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404 with a detail.
    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, detail)
    }

    /// 401 `Unauthorized`.
    pub fn unauthorized() -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized")
    }

    /// 403 `Forbidden`.
    pub fn forbidden() -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "Forbidden")
    }

    /// 422 with a pydantic-style error list.
    pub fn unprocessable(detail: Value) -> ApiError {
        ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({ "detail": detail }),
            retry_after: None,
        }
    }

    /// 422 for one field, pydantic style.
    pub fn validation(
        place: &str,
        field: &str,
        ty: &str,
        msg: &str,
        input: impl Serialize,
    ) -> ApiError {
        let mut loc = vec![Value::from(place)];
        loc.extend(
            field
                .split('.')
                .filter(|s| !s.is_empty())
                .map(|s| match s.parse::<u64>() {
                    Ok(i) => Value::from(i),
                    Err(_) => Value::from(s),
                }),
        );
        ApiError::unprocessable(json!([{ "type": ty, "loc": loc, "msg": msg, "input": input }]))
    }

    /// 422 for a field missing from a body or form.
    pub fn missing(place: &str, field: &str) -> ApiError {
        ApiError::validation(place, field, "missing", "Field required", Value::Null)
    }

    /// 500 with upstream's body.
    pub fn internal(message: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %message, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            body: json!({"message": "Internal server error, check container logs"}),
            retry_after: None,
        }
    }

    /// 422 with pydantic's error list for `errors`, each location under `prefix` (`["body"]`
    /// for a request body).
    pub fn unprocessable_input(prefix: &[Value], errors: &ValidationErrors) -> ApiError {
        ApiError::unprocessable(errors.to_detail(prefix))
    }

    /// 422 from a model decode error, 400 from a validation error (upstream's split: the
    /// request model's checks are 422s, the kind sub-model's are 400s with pydantic's text).
    /// The decoder's own words never reach the client.
    pub fn from_model(e: ModelError) -> ApiError {
        match &e {
            ModelError::Decode { path, syntax, .. } => {
                if *syntax {
                    ApiError::unprocessable(json!([{
                        "type": "json_invalid", "loc": ["body", 0], "msg": "JSON decode error",
                        "input": {}, "ctx": {"error": "Expecting value"},
                    }]))
                } else {
                    ApiError::validation(
                        "body",
                        path,
                        "value_error",
                        "Value error, the input does not match the model",
                        Value::Null,
                    )
                }
            }
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

/// Upstream's name of a stored entity in "... not found with id" texts.
fn entity_text(what: Entity) -> &'static str {
    match what {
        Entity::Node => "Node",
        Entity::User => "User",
        Entity::UserGroup => "User group",
        Entity::Subscriber => "Subscriber",
    }
}

/// Upstream's text for a write that clashed with a unique key.
fn conflict_text(conflict: &Conflict) -> String {
    match conflict {
        Conflict::NodeId(Some(id)) => format!("Object cannot be created with id: {id}"),
        Conflict::NodeId(None) => "Object cannot be created: an id is already taken".into(),
        Conflict::Username(name) => format!("Username already exists: {name}"),
        Conflict::Email(_) => "REGISTER_USER_ALREADY_EXISTS".into(),
        Conflict::GroupName(name) => format!("User group already exists with name: {name}"),
        Conflict::ConcurrentWrite(_) | Conflict::Other(_) => conflict.to_string(),
    }
}

/// Store errors in upstream's words: the store's errors are typed, the texts live here.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { what, id } => {
                ApiError::not_found(format!("{} not found with id: {id}", entity_text(what)))
            }
            StoreError::Conflict(c) => ApiError::bad_request(conflict_text(&c)),
            StoreError::Model(m) => ApiError::from_model(m),
            StoreError::EventsPurged { .. } => ApiError::new(StatusCode::GONE, e.to_string()),
            StoreError::Query(_) | StoreError::Invalid(_) => ApiError::bad_request(e.to_string()),
            StoreError::Timeout(_) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
            StoreError::Unavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            StoreError::Internal(_) => ApiError::internal(e),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> ApiError {
        match &e {
            QueryError::InvalidPagination { key, value, .. } => {
                // pydantic: an integer below the bound is `greater_than_equal` (limit >= 1,
                // offset >= 0), anything else `int_parsing`.
                if value.trim().parse::<i64>().is_ok() {
                    let min = if key == "limit" { 1 } else { 0 };
                    ApiError::bound("query", key, value, "ge", json!(min))
                } else {
                    ApiError::validation(
                        "query",
                        key,
                        "int_parsing",
                        "Input should be a valid integer, unable to parse string as an integer",
                        value,
                    )
                }
            }
            _ => ApiError::bad_request(e.to_string()),
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> ApiError {
        ApiError::from_model(e)
    }
}

/// A reply with status and JSON body.
pub fn json_reply(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"null".to_vec());
    let mut resp = Response::new(bytes.into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// 200 with a JSON body.
pub fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(json_reply(StatusCode::OK, &body))
}

/// 200 with a body that already is JSON text (nodes relayed as the store keeps them).
pub fn ok_json_text(body: String) -> Result<Response, ApiError> {
    Ok(typed(StatusCode::OK, "application/json", body))
}

/// 200 with a serialisable body.
pub fn ok_json<T: Serialize>(body: &T) -> Result<Response, ApiError> {
    let v = serde_json::to_value(body).map_err(ApiError::internal)?;
    ok(v)
}

/// An empty reply with `status`.
pub fn empty(status: StatusCode) -> Response {
    let mut resp = Response::new(Vec::new().into());
    *resp.status_mut() = status;
    resp
}

/// A reply with a content type.
pub fn typed(status: StatusCode, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
    let mut resp = Response::new(body.into().into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A 307 redirect.
pub fn redirect(location: &str) -> Response {
    let mut resp = empty(StatusCode::TEMPORARY_REDIRECT);
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

impl ApiError {
    /// The reply.
    pub fn into_response(self) -> Response {
        let mut resp = json_reply(self.status, &self.body);
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
