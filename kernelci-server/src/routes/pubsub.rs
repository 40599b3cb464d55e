//! Pub/sub routes: subscribe, unsubscribe, listen, publish, push, pop, stats, ack.

use std::time::Duration;

use kernelci::events::{CloudEvent, DEFAULT_TYPE, logged_event_attributes};
use kernelci::models::Timestamp;
use kernelci::store::NewEvent;
use serde_json::{Value, json};
use warp::reply::Response;

use crate::app::App;
use crate::http::{ApiError, Request, ok};

fn sub_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        ApiError::validation(
            "path",
            "sub_id",
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer",
            raw,
        )
    })
}

/// `POST /subscribe/{channel}`.
pub async fn subscribe(app: &App, req: &Request, channel: &str) -> Result<Response, ApiError> {
    let user = app.auth.user(req).await?;
    let promisc = req.flag("promisc")?;
    let sid = req.query_param("subscriber_id").filter(|s| !s.is_empty());
    let state = app
        .pubsub
        .subscribe(channel, &user.username, promisc, sid)
        .await?;
    ok(state.subscription())
}

/// `POST /unsubscribe/{id}`.
pub async fn unsubscribe(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let id = sub_id(id)?;
    let user = app.auth.user(req).await?;
    app.pubsub.unsubscribe(id, &user.username).await?;
    ok(Value::Null)
}

/// `GET /listen/{id}[?acknowledge=N][&max=N]`; `max` (our extension) asks for a JSON array of
/// up to `max` events (1..=1000) instead of upstream's one message.
pub async fn listen(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let id = sub_id(id)?;
    let user = app.auth.user(req).await?;
    let ack = match req.query_param("acknowledge") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError::validation(
                "query",
                "acknowledge",
                "int_parsing",
                "Input should be a valid integer",
                v,
            )
        })?),
    };
    let max = match req.query_param("max") {
        None => None,
        Some(v) => Some(batch_size(v)?),
    };
    app.pubsub
        .listen(id, &user.username, ack, max)
        .await?
        .into_response()
}

/// The `max` of a batched `/listen`: an integer in 1..=[`crate::pubsub::MAX_BATCH`].
fn batch_size(raw: &str) -> Result<usize, ApiError> {
    let bad = |ty: &str, msg: String| Err(ApiError::validation("query", "max", ty, &msg, raw));
    match raw.parse::<i64>() {
        Err(_) => bad(
            "int_parsing",
            "Input should be a valid integer, unable to parse string as an integer".into(),
        ),
        Ok(n) if n < 1 => bad(
            "greater_than_equal",
            "Input should be greater than or equal to 1".into(),
        ),
        Ok(n) => match usize::try_from(n) {
            Ok(n) if n <= crate::pubsub::MAX_BATCH => Ok(n),
            _ => bad(
                "less_than_equal",
                format!(
                    "Input should be less than or equal to {}",
                    crate::pubsub::MAX_BATCH
                ),
            ),
        },
    }
}

/// `POST /ack/{id}` with `{"sequence_id": N}` (our extension).
pub async fn ack(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let body = req.json()?;
    let id = sub_id(id)?;
    let user = app.auth.user(req).await?;
    let seq = match body.get("sequence_id") {
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::validation(
                "body",
                "sequence_id",
                "int_type",
                "Input should be a valid integer",
                v,
            )
        })?,
        None => return Err(ApiError::missing("body", "sequence_id")),
    };
    app.pubsub.ack(id, &user.username, seq).await?;
    ok(Value::Null)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A given `id`, `time` or `specversion` attribute must be what every CloudEvents reader
/// accepts: strings, and `time` an ISO 8601 time; a 422 naming the attribute otherwise.
fn check_core_attribute(key: &str, v: &Value) -> Result<(), ApiError> {
    if !matches!(key, "id" | "time" | "specversion") {
        return Ok(());
    }
    let loc = format!("attributes.{key}");
    let Some(text) = v.as_str() else {
        return Err(ApiError::validation(
            "body",
            &loc,
            "string_type",
            "Input should be a valid string",
            v,
        ));
    };
    if text.is_empty() && key != "time" {
        return Err(ApiError::validation(
            "body",
            &loc,
            "string_too_short",
            "String should have at least 1 character",
            v,
        ));
    }
    if key == "time" && Timestamp::parse(text).is_err() {
        return Err(ApiError::validation(
            "body",
            &loc,
            "datetime_from_date_parsing",
            "Input should be a valid datetime (ISO 8601)",
            v,
        ));
    }
    Ok(())
}

/// `POST /publish/{channel}`.
pub async fn publish(app: &App, req: &Request, channel: &str) -> Result<Response, ApiError> {
    let body = req.json()?;
    let user = app.auth.user(req).await?;
    let obj = crate::http::json_object(&body)?;
    let data = obj.get("data").cloned().unwrap_or(Value::Null);
    if obj.contains_key("data") && !truthy(&data) {
        return Err(ApiError::validation(
            "body",
            "data",
            "value_error",
            "Value error, None is not allowed as event payload",
            &data,
        ));
    }
    // Extra attributes become CloudEvent extension attributes; a given `id`, `time` or
    // `specversion` is kept as the envelope's (upstream's SDK does the same), the others get
    // a fresh uuid4 id, the log time and "1.0".
    let mut attributes = logged_event_attributes();
    if let Some(Value::Object(extra)) = obj.get("attributes") {
        for (k, v) in extra {
            if matches!(k.as_str(), "type" | "source" | "owner") {
                continue;
            }
            check_core_attribute(k, v)?;
            attributes.insert(k.clone(), v.clone());
        }
    }
    for key in ["type", "source"] {
        match obj.get(key) {
            Some(Value::String(s)) => {
                attributes.insert(key.into(), Value::String(s.clone()));
            }
            None | Some(Value::Null) => {}
            Some(other) => {
                return Err(ApiError::validation(
                    "body",
                    key,
                    "string_type",
                    "Input should be a valid string",
                    other,
                ));
            }
        }
    }
    let events = app
        .store
        .append_events(vec![NewEvent {
            channel: channel.to_owned(),
            owner: Some(user.username.clone()),
            data,
            attributes,
        }])
        .await?;
    if let Some(e) = events.first() {
        app.pubsub.wake(channel, e.sequence_id).await;
    }
    ok(Value::Null)
}

/// `POST /push/{list}`.
pub async fn push(app: &App, req: &Request, list: &str) -> Result<Response, ApiError> {
    let body = req.json()?;
    app.auth.user(req).await?;
    let mut obj = match body {
        Value::Object(o) => o,
        other => {
            return Err(ApiError::validation(
                "body",
                "",
                "model_attributes_type",
                "Input should be a valid dictionary",
                other,
            ));
        }
    };
    let data = obj
        .remove("data")
        .ok_or_else(|| ApiError::missing("body", "data"))?;
    let mut ev = CloudEvent::new(data);
    if obj.is_empty() {
        ev.source.clone_from(&app.config.cloud_events_source);
        ev.ty = DEFAULT_TYPE.into();
    } else {
        for (k, v) in obj {
            match (k.as_str(), v) {
                ("type", Value::String(s)) => ev.ty = s,
                ("source", Value::String(s)) => ev.source = s,
                (_, v) => {
                    ev.extensions.insert(k, v);
                }
            }
        }
    }
    app.bus
        .push(list, &ev.to_json())
        .await
        .map_err(|e| ApiError::new(warp::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    ok(Value::Null)
}

/// `GET /pop/{list}`: blocks until an item arrives.
pub async fn pop(app: &App, req: &Request, list: &str) -> Result<Response, ApiError> {
    app.auth.user(req).await?;
    loop {
        match app.bus.pop(list, Duration::from_secs(1)).await {
            Ok(Some(item)) => {
                let v: Value = serde_json::from_str(&item).unwrap_or(Value::String(item));
                return ok(v);
            }
            Ok(None) => continue,
            Err(e) => {
                return Err(ApiError::new(
                    warp::http::StatusCode::SERVICE_UNAVAILABLE,
                    e.to_string(),
                ));
            }
        }
    }
}

/// `GET /stats/subscriptions`.
pub async fn stats(app: &App, req: &Request) -> Result<Response, ApiError> {
    app.auth.superuser(req).await?;
    ok(json!(app.pubsub.stats().await?))
}
