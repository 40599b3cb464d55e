//! Telemetry routes: insert, list, statistics, anomalies (api spec §3.6).

use std::collections::BTreeMap;

use kernelci::models::Timestamp;
use kernelci::query::{Filter, Op, Operand, Scalar};
use kernelci::store::{TelemetryGroup, TelemetryQuery};
use serde_json::{Map, Value, json};
use warp::reply::Response;

use super::MAX_PAGE_LIMIT;
use crate::app::App;
use crate::http::{ApiError, Request, ok};
use crate::query::Page;

const STR_FIELDS: [&str; 13] = [
    "device_type",
    "device_id",
    "job_name",
    "test_name",
    "job_id",
    "node_id",
    "tree",
    "branch",
    "arch",
    "result",
    "error_type",
    "error_msg",
    "runtime",
];
const GROUP_FIELDS: [&str; 10] = [
    "runtime",
    "lab",
    "device_type",
    "device_id",
    "job_name",
    "tree",
    "branch",
    "arch",
    "kind",
    "error_type",
];

fn check_event(v: &Value) -> Result<Value, String> {
    let obj = v.as_object().ok_or("Input should be a valid dictionary")?;
    let mut out = Map::new();
    let ts = match obj.get("ts") {
        None | Some(Value::Null) => Timestamp::now(),
        Some(Value::String(s)) => Timestamp::parse(s).map_err(|e| format!("ts\n  {e}"))?,
        Some(_) => return Err("ts\n  Input should be a valid datetime".into()),
    };
    out.insert("ts".into(), Value::String(ts.to_string()));
    match obj.get("kind") {
        Some(Value::String(s)) => out.insert("kind".into(), Value::String(s.clone())),
        _ => return Err("kind\n  Field required or not a string".into()),
    };
    match obj.get("runtime") {
        Some(Value::String(_)) => {}
        _ => return Err("runtime\n  Field required or not a string".into()),
    }
    for f in STR_FIELDS {
        match obj.get(f) {
            None | Some(Value::Null) => {
                out.insert(f.into(), Value::Null);
            }
            Some(Value::String(s)) => {
                out.insert(f.into(), Value::String(s.clone()));
            }
            Some(_) => return Err(format!("{f}\n  Input should be a valid string")),
        }
    }
    out.insert(
        "is_infra_error".into(),
        match obj.get("is_infra_error") {
            None | Some(Value::Null) => Value::Bool(false),
            Some(Value::Bool(b)) => Value::Bool(*b),
            Some(_) => return Err("is_infra_error\n  Input should be a valid boolean".into()),
        },
    );
    out.insert(
        "retry".into(),
        match obj.get("retry") {
            None | Some(Value::Null) => Value::from(0),
            Some(v) if v.is_i64() => v.clone(),
            Some(_) => return Err("retry\n  Input should be a valid integer".into()),
        },
    );
    out.insert(
        "extra".into(),
        match obj.get("extra") {
            None | Some(Value::Null) => Value::Object(Map::new()),
            Some(Value::Object(o)) => Value::Object(o.clone()),
            Some(_) => return Err("extra\n  Input should be a valid dictionary".into()),
        },
    );
    Ok(Value::Object(out))
}

/// `POST /telemetry`.
pub async fn add(app: &App, req: &Request) -> Result<Response, ApiError> {
    let body = req.json()?;
    app.auth.user(req).await?;
    let items = body.as_array().ok_or_else(|| {
        ApiError::validation(
            "body",
            "",
            "list_type",
            "Input should be a valid list",
            &body,
        )
    })?;
    if items.is_empty() {
        return Err(ApiError::bad_request("Events list cannot be empty"));
    }
    let mut docs = Vec::with_capacity(items.len());
    for item in items {
        let doc = check_event(item).map_err(|e| {
            ApiError::bad_request(format!(
                "Invalid telemetry event: 1 validation error for TelemetryEvent\n{e}"
            ))
        })?;
        docs.push(doc);
    }
    let n = app.telemetry.insert_telemetry(docs).await?;
    ok(json!({"inserted": n}))
}

fn time_param(req: &Request, name: &str) -> Result<Option<Timestamp>, ApiError> {
    req.query_param(name)
        .map(|v| Timestamp::parse(v).map_err(|e| ApiError::bad_request(e.to_string())))
        .transpose()
}

/// The documents `filter` matches with `ts` in the request's `[since, until]`.
fn selected(req: &Request, filter: Filter) -> Result<TelemetryQuery, ApiError> {
    Ok(TelemetryQuery {
        filter,
        since: time_param(req, "since")?,
        until: time_param(req, "until")?,
    })
}

fn eq(f: Filter, field: &str, v: &str) -> Filter {
    let s = match v.to_ascii_lowercase().as_str() {
        "true" => Scalar::Bool(true),
        "false" => Scalar::Bool(false),
        _ => Scalar::Str(v.to_owned()),
    };
    f.and(field, Op::Eq, Operand::One(s))
}

/// `GET /telemetry`.
pub async fn list(app: &App, req: &Request) -> Result<Response, ApiError> {
    let mut f = Filter::all();
    let page = Page::from_request(req, 1, Some(MAX_PAGE_LIMIT))?;
    let (limit, offset) = (page.limit.unwrap_or(50), page.offset);
    for (k, v) in &req.query {
        match k.as_str() {
            "since" | "until" | "limit" | "offset" => {}
            "is_infra_error" => {
                let b = match v.to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "Bad is_infra_error value, use 'true' or 'false'",
                        ));
                    }
                };
                f = f.and("is_infra_error", Op::Eq, Operand::One(Scalar::Bool(b)));
            }
            _ => f = eq(f, k, v),
        }
    }
    let (items, total) = app
        .telemetry
        .find_telemetry(&selected(req, f)?, offset, Some(limit))
        .await?;
    ok(json!({"items": items, "total": total, "limit": limit, "offset": offset}))
}

/// A group of the anomaly report: its counts and its latest document's time and error.
#[derive(Default)]
struct Counts {
    counts: TelemetryGroup,
    last_seen: Option<String>,
    latest_error_type: Value,
    latest_error_msg: Value,
}

impl Counts {
    fn add(&mut self, doc: &Value) {
        self.counts.add(doc);
        if let Some(ts) = doc.get("ts").and_then(Value::as_str)
            && self.last_seen.as_deref().is_none_or(|l| l < ts)
        {
            self.last_seen = Some(ts.to_owned());
            if !doc.get("error_type").is_none_or(Value::is_null) {
                self.latest_error_type = doc["error_type"].clone();
                self.latest_error_msg = doc.get("error_msg").cloned().unwrap_or(Value::Null);
            }
        }
    }
}

/// Writes a group's counts (`total`, `pass`, `fail`, `incomplete`, `skip`, `infra_error`).
fn put_counts(o: &mut Map<String, Value>, c: &TelemetryGroup) {
    for (k, v) in [
        ("total", c.total),
        ("pass", c.pass),
        ("fail", c.fail),
        ("incomplete", c.incomplete),
        ("skip", c.skip),
        ("infra_error", c.infra_error),
    ] {
        o.insert(k.into(), json!(v));
    }
}

fn field_of(doc: &Value, key: &str) -> Value {
    let k = if key == "lab" { "runtime" } else { key };
    doc.get(k).cloned().unwrap_or(Value::Null)
}

/// `GET /telemetry/stats`: counted in the database ([`TelemetryStore::telemetry_stats`]);
/// each row holds exactly the `group_by` keys asked for (`lab` reads `runtime`).
pub async fn stats(app: &App, req: &Request) -> Result<Response, ApiError> {
    let group_by = req
        .query_param("group_by")
        .ok_or_else(|| ApiError::bad_request("'group_by' parameter is required"))?;
    let keys: Vec<&str> = group_by
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let bad: Vec<&str> = keys
        .iter()
        .copied()
        .filter(|k| !GROUP_FIELDS.contains(k))
        .collect();
    if !bad.is_empty() {
        let set = bad
            .iter()
            .map(|b| format!("'{b}'"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(ApiError::bad_request(format!(
            "Invalid group_by fields: {{{set}}}"
        )));
    }
    let (lab, runtime) = (req.query_param("lab"), req.query_param("runtime"));
    if let (Some(l), Some(r)) = (lab, runtime)
        && l != r
    {
        return Err(ApiError::bad_request(
            "'lab' and 'runtime' must match when both are provided",
        ));
    }
    let mut f = Filter::all();
    // Exact filters: every group field but `runtime`/`lab` (below) and `error_type`.
    for k in GROUP_FIELDS
        .into_iter()
        .filter(|k| !matches!(*k, "runtime" | "lab" | "error_type"))
    {
        if let Some(v) = req.query_param(k) {
            f = eq(f, k, v);
        }
    }
    if let Some(r) = runtime.or(lab) {
        f = eq(f, "runtime", r);
    }
    let query = selected(req, f)?;
    let fields: Vec<String> = keys
        .iter()
        .map(|k| if *k == "lab" { "runtime" } else { k }.to_owned())
        .collect();
    let mut groups = app.telemetry.telemetry_stats(&query, &fields).await?;
    // Largest first; equal totals in the order of their keys.
    groups.sort_by_cached_key(|g| {
        (
            std::cmp::Reverse(g.total),
            serde_json::to_string(&g.keys).unwrap_or_default(),
        )
    });
    let out: Vec<Value> = groups
        .into_iter()
        .map(|g| {
            let mut o = Map::new();
            for (k, v) in keys.iter().zip(g.keys.iter()) {
                o.insert((*k).into(), v.clone());
            }
            put_counts(&mut o, &g);
            Value::Object(o)
        })
        .collect();
    ok(Value::Array(out))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `GET /telemetry/anomalies`.
pub async fn anomalies(app: &App, req: &Request) -> Result<Response, ApiError> {
    let window = req.query_param("window").unwrap_or("6h");
    let hours: i64 = match window {
        "1h" => 1,
        "3h" => 3,
        "6h" => 6,
        "12h" => 12,
        "24h" => 24,
        "48h" => 48,
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid window '{other}'. Use: 1h, 3h, 6h, 12h, 24h, 48h"
            )));
        }
    };
    let threshold = req.query_float("threshold", 0.0, 1.0)?.unwrap_or(0.5);
    let min_total = req.query_int("min_total", 1)?.map_or(3, |n| n as u64);
    let scope = req.query_param("scope").unwrap_or("device_type");
    if scope != "device_type" && scope != "device" {
        return Err(ApiError::validation(
            "query",
            "scope",
            "string_pattern_mismatch",
            "String should match pattern '^(device_type|device)$'",
            scope,
        ));
    }
    let since = Timestamp::now().plus_secs(-hours * 3600);
    let (docs, _) = app
        .telemetry
        .find_telemetry(
            &TelemetryQuery {
                since: Some(since),
                ..TelemetryQuery::default()
            },
            0,
            None,
        )
        .await?;
    let mut results: BTreeMap<String, (Vec<Value>, Counts)> = BTreeMap::new();
    let mut errors: BTreeMap<(String, String), u64> = BTreeMap::new();
    for d in &docs {
        let kind = d.get("kind").and_then(Value::as_str).unwrap_or_default();
        let device_id = d
            .get("device_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let wanted = if scope == "device" {
            kind == "job_result" && !device_id.is_empty()
        } else {
            kind == "job_result" || kind == "test_result"
        };
        if wanted {
            let mut key = vec![field_of(d, "runtime"), field_of(d, "device_type")];
            if scope == "device" {
                key.push(field_of(d, "device_id"));
            }
            let e = results
                .entry(serde_json::to_string(&key).unwrap_or_default())
                .or_insert_with(|| (key, Counts::default()));
            e.1.add(d);
        }
        if kind == "runtime_error" || kind == "job_skip" {
            let rt = d
                .get("runtime")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let et = d
                .get("error_type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            *errors.entry((rt, et)).or_default() += 1;
        }
    }
    let mut result_anomalies: Vec<Value> = Vec::new();
    for (key, group) in results.into_values() {
        let c = &group.counts;
        if c.total < min_total {
            continue;
        }
        let infra_rate = c.infra_error as f64 / c.total as f64;
        let fail_rate = (c.fail + c.incomplete) as f64 / c.total as f64;
        if infra_rate < threshold && fail_rate < threshold {
            continue;
        }
        let mut o = Map::new();
        o.insert("runtime".into(), key[0].clone());
        o.insert("lab".into(), key[0].clone());
        o.insert("device_type".into(), key[1].clone());
        if scope == "device" {
            o.insert("device_id".into(), key[2].clone());
        }
        put_counts(&mut o, c);
        o.insert("infra_rate".into(), json!(round3(infra_rate)));
        o.insert("fail_rate".into(), json!(round3(fail_rate)));
        o.insert(
            "constant_failure".into(),
            json!(c.pass == 0 && c.fail + c.incomplete == c.total),
        );
        o.insert(
            "constant_infra_failure".into(),
            json!(c.infra_error == c.total),
        );
        o.insert("last_seen".into(), json!(group.last_seen));
        o.insert("latest_error_type".into(), group.latest_error_type);
        o.insert("latest_error_msg".into(), group.latest_error_msg);
        result_anomalies.push(Value::Object(o));
    }
    result_anomalies.sort_by(|a, b| {
        let k = |v: &Value| {
            (
                v["infra_rate"].as_f64().unwrap_or(0.0),
                v["fail_rate"].as_f64().unwrap_or(0.0),
            )
        };
        k(b).partial_cmp(&k(a)).unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut error_anomalies: Vec<Value> = errors
        .into_iter()
        .filter(|(_, n)| *n >= min_total)
        .map(|((rt, et), n)| json!({"runtime": rt, "error_type": et, "count": n}))
        .collect();
    error_anomalies.sort_by_key(|v| std::cmp::Reverse(v["count"].as_u64().unwrap_or(0)));
    ok(json!({
        "window": window, "threshold": threshold, "min_total": min_total, "scope": scope,
        "since": format!("{since}+00:00"),
        "result_anomalies": result_anomalies, "error_anomalies": error_anomalies,
    }))
}
