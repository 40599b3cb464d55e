//! The JSON data endpoints, `/viewer/api/...` (our extension; documented in the OpenAPI
//! document). Each takes its typed request ([`model::ResultFilters`] and the parameters below)
//! and answers a typed body from [`model`].

use kernelci::store::results::ResultCategory;
use warp::reply::Response;

use super::data;
use super::log;
use super::model::{CompareResponse, LogResponse, ResultFilters};
use crate::app::App;
use crate::http::{ApiError, Request, ok_json};
use crate::query::int_param;

/// Most rows of a results page.
pub const MAX_PAGE: u64 = 1000;
/// Most revisions in a history strip, runs in a status history.
pub const MAX_HISTORY: u64 = 50;

/// The `category` (or `tab`) parameter: `build`, `boot`, `test` (default `test`).
pub fn category_param(req: &Request) -> Result<ResultCategory, ApiError> {
    let v = req
        .query_param("category")
        .or_else(|| req.query_param("tab"))
        .unwrap_or("test");
    ResultCategory::parse(v).ok_or_else(|| {
        ApiError::bad_request(format!("Invalid category '{v}'; use build, boot or test"))
    })
}

/// `GET /viewer/api/trees?days=&tree=`.
pub async fn trees(app: &App, req: &Request) -> Result<Response, ApiError> {
    let days = int_param(req, "days", 7, 1, 365)? as u32;
    ok_json(&data::trees(app, days, req.query_param("tree")).await?)
}

/// `GET /viewer/api/checkout/{id}` with the result filters.
pub async fn checkout(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let filters = ResultFilters::from_request(req)?;
    let node = data::checkout(app, id).await?;
    ok_json(&data::summary(app, &node, &filters).await?)
}

/// `GET /viewer/api/checkout/{id}/results?category=&offset=&limit=` with the result filters.
pub async fn results(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let filters = ResultFilters::from_request(req)?;
    let category = category_param(req)?;
    let offset = int_param(req, "offset", 0, 0, u64::from(u32::MAX))?;
    let limit = int_param(req, "limit", 100, 1, MAX_PAGE)?;
    let node = data::checkout(app, id).await?;
    ok_json(&data::results(app, &node, category, &filters, offset, limit).await?)
}

/// `GET /viewer/api/checkout/{id}/history?limit=` with the result filters.
pub async fn history(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let filters = ResultFilters::from_request(req)?;
    let limit = int_param(req, "limit", 10, 1, MAX_HISTORY)?;
    let node = data::checkout(app, id).await?;
    ok_json(&data::history(app, &node, &filters, limit).await?)
}

/// `GET /viewer/api/result/{id}?limit=`.
pub async fn result(app: &App, req: &Request, id: &str) -> Result<Response, ApiError> {
    let limit = int_param(req, "limit", 10, 1, MAX_HISTORY)?;
    ok_json(&data::result_detail(app, id, limit).await?)
}

/// Two revisions compared under the request's filters (404/400 as [`data::checkout`] for
/// either), with the filters.
pub async fn comparison(
    app: &App,
    req: &Request,
    base: &str,
    target: &str,
) -> Result<(ResultFilters, CompareResponse), ApiError> {
    let filters = ResultFilters::from_request(req)?;
    let (b, t) = (
        data::checkout(app, base).await?,
        data::checkout(app, target).await?,
    );
    let c = data::compare(app, &b, &t, &filters).await?;
    Ok((filters, c))
}

/// `GET /viewer/api/compare/{base}/{target}` with the result filters.
pub async fn compare(
    app: &App,
    req: &Request,
    base: &str,
    target: &str,
) -> Result<Response, ApiError> {
    ok_json(&comparison(app, req, base, target).await?.1)
}

/// `GET /viewer/api/health?hours=`.
pub async fn health(app: &App, req: &Request) -> Result<Response, ApiError> {
    let hours = int_param(req, "hours", 24, 1, 48)? as u32;
    ok_json(&data::health(app, hours).await?)
}

/// Reads a log: by node and artifact key (`/viewer/api/log/{id}?artifact=log`; the artifact
/// may be inherited from an ancestor; default: the first log artifact), or by URL
/// (`/viewer/api/log?url=...`). Only storage URLs are read (see [`log`]).
pub async fn log_data(app: &App, req: &Request, id: Option<&str>) -> Result<LogResponse, ApiError> {
    let (node, artifact, url, artifacts) = match id {
        Some(id) => {
            let node = data::node(app, id).await?;
            let artifacts = data::artifacts(app, &node).await?;
            let wanted = req.query_param("artifact");
            let found = artifacts
                .iter()
                .find(|a| match wanted {
                    Some(k) => a.key == k,
                    None => a.is_log,
                })
                .ok_or_else(|| {
                    ApiError::not_found(match wanted {
                        Some(k) => format!("Node {id} has no artifact '{k}'"),
                        None => format!("Node {id} has no log artifact"),
                    })
                })?;
            let (key, url) = (found.key.clone(), found.url.clone());
            (Some(id.to_owned()), Some(key), url, artifacts)
        }
        None => {
            let url = req
                .query_param("url")
                .filter(|u| !u.is_empty())
                .ok_or_else(|| ApiError::bad_request("Give a node id or a url"))?;
            (None, None, url.to_owned(), Vec::new())
        }
    };
    let text = log::read(app, &url, req.header("host")).await?;
    let body = String::from_utf8_lossy(&text.bytes);
    let lines = log::highlight(&body);
    Ok(LogResponse {
        node,
        artifact,
        url,
        size: text.bytes.len() as u64,
        truncated: text.truncated,
        errors: lines
            .iter()
            .filter(|l| l.level.as_deref() == Some("error"))
            .count(),
        warnings: lines
            .iter()
            .filter(|l| l.level.as_deref() == Some("warning"))
            .count(),
        lines,
        artifacts,
    })
}

/// `GET /viewer/api/log/{id}` or `GET /viewer/api/log?url=`.
pub async fn log(app: &App, req: &Request, id: Option<&str>) -> Result<Response, ApiError> {
    ok_json(&log_data(app, req, id).await?)
}
