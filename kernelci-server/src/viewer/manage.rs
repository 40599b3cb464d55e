//! The manage page (upstream `/manage`): check an API token and submit a custom checkout with
//! a job filter. The form posts to the server (`POST /viewer/manage`), which creates the node
//! through `POST /node`'s own handler with the token given as a bearer token: the same checks,
//! owner, event and wake-up as any API client gets. The token is used for that one request and
//! never stored or logged.

use std::collections::BTreeSet;

use http_body_util::BodyExt;
use kernelci::query::{Filter, Op, Operand, Scalar};
use serde_json::{Value, json};
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;

use super::pages::render_with;
use crate::app::App;
use crate::http::{ApiError, Request};
use crate::routes::nodes;

/// Recent checkouts offered as trees: those of the last 90 days.
const RECENT_DAYS: i64 = 90;

async fn choices(app: &App) -> Result<(Vec<Value>, Vec<String>), ApiError> {
    let since = kernelci::models::Timestamp::now().plus_secs(-RECENT_DAYS * 86_400);
    let recent = Filter::all().and("created", Op::Gte, Operand::One(Scalar::Time(since)));
    let heads = app.store.latest_checkouts(&recent, 200).await?;
    let trees: Vec<Value> = heads
        .iter()
        .filter_map(|n| {
            let tree = n.data_str("kernel_revision.tree")?;
            let branch = n.data_str("kernel_revision.branch")?;
            let url = n.data_str("kernel_revision.url").unwrap_or_default();
            Some(json!({"value": format!("{tree}\t{branch}\t{url}"), "label": format!("{tree}/{branch}")}))
        })
        .collect();
    let jobs_scope = recent.and(
        "kind",
        Op::In,
        Operand::List(vec![
            Scalar::Str("kbuild".into()),
            Scalar::Str("job".into()),
        ]),
    );
    let groups = app
        .store
        .count_node_results(&jobs_scope, &["name".to_owned()])
        .await?;
    let jobs: BTreeSet<String> = groups
        .iter()
        .filter_map(|g| g.keys.first().and_then(Value::as_str).map(str::to_owned))
        .collect();
    Ok((trees, jobs.into_iter().collect()))
}

async fn page(
    app: &App,
    status: StatusCode,
    message: Option<(&str, String)>,
    created: Option<String>,
    title: Option<&str>,
) -> Result<Response, ApiError> {
    let (trees, jobs) = choices(app).await?;
    let (class, text) = message.unwrap_or(("", String::new()));
    render_with(
        status,
        "manage.html",
        &json!({"nav": "manage", "trees": trees, "jobs": jobs, "message": text,
                "message_class": class, "created": created, "page_title": title}),
    )
}

/// `GET /viewer/manage` (and `/manage`, titled `title`).
pub async fn form(app: &App, title: Option<&str>) -> Result<Response, ApiError> {
    page(app, StatusCode::OK, None, None, title).await
}

fn detail(e: &ApiError) -> String {
    match e.body.get("detail") {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => e.status.to_string(),
    }
}

/// A request as the API sees it: `method path` with the token as bearer and a JSON body.
fn api_request(
    req: &Request,
    method: Method,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Result<Request, ApiError> {
    let mut headers = warp::http::HeaderMap::new();
    let auth = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ApiError::bad_request("The token holds characters a header cannot"))?;
    headers.insert(header::AUTHORIZATION, auth);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(Request {
        method,
        path: path.to_owned(),
        version: "latest",
        query: Vec::new(),
        headers,
        body: body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default()
            .into(),
        remote: req.remote,
    })
}

/// The checkout node the form describes.
fn checkout_body(form: &[(String, String)]) -> Result<Value, ApiError> {
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let (mut tree, mut branch, mut url) = (get("tree"), get("branch"), get("url"));
    if tree.is_none()
        && let Some(choice) = get("tree_branch")
    {
        let mut parts = choice.split('\t');
        tree = parts.next().map(str::to_owned);
        branch = parts.next().map(str::to_owned);
        if url.is_none() {
            url = parts.next().filter(|u| !u.is_empty()).map(str::to_owned);
        }
    }
    let missing = |what: &str| ApiError::bad_request(format!("Give the {what}"));
    let tree = tree.ok_or_else(|| missing("tree"))?;
    let branch = branch.ok_or_else(|| missing("branch"))?;
    let url = url.ok_or_else(|| missing("repository URL"))?;
    let commit = get("commit").ok_or_else(|| missing("commit"))?;
    if !(7..=40).contains(&commit.len()) || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "'{commit}' is not a commit hash (7 to 40 hex digits)"
        )));
    }
    let mut jobs: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "jobfilter")
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect();
    if let Some(extra) = get("jobfilter_extra") {
        jobs.extend(
            extra
                .split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        );
    }
    jobs.dedup();
    let mut node = json!({
        "kind": "checkout", "name": "checkout", "path": ["checkout"],
        "data": {"kernel_revision": {"tree": tree, "branch": branch, "url": url, "commit": commit.to_lowercase()}},
    });
    if !jobs.is_empty() {
        node["jobfilter"] = json!(jobs);
    }
    Ok(node)
}

/// `POST /viewer/manage` (form): `action=whoami` checks the token; `action=submit` creates the
/// checkout.
pub async fn submit(app: &App, req: &Request) -> Result<Response, ApiError> {
    let form = req.form();
    let field = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim());
    let Some(token) = field("token").filter(|t| !t.is_empty()) else {
        return page(
            app,
            StatusCode::UNAUTHORIZED,
            Some(("fail", "Give an API token.".into())),
            None,
            None,
        )
        .await;
    };
    let who = api_request(req, Method::GET, "/whoami", token, None)?;
    let user = match app.auth.user(&who).await {
        Ok(u) => u,
        Err(e) => {
            let text = format!("The token was refused: {}", detail(&e));
            return page(
                app,
                StatusCode::UNAUTHORIZED,
                Some(("fail", text)),
                None,
                None,
            )
            .await;
        }
    };
    if field("action") != Some("submit") {
        let text = format!("Logged in as {}.", user.username);
        return page(app, StatusCode::OK, Some(("pass", text)), None, None).await;
    }
    let body = match checkout_body(&form) {
        Ok(b) => b,
        Err(e) => {
            return page(
                app,
                StatusCode::BAD_REQUEST,
                Some(("fail", detail(&e))),
                None,
                None,
            )
            .await;
        }
    };
    let create = api_request(req, Method::POST, "/node", token, Some(&body))?;
    match nodes::create(app, &create).await {
        Ok(resp) => {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(ApiError::internal)?
                .to_bytes();
            let node: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
            let id = node.get("id").and_then(Value::as_str).map(str::to_owned);
            let text = format!("Checkout created by {}:", user.username);
            page(app, StatusCode::OK, Some(("pass", text)), id, None).await
        }
        Err(e) => {
            let status = e.status;
            let text = format!("The checkout was refused: {}", detail(&e));
            page(app, status, Some(("fail", text)), None, None).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn the_form_becomes_a_checkout_node() {
        let body = checkout_body(&form(&[
            ("tree_branch", "demo\tmaster\tfile:///x"),
            ("commit", "ABCDEF1234567"),
            ("jobfilter", "kbuild-demo-x86"),
            ("jobfilter_extra", "kselftest-demo, other"),
        ]))
        .unwrap();
        assert_eq!(body["data"]["kernel_revision"]["tree"], "demo");
        assert_eq!(body["data"]["kernel_revision"]["url"], "file:///x");
        assert_eq!(body["data"]["kernel_revision"]["commit"], "abcdef1234567");
        assert_eq!(
            body["jobfilter"],
            json!(["kbuild-demo-x86", "kselftest-demo", "other"])
        );
        assert!(
            checkout_body(&form(&[
                ("tree", "t"),
                ("branch", "b"),
                ("url", "u"),
                ("commit", "xyz")
            ]))
            .is_err()
        );
        assert!(checkout_body(&form(&[("commit", "abcdef1")])).is_err());
    }
}
