//! The HTML pages, rendered on the server from the same data the JSON endpoints answer, with
//! minijinja templates compiled into the binary (`assets/viewer/*.html`; HTML auto-escaping on).

use std::sync::OnceLock;

use kernelci::query::Query;
use kernelci::store::results::{ResultCategory, StatusGroup};
use kernelci::store::{FindOptions, Sort};
use minijinja::Environment;
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use super::api::{self, MAX_HISTORY, category_param};
use super::data;
use super::log::LOG_CAP;
use super::model::{CheckoutSummary, FACETS, ResultFilters, ResultRow, RevisionInfo, encode_pairs};
use crate::app::App;
use crate::http::{ApiError, Request, typed};
use crate::query::int_param;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../assets/viewer/base.html")),
    (
        "macros.html",
        include_str!("../../assets/viewer/macros.html"),
    ),
    ("trees.html", include_str!("../../assets/viewer/trees.html")),
    (
        "checkout.html",
        include_str!("../../assets/viewer/checkout.html"),
    ),
    (
        "result.html",
        include_str!("../../assets/viewer/result.html"),
    ),
    ("log.html", include_str!("../../assets/viewer/log.html")),
    (
        "compare.html",
        include_str!("../../assets/viewer/compare.html"),
    ),
    (
        "health.html",
        include_str!("../../assets/viewer/health.html"),
    ),
    ("node.html", include_str!("../../assets/viewer/node.html")),
    ("nodes.html", include_str!("../../assets/viewer/nodes.html")),
    (
        "manage.html",
        include_str!("../../assets/viewer/manage.html"),
    ),
    ("error.html", include_str!("../../assets/viewer/error.html")),
];

fn env() -> &'static Result<Environment<'static>, String> {
    static ENV: OnceLock<Result<Environment<'static>, String>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.add_filter("urlencode", |s: String| {
            form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        });
        for (name, text) in TEMPLATES {
            env.add_template(name, text)
                .map_err(|e| format!("template {name}: {e}"))?;
        }
        Ok(env)
    })
}

/// Renders a page with `status` (HTML-escaped values, no caching by the browser).
pub fn render_with(status: StatusCode, name: &str, ctx: &Value) -> Result<Response, ApiError> {
    let env = env().as_ref().map_err(ApiError::internal)?;
    let body = env
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(ctx)))
        .map_err(|e| ApiError::internal(format!("rendering {name}: {e}")))?;
    Ok(crate::routes::pages::no_cache(typed(
        status,
        "text/html; charset=utf-8",
        body,
    )))
}

/// Renders a page (200).
pub fn render(name: &str, ctx: &Value) -> Result<Response, ApiError> {
    render_with(StatusCode::OK, name, ctx)
}

/// An error as a page with the error's status.
pub fn error_page(e: ApiError) -> Response {
    let detail = match e.body.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => e.body.to_string(),
    };
    let ctx = json!({"status": e.status.as_u16(), "detail": detail, "nav": ""});
    render_with(e.status, "error.html", &ctx).unwrap_or_else(|_| e.into_response())
}

fn checkout_url(id: &str, pairs: &[(String, String)]) -> String {
    let q = encode_pairs(pairs);
    if q.is_empty() {
        format!("/viewer/checkout/{id}")
    } else {
        format!("/viewer/checkout/{id}?{q}")
    }
}

/// Links of each category × status to the revision page with that filter.
fn count_links(id: &str) -> Value {
    let mut out = serde_json::Map::new();
    for c in ResultCategory::ALL {
        let mut per = serde_json::Map::new();
        for s in StatusGroup::ALL {
            let pairs = [
                ("tab".to_owned(), c.as_str().to_owned()),
                ("status".to_owned(), s.as_str().to_owned()),
            ];
            per.insert(s.as_str().into(), json!(checkout_url(id, &pairs)));
        }
        out.insert(c.as_str().into(), Value::Object(per));
    }
    Value::Object(out)
}

/// `GET /viewer/trees?days=&tree=` (and `/viewer`, `/dashboard`, titled `title`).
pub async fn trees(app: &App, req: &Request, title: Option<&str>) -> Result<Response, ApiError> {
    let days = int_param(req, "days", 7, 1, 365)? as u32;
    let tree = req.query_param("tree").unwrap_or_default();
    let data = data::trees(app, days, Some(tree)).await?;
    let rows: Vec<Value> = data
        .items
        .iter()
        .map(|r| {
            json!({"revision": r.revision, "counts": r.counts, "short_commit": r.revision.short_commit(),
                   "link": checkout_url(&r.revision.id, &[]), "links": count_links(&r.revision.id)})
        })
        .collect();
    let api = format!(
        "/viewer/api/trees?{}",
        encode_pairs(&[
            ("days".into(), days.to_string()),
            ("tree".into(), tree.to_owned())
        ])
    );
    render(
        "trees.html",
        &json!({"nav": "trees", "days": days, "tree": tree, "windows": [1, 7, 30, 90, 365],
                "rows": rows, "api": api, "page_title": title}),
    )
}

/// `GET /viewer/tree/{tree}/{branch}`: the latest revision's page.
pub async fn tree_latest(app: &App, tree: &str, branch: &str) -> Result<Response, ApiError> {
    let latest = data::latest(app, tree, branch)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("No checkout of {tree}/{branch}")))?;
    let id = latest.id.map(|i| i.to_hex()).unwrap_or_default();
    Ok(crate::http::redirect(&format!("/viewer/checkout/{id}")))
}

fn tab_label(c: ResultCategory) -> &'static str {
    match c {
        ResultCategory::Build => "Builds",
        ResultCategory::Boot => "Boots",
        ResultCategory::Test => "Tests",
    }
}

/// `GET /viewer/checkout/{id}`: the revision page.
pub async fn checkout(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let filters = ResultFilters::from_request(req)?;
    let tab = category_param(req)?;
    let offset = int_param(req, "offset", 0, 0, u64::from(u32::MAX))?;
    let limit = int_param(req, "limit", 100, 1, api::MAX_PAGE)?;
    let node = data::checkout(app, id).await?;
    let summary: CheckoutSummary = data::summary(app, &node, &filters).await?;
    let results = data::results(app, &node, tab, &filters, offset, limit).await?;
    let history = data::history(app, &node, &filters, 10).await?;
    let rev = &summary.checkout;
    let keep = |extra: &[(&str, String)]| -> String {
        let mut pairs = vec![("tab".to_owned(), tab.as_str().to_owned())];
        pairs.extend(filters.pairs());
        for (k, v) in extra {
            pairs.retain(|(pk, _)| pk != k);
            pairs.push(((*k).to_owned(), v.clone()));
        }
        checkout_url(&rev.id, &pairs)
    };
    let tabs: Vec<Value> = ResultCategory::ALL
        .iter()
        .map(|c| {
            let mut pairs = vec![("tab".to_owned(), c.as_str().to_owned())];
            pairs.extend(filters.pairs());
            json!({"name": c.as_str(), "label": tab_label(*c), "counts": summary.counts.get(*c),
                   "active": *c == tab, "url": checkout_url(&rev.id, &pairs)})
        })
        .collect();
    let mut strip: Vec<Value> = history
        .items
        .iter()
        .map(|h| {
            let mut pairs = vec![("tab".to_owned(), tab.as_str().to_owned())];
            pairs.extend(filters.pairs());
            json!({"revision": h.revision, "short_commit": h.revision.short_commit(),
                   "counts": h.counts.get(tab), "current": h.revision.id == rev.id,
                   "link": checkout_url(&h.revision.id, &pairs)})
        })
        .collect();
    strip.reverse();
    let compare = history
        .items
        .iter()
        .position(|h| h.revision.id == rev.id)
        .and_then(|i| history.items.get(i + 1))
        .map(|prev| {
            let q = filters.query_string();
            let base = format!("/viewer/compare/{}/{}", prev.revision.id, rev.id);
            if q.is_empty() {
                base
            } else {
                format!("{base}?{q}")
            }
        });
    let facet_menus: Vec<Value> = FACETS
        .iter()
        .map(|(name, _)| {
            json!({"name": name, "values": summary.facets.get(*name).cloned().unwrap_or_default(),
                   "selected": filters.facets.get(*name).cloned().unwrap_or_default()})
        })
        .collect();
    let breakdowns: Vec<Value> = FACETS
        .iter()
        .map(|(name, _)| {
            let rows: Vec<Value> = summary
                .breakdowns
                .get(*name)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter(|r| r.counts.get(tab).total() > 0)
                .map(|r| {
                    json!({"value": r.value, "counts": r.counts.get(tab),
                           "link": r.value.as_ref().map(|v| keep(&[(name, v.clone()), ("offset", "0".into())]))})
                })
                .collect();
            json!({"name": name, "rows": rows})
        })
        .collect();
    let prev_page =
        (offset > 0).then(|| keep(&[("offset", offset.saturating_sub(limit).to_string())]));
    let next_page =
        (offset + limit < results.total).then(|| keep(&[("offset", (offset + limit).to_string())]));
    let mut api_pairs = vec![("category".to_owned(), tab.as_str().to_owned())];
    api_pairs.extend(filters.pairs());
    let ctx = json!({
        "nav": "trees", "rev": rev, "short_commit": rev.short_commit(), "tab": tab.as_str(),
        "tab_label": tab_label(tab), "tabs": tabs, "history": strip, "compare": compare,
        "selected": {"status": filters.status.iter().map(|s| s.as_str()).collect::<Vec<_>>()},
        "facet_menus": facet_menus, "breakdowns": breakdowns, "filtered": !filters.is_empty(),
        "clear": checkout_url(&rev.id, &[("tab".to_owned(), tab.as_str().to_owned())]),
        "results": results, "prev_page": prev_page, "next_page": next_page,
        "api": format!("/viewer/api/checkout/{}/results?{}", rev.id, encode_pairs(&api_pairs)),
    });
    render("checkout.html", &ctx)
}

/// `GET /viewer/result/{id}`: a build or test with its status history.
pub async fn result(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let limit = int_param(req, "limit", 10, 1, MAX_HISTORY)?;
    let d = data::result_detail(app, id, limit).await?;
    let mut v = serde_json::to_value(&d).map_err(ApiError::internal)?;
    if let Some(runs) = v.get_mut("history").and_then(Value::as_array_mut) {
        for r in runs {
            let status =
                StatusGroup::of(serde_json::from_value(r["result"].clone()).unwrap_or(None));
            r["status"] = json!(status.as_str());
        }
    }
    let tab = if d.node.category == "build" {
        "build"
    } else {
        d.node.category.as_str()
    };
    render("result.html", &json!({"nav": "trees", "d": v, "tab": tab}))
}

/// `GET /viewer/log/{id}?artifact=` (or `/viewer/log?url=`): a log from storage.
pub async fn log(app: &App, req: &Request, id: Option<&str>) -> Result<Response, ApiError> {
    let l = api::log_data(app, req, id).await?;
    render("log.html", &json!({"nav": "", "l": l, "cap": LOG_CAP}))
}

/// `GET /viewer/compare/{base}/{target}`.
pub async fn compare(
    app: &App,
    req: &Request,
    base: &str,
    target: &str,
) -> Result<Response, ApiError> {
    let (filters, c) = api::comparison(app, req, base, target).await?;
    let q = filters.query_string();
    let with_q = |p: String| if q.is_empty() { p } else { format!("{p}?{q}") };
    render(
        "compare.html",
        &json!({"nav": "trees", "c": c, "swap": with_q(format!("/viewer/compare/{target}/{base}")),
                "api": with_q(format!("/viewer/api/compare/{base}/{target}"))}),
    )
}

/// `GET /viewer/compare/{id}`: the previous revision of the branch against this one.
pub async fn compare_previous(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let node = data::checkout(app, id).await?;
    let history = data::history(app, &node, &ResultFilters::from_request(req)?, 2).await?;
    let prev = history
        .items
        .iter()
        .find(|h| h.revision.id != id)
        .ok_or_else(|| ApiError::not_found("No earlier revision on this branch"))?;
    Ok(crate::http::redirect(&format!(
        "/viewer/compare/{}/{id}",
        prev.revision.id
    )))
}

fn age(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// `GET /viewer/health?hours=` (and `/stats`, `/analytics`, titled `title`).
pub async fn health(app: &App, req: &Request, title: Option<&str>) -> Result<Response, ApiError> {
    let hours = int_param(req, "hours", 24, 1, 48)? as u32;
    let h = data::health(app, hours).await?;
    let mut v = serde_json::to_value(&h).map_err(ApiError::internal)?;
    if let Some(list) = v.get_mut("oldest").and_then(Value::as_array_mut) {
        for s in list {
            s["age"] = json!(age(s["age_secs"].as_i64().unwrap_or(0)));
        }
    }
    render(
        "health.html",
        &json!({"nav": "health", "h": v, "windows": [1, 3, 6, 12, 24, 48],
                "api": format!("/viewer/api/health?hours={hours}"), "page_title": title}),
    )
}

/// `GET /viewer/node/{id}`: a node with its JSON, parent, children and artifacts.
pub async fn node(app: &App, id: &str) -> Result<Response, ApiError> {
    let n = data::node(app, id).await?;
    let value = n.to_value();
    let json_text = serde_json::to_string_pretty(&value).map_err(ApiError::internal)?;
    let children_scope = Query::parse([("parent", id)])?.filter;
    let total = app.store.count_nodes(&children_scope).await?;
    let page = app
        .store
        .find_nodes(
            &children_scope,
            &FindOptions {
                limit: Some(200),
                ..FindOptions::default()
            },
        )
        .await?;
    let children: Vec<ResultRow> = page.items.iter().map(|c| ResultRow::of(c, None)).collect();
    let artifacts = data::artifacts(app, &n).await?;
    let own: Vec<_> = artifacts.into_iter().filter(|a| a.node == id).collect();
    let counted = matches!(n.kind.as_str(), "kbuild" | "test" | "job");
    let lava_url = match (n.data_str("runtime"), n.data_str("job_id")) {
        (Some(rt), Some(job)) if rt.starts_with("lava") => app
            .viewer
            .lava_urls
            .iter()
            .find(|(name, _)| name == rt)
            .map(|(_, base)| format!("{}/scheduler/job/{job}", base.trim_end_matches('/'))),
        _ => None,
    };
    render(
        "node.html",
        &json!({"nav": "nodes", "n": value, "status": StatusGroup::of(n.result).as_str(),
                "json": json_text, "size": json_text.len(), "children": children,
                "children_total": total, "artifacts": own, "counted": counted, "lava_url": lava_url}),
    )
}

/// Parses the node browser's conditions (`field=value`, `field!=value`, `field>value`,
/// `field>=value`, `field<value`, `field<=value`, `field~regex`; one per line or comma) into
/// the API's query pairs.
pub fn search_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut out = Vec::new();
    for cond in q
        .split(['\n', ','])
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        let ops = [
            ("!=", "ne"),
            (">=", "gte"),
            ("<=", "lte"),
            (">", "gt"),
            ("<", "lt"),
            ("~", "re"),
            ("=", ""),
        ];
        let found = ops
            .iter()
            .filter_map(|(sym, op)| cond.find(sym).map(|i| (i, *sym, *op)))
            .min_by_key(|(i, sym, _)| (*i, std::cmp::Reverse(sym.len())));
        let Some((i, sym, op)) = found else {
            return Err(ApiError::bad_request(format!(
                "'{cond}' is not a condition (field=value, field!=value, field>value, field~regex, ...)"
            )));
        };
        let field = cond[..i].trim();
        let value = cond[i + sym.len()..].trim();
        if field.is_empty() {
            return Err(ApiError::bad_request(format!("'{cond}' has no field")));
        }
        let key = if op.is_empty() {
            field.to_owned()
        } else {
            format!("{field}__{op}")
        };
        out.push((key, value.to_owned()));
    }
    Ok(out)
}

/// `GET /viewer/nodes?q=` (and `?id=`): the node search.
pub async fn nodes(app: &App, req: &Request) -> Result<Response, ApiError> {
    if let Some(id) = req
        .query_param("id")
        .map(str::trim)
        .filter(|i| !i.is_empty())
    {
        crate::routes::object_id(id)?;
        return Ok(crate::http::redirect(&format!("/viewer/node/{id}")));
    }
    let q = req.query_param("q").unwrap_or_default().to_owned();
    let day = format!(
        "kind=checkout\ncreated>={}",
        kernelci::models::Timestamp::now().plus_secs(-86_400)
    );
    let week = format!(
        "kind=checkout\ncreated>={}",
        kernelci::models::Timestamp::now().plus_secs(-7 * 86_400)
    );
    let quick = |s: &str| {
        format!(
            "/viewer/nodes?{}",
            encode_pairs(&[("q".into(), s.to_owned())])
        )
    };
    let mut ctx = json!({"nav": "nodes", "q": q, "day": quick(&day), "week": quick(&week),
                         "searched": false, "limit": 250});
    if !q.trim().is_empty() {
        let outcome = async {
            let pairs = search_pairs(&q)?;
            let filter = Query::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?.filter;
            let total = app.store.count_nodes(&filter).await?;
            let page = app
                .store
                .find_nodes(
                    &filter,
                    &FindOptions {
                        limit: Some(250),
                        sort: Some(Sort {
                            field: "created".into(),
                            descending: true,
                        }),
                        ..FindOptions::default()
                    },
                )
                .await?;
            Ok::<_, ApiError>((pairs, total, page.items))
        }
        .await;
        match outcome {
            Ok((pairs, total, items)) => {
                let rows: Vec<Value> = items
                    .iter()
                    .map(|n| {
                        let r = RevisionInfo::of(n);
                        let mut v =
                            serde_json::to_value(ResultRow::of(n, None)).unwrap_or(Value::Null);
                        v["revision"] =
                            json!(format!("{} / {} / {}", r.tree, r.branch, r.short_commit()));
                        v
                    })
                    .collect();
                ctx["searched"] = json!(true);
                ctx["items"] = json!(rows);
                ctx["total"] = json!(total);
                ctx["query"] = json!(encode_pairs(&pairs));
            }
            Err(e) => {
                ctx["error"] = e.body.get("detail").cloned().unwrap_or(Value::Null);
            }
        }
    }
    render("nodes.html", &ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_conditions_become_query_pairs() {
        let p = search_pairs("kind=test\nresult!=pass, created>=2024-01-01,name~^demo").unwrap();
        assert_eq!(
            p,
            vec![
                ("kind".to_owned(), "test".to_owned()),
                ("result__ne".to_owned(), "pass".to_owned()),
                ("created__gte".to_owned(), "2024-01-01".to_owned()),
                ("name__re".to_owned(), "^demo".to_owned()),
            ]
        );
        assert!(search_pairs("nonsense").is_err());
        assert!(search_pairs("=x").is_err());
    }

    #[test]
    fn every_template_compiles_and_escapes() {
        assert!(env().is_ok(), "{:?}", env().as_ref().err());
        let r = render(
            "error.html",
            &json!({"status": 400, "detail": "<script>alert(1)</script>", "nav": ""}),
        );
        assert!(r.is_ok());
    }
}

#[cfg(test)]
mod render_tests {
    use super::*;
    use crate::viewer::model::{ResultDetail, RunEntry};

    #[test]
    fn result_page_renders() {
        let mut d = ResultDetail::default();
        d.history.push(RunEntry {
            commit: "0123456789abcdef".into(),
            ..RunEntry::default()
        });
        d.artifacts.push(crate::viewer::model::ArtifactLink {
            key: "log".into(),
            url: "http://x/log.txt".into(),
            node: "n".into(),
            is_log: true,
        });
        let mut v = serde_json::to_value(&d).unwrap();
        v["history"][0]["status"] = json!("fail");
        let r = render(
            "result.html",
            &json!({"nav": "trees", "d": v, "tab": "test"}),
        );
        assert!(r.is_ok(), "{:?}", r.err().map(|e| e.body));
    }
}
