//! The index and invite pages, icons, static files and `/metrics` (the viewer's pages are in
//! [`crate::viewer`]).

use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use kernelci::store::results::ResultCategory;

use crate::app::App;
use crate::http::{ApiError, typed};

const VIEWER_CSS: &str = include_str!("../../assets/viewer.css");
const VIEWER_JS: &str = include_str!("../../assets/viewer.js");
const DOCS: &str = include_str!("../../assets/docs.html");
const DOCS_CSS: &str = include_str!("../../assets/docs.css");
const DOCS_JS: &str = include_str!("../../assets/docs.js");
/// The documentation page loads only this server's own files and talks only to this server:
/// no CDN, no inline script, nothing else (the browser enforces it).
const DOCS_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                        connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";
const ICONS: [(&str, &[u8]); 3] = [
    ("ok.png", include_bytes!("../../assets/ok.png")),
    ("bad.png", include_bytes!("../../assets/bad.png")),
    ("warning.png", include_bytes!("../../assets/warning.png")),
];

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <link rel=\"stylesheet\" href=\"/static/css/viewer.css\"></head><body>\
         <header><h1>{title}</h1><a href=\"/viewer/trees\">Trees</a></header><main>{body}</main></body></html>\n"
    )
}

fn html(body: String) -> Response {
    typed(StatusCode::OK, "text/html; charset=utf-8", body)
}

/// Upstream's no-cache headers (the pages and the viewer's pages).
pub fn no_cache(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(header::EXPIRES, HeaderValue::from_static("0"));
    r
}

/// `GET /`.
pub fn index() -> Response {
    html(page(
        "KernelCI API Server",
        "<section><p>KernelCI API, wire-compatible with upstream. Browse the <a href=\"/viewer/trees\">trees</a>, \
         the <a href=\"/viewer/health\">pipeline health</a>, the <a href=\"/viewer/nodes\">nodes</a>, \
         read the <a href=\"/latest/docs\">API documentation</a> (<a href=\"/latest/openapi.json\">OpenAPI</a>).</p></section>",
    ))
}

/// `GET /docs`: the interactive documentation of `/openapi.json` (our own page: operations by
/// tag, parameters, schemas, a "try it" form with a bearer token), working offline.
pub fn docs() -> Response {
    let mut r = no_cache(html(DOCS.to_owned()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(DOCS_CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

/// `GET /user/invite` and `GET /user/accept-invite`.
pub fn invite_page(accept: bool) -> Response {
    if accept {
        html(page(
            "KernelCI API - Accept Invite",
            "<section><form onsubmit=\"event.preventDefault();fetch('/latest/user/accept-invite',{method:'POST',\
             headers:{'Content-Type':'application/json'},body:JSON.stringify({token:new URLSearchParams(location.search).get('token'),\
             password:this.password.value})}).then(r=>r.json()).then(b=>{document.getElementById('out').textContent=JSON.stringify(b)})\">\
             <label>New password <input type=\"password\" name=\"password\"></label> <button>Accept</button></form><pre id=\"out\"></pre></section>",
        ))
    } else {
        html(page(
            "KernelCI API - Invite User",
            "<section><p>Invite users with <code>POST /user/invite</code> as an admin.</p></section>",
        ))
    }
}

fn valid_name(name: &str, ext: &str) -> bool {
    name.len() > ext.len()
        && name.ends_with(ext)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// `GET /icons/{name}`: a missing icon is a 404 (upstream answered 500).
pub fn icon(name: &str) -> Result<Response, ApiError> {
    if !valid_name(name, ".png") {
        return Err(ApiError::bad_request("Invalid icon name"));
    }
    match ICONS.iter().find(|(n, _)| *n == name) {
        Some((_, bytes)) => Ok(typed(StatusCode::OK, "image/png", bytes.to_vec())),
        None => Err(ApiError::not_found("File not found")),
    }
}

/// `GET /static/{css|js}/{name}`.
pub fn static_file(kind: &str, name: &str) -> Result<Response, ApiError> {
    let (ext, ctype) = match kind {
        "css" => (".css", "text/css; charset=utf-8"),
        _ => (".js", "application/javascript"),
    };
    if !valid_name(name, ext) {
        return Err(ApiError::bad_request("Invalid filename"));
    }
    let body = match name {
        "viewer.css" => VIEWER_CSS,
        "viewer.js" => VIEWER_JS,
        "docs.css" => DOCS_CSS,
        "docs.js" => DOCS_JS,
        _ => return Err(ApiError::not_found("File not found")),
    };
    let mut r = typed(StatusCode::OK, ctype, body);
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(r)
}

/// `GET /metrics`: upstream's `text/plain` lines, labelled as what they are, the Prometheus
/// text format 0.0.4; then the builds, boots and tests created in the last 24 hours by status,
/// counted by the one definition the viewer and the e-mail report use
/// ([`kernelci::store::results`]), from the store (cached briefly). A store error leaves those
/// lines out rather than failing the scrape.
pub async fn metrics(app: &App) -> Response {
    let mut text = app.metrics.render(app.pubsub.len());
    match crate::viewer::data::metrics_counts(app).await {
        Ok(counts) => {
            text.push_str(
                "# HELP kernelci_results Builds, boots and tests created in the last 24 hours, by status\n\
                 # TYPE kernelci_results gauge\n",
            );
            for category in ResultCategory::ALL {
                let c = counts.get(category);
                for (status, n) in [
                    ("pass", c.pass),
                    ("fail", c.fail),
                    ("inconclusive", c.inconclusive()),
                    ("infra_error", c.infra),
                ] {
                    text.push_str(&format!(
                        "kernelci_results{{category=\"{}\",status=\"{status}\"}} {n}\n",
                        category.as_str()
                    ));
                }
            }
        }
        Err(e) => tracing::warn!(error = ?e.body, "/metrics: result counts unavailable"),
    }
    typed(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        text,
    )
}
