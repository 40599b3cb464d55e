//! `GET /events`: the event history.

use kernelci::models::{ObjectId, Timestamp};
use kernelci::query::{Filter, Op, Operand, Scalar};
use kernelci::store::{EventFilter, StoreError, StoredEvent};
use serde_json::Value;
use warp::reply::Response;

use crate::app::App;
use crate::http::{ApiError, Request, ok, parse_bool};
use crate::query::Page;
use crate::stream;

fn eq(f: Filter, field: &str, v: Scalar) -> Filter {
    f.and(field, Op::Eq, Operand::One(v))
}

fn raw_value(v: &str) -> Scalar {
    match v.to_ascii_lowercase().as_str() {
        "true" => Scalar::Bool(true),
        "false" => Scalar::Bool(false),
        _ => Scalar::Str(v.to_owned()),
    }
}

/// The `from` parameter: an ISO 8601 time, or (as upstream documents, though it never read
/// one) a Unix time in seconds, with a fraction or not.
fn parse_from(v: &str) -> Option<Timestamp> {
    if let Ok(t) = Timestamp::parse(v) {
        return Some(t);
    }
    let secs: f64 = v.trim().parse().ok()?;
    if !secs.is_finite() {
        return None;
    }
    let micros = (secs * 1e6).round();
    // Within i64 microseconds; `from_micros` then checks the calendar range.
    if micros.abs() >= 9.0e18 {
        return None;
    }
    Timestamp::from_micros(micros as i64)
}

/// `GET /events`: filters as upstream, results in sequence order; long answers stream.
pub async fn list(app: &App, req: &Request) -> Result<Response, ApiError> {
    let mut f = Filter::all();
    let Page { limit, offset } = Page::from_request(req, 0, None)?;
    let mut recursive = false;
    let (mut id, mut ids) = (None, None);
    let has = |k: &str| req.query_param(k).is_some();
    if has("node_id") && has("data.id") {
        return Err(ApiError::bad_request(
            "Provide either node_id or data.id, not both",
        ));
    }
    if has("id") && has("ids") {
        return Err(ApiError::bad_request("Provide either id or ids, not both"));
    }
    for (k, v) in &req.query {
        match k.as_str() {
            "kind" | "state" | "result" | "op" | "name" | "group" | "owner" => {
                if !v.is_empty() {
                    f = eq(f, &format!("data.{k}"), Scalar::Str(v.clone()));
                }
            }
            "channel" => f = eq(f, "channel", Scalar::Str(v.clone())),
            "path" => {
                let re = regex::Regex::new(v)
                    .map_err(|e| ApiError::bad_request(format!("Invalid path regex: {e}")))?;
                f = f.and("data.path", Op::Re, Operand::Regex(re));
            }
            "node_id" => f = eq(f, "data.id", Scalar::Str(v.clone())),
            "id" => {
                id = Some(
                    ObjectId::parse_str(v)
                        .map_err(|_| ApiError::bad_request("Invalid id format"))?,
                )
            }
            "ids" => {
                let parts: Vec<&str> = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect();
                if parts.is_empty() {
                    return Err(ApiError::bad_request("ids must contain at least one id"));
                }
                let parsed: Result<Vec<ObjectId>, _> =
                    parts.iter().map(|p| ObjectId::parse_str(p)).collect();
                ids = Some(parsed.map_err(|_| ApiError::bad_request("Invalid ids format"))?);
            }
            "from" => {
                let t = parse_from(v).ok_or_else(|| {
                    ApiError::bad_request("Invalid 'from' parameter, must be an ISO 8601 datetime")
                })?;
                f = f.and("timestamp", Op::Gt, Operand::One(Scalar::Time(t)));
            }
            "limit" | "offset" => {}
            // Upstream turned recursion on for any non-empty value, `false` included; here
            // it is a boolean, and an empty value means off.
            "recursive" => {
                recursive = !v.is_empty() && {
                    parse_bool(v).ok_or_else(|| {
                        ApiError::validation(
                            "query",
                            "recursive",
                            "bool_parsing",
                            "Input should be a valid boolean, unable to interpret input",
                            v,
                        )
                    })?
                }
            }
            _ => f = eq(f, k, raw_value(v)),
        }
    }
    if let Some(id) = id {
        f = eq(f, "id", Scalar::Str(id.to_hex()));
    }
    if let Some(ids) = ids {
        f = f.and(
            "id",
            Op::In,
            Operand::List(ids.iter().map(|i| Scalar::Str(i.to_hex())).collect()),
        );
    }
    if recursive && limit.is_none_or(|l| l > 1000) {
        return Err(ApiError::bad_request(
            "Recursive limit is too large, max is 1000",
        ));
    }
    // At most one page is read before the answer starts (its errors are statuses); more is
    // streamed: `limit` has no maximum and no default, as upstream, in bounded memory.
    let first = limit.map_or(stream::PAGE, |l| l.min(stream::PAGE));
    let events = app.store.find_events(&f, offset, Some(first)).await?;
    if recursive || (events.len() as u64) < stream::PAGE || limit.is_some_and(|l| l <= stream::PAGE)
    {
        let mut out = Vec::with_capacity(events.len());
        for e in events {
            let mut doc = e.to_document();
            if recursive
                && let Some(nid) = e
                    .data
                    .get("id")
                    .and_then(Value::as_str)
                    .and_then(|s| ObjectId::parse_str(s).ok())
                && let Some(node) = app.store.get_node(nid).await?
                && let Some(o) = doc.as_object_mut()
            {
                o.insert("node".into(), node.to_value());
            }
            out.push(doc);
        }
        return ok(Value::Array(out));
    }
    let store = app.store.clone();
    let channel = req.query_param("channel").map(str::to_owned);
    Ok(stream::json_response(move |mut w| async move {
        if w.raw("[").await.is_err() {
            return;
        }
        match stream_events(store.as_ref(), &f, channel, limit, events, &mut w).await {
            Ok(()) => {
                if w.raw("]").await.is_ok() {
                    let _ = w.finish().await;
                }
            }
            Err(Some(e)) => w.abort(e).await,
            Err(None) => {}
        }
    }))
}

/// Writes `first` (the first page of matches, read with the request's offset), then every
/// later match: the log is read in sequence order after the last match, a page at a time
/// (the sequence index; on `channel` when given), and `filter` is applied here, until
/// `limit` matches or the end. `Err(None)`: the client went away.
async fn stream_events(
    store: &dyn kernelci::store::EventLog,
    filter: &Filter,
    channel: Option<String>,
    limit: Option<u64>,
    first: Vec<StoredEvent>,
    w: &mut stream::JsonWriter,
) -> Result<(), Option<String>> {
    let gone = |_| None;
    let text = |doc: &Value| serde_json::to_string(doc).map_err(|e| Some(e.to_string()));
    let left = |w: &stream::JsonWriter| limit.map_or(u64::MAX, |l| l.saturating_sub(w.items()));
    let mut after = first.last().map_or(0, |e| e.sequence_id);
    for e in first {
        w.item(&text(&e.to_document())?).await.map_err(gone)?;
    }
    let wanted = EventFilter {
        channel,
        owner: None,
    };
    while left(w) > 0 {
        let batch = match store
            .events_after(after, &wanted, stream::PAGE as usize)
            .await
        {
            Ok(b) => b,
            // Retention removed events meanwhile: they are gone for every reader; go on.
            Err(StoreError::EventsPurged { oldest, .. }) if oldest > after + 1 => {
                after = oldest - 1;
                continue;
            }
            Err(e) => return Err(Some(e.to_string())),
        };
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = last.sequence_id;
        for e in batch {
            let doc = e.to_document();
            if filter.matches(&doc) {
                w.item(&text(&doc)?).await.map_err(gone)?;
                if left(w) == 0 {
                    break;
                }
            }
        }
    }
    Ok(())
}
