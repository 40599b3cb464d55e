//! Key/value routes (`/kv/{namespace}/{key}`), kept in the node store.

use serde_json::Value;
use warp::reply::Response;

use crate::app::App;
use crate::http::{ApiError, Request, ok};

/// `GET /kv/{ns}/{key}`.
pub async fn get(app: &App, req: &Request, ns: &str, key: &str) -> Result<Response, ApiError> {
    app.auth.user(req).await?;
    Ok(match app.store.kv_get(ns, key).await? {
        Some(v) => ok(Value::String(v))?,
        None => ok(Value::Null)?,
    })
}

/// `POST /kv/{ns}/{key}`: the body is a JSON string; empty or null deletes.
pub async fn set(app: &App, req: &Request, ns: &str, key: &str) -> Result<Response, ApiError> {
    let body = req.json()?;
    app.auth.user(req).await?;
    match body {
        Value::Null => {
            app.store.kv_delete(ns, key).await?;
        }
        Value::String(s) if s.is_empty() => {
            app.store.kv_delete(ns, key).await?;
        }
        Value::String(s) => app.store.kv_set(ns, key, &s).await?,
        other => {
            return Err(ApiError::validation(
                "body",
                "",
                "string_type",
                "Input should be a valid string",
                other,
            ));
        }
    }
    ok(Value::from("OK"))
}

/// `DELETE /kv/{ns}/{key}`.
pub async fn delete(app: &App, req: &Request, ns: &str, key: &str) -> Result<Response, ApiError> {
    app.auth.user(req).await?;
    app.store.kv_delete(ns, key).await?;
    ok(Value::from("Key-value pair deleted successfully"))
}
