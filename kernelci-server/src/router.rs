//! The request router: upstream's version prefixes (`/latest`, `/v0`, bare paths), trailing-slash
//! redirects, dispatch to the handlers through the route table ([`crate::table`]), request
//! logging and metrics.

use std::sync::Arc;
use std::time::Instant;

use warp::http::{Method, StatusCode};
use warp::reply::Response;

use crate::app::App;
use crate::http::{ApiError, Request, redirect, typed};
use crate::table::{self, Lookup};

/// Where a raw path goes after the version rules.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// Serve `path` (below the prefix) for API version `version`.
    Api {
        /// `latest` or `v0`.
        version: &'static str,
        /// The path below the prefix, starting with `/`.
        path: String,
    },
    /// Answer 400 `Unsupported API version: <v>`.
    UnsupportedVersion(String),
    /// Redirect (307) to this location.
    Redirect(String),
}

fn is_version_segment(s: &str) -> bool {
    s.len() > 1
        && s.starts_with('v')
        && s[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s[1..].starts_with(|c: char| c.is_ascii_digit())
}

/// Applies upstream's path rules (api spec §1.1).
pub fn route_path(raw: &str) -> Routed {
    let first = raw
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let (version, rest) = if first == "latest" {
        ("latest", &raw[1 + first.len()..])
    } else if first == "v0" {
        ("v0", &raw[1 + first.len()..])
    } else if is_version_segment(first) {
        return Routed::UnsupportedVersion(first.to_owned());
    } else {
        ("latest", raw)
    };
    if rest.is_empty() {
        return Routed::Redirect(format!("/{version}/"));
    }
    if rest.len() > 1 && rest.ends_with('/') {
        return Routed::Redirect(format!("/{version}{}", rest.trim_end_matches('/')));
    }
    Routed::Api {
        version,
        path: rest.to_owned(),
    }
}

/// Handles one request (after the body was read).
pub async fn handle(app: Arc<App>, req: Request) -> Response {
    let started = Instant::now();
    let method = req.method.clone();
    let (route, result) = match route_path(&req.path) {
        Routed::UnsupportedVersion(v) => (
            "-",
            Ok(typed(
                StatusCode::BAD_REQUEST,
                "text/plain; charset=utf-8",
                format!("Unsupported API version: {v}"),
            )),
        ),
        Routed::Redirect(loc) => ("-", Ok(redirect(&loc))),
        Routed::Api { version, path } => {
            let req = Request {
                path,
                version,
                ..req
            };
            let out = dispatch(&app, &req).await;
            // A change to users, groups or tokens: cached token → user answers are stale.
            if req.method != Method::GET
                && matches!(
                    req.segments().first(),
                    Some(&("user" | "users" | "user-groups"))
                )
            {
                app.auth.forget_cached();
            }
            out
        }
    };
    let resp = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let status = resp.status().as_u16();
    app.metrics.request(method.as_str(), route, status);
    let ms = started.elapsed().as_secs_f64() * 1e3;
    if status >= 500 {
        tracing::warn!(%method, route, status, ms, "request failed");
    } else {
        tracing::debug!(%method, route, status, ms, "request");
    }
    resp
}

type Handled = (&'static str, Result<Response, ApiError>);

/// Answers from the route table ([`crate::table`]): the route's handler, or 405 when the
/// path is a route's with another method, else 404. The metrics label is the route's path
/// template (`-` for the fallback).
async fn dispatch(app: &App, req: &Request) -> Handled {
    let segs = req.segments();
    match table::find(req.method.as_str(), &segs) {
        Lookup::Found(route, params) => (route.path, (route.handler)(app, req, params).await),
        Lookup::WrongMethod => (
            "-",
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
            )),
        ),
        Lookup::NotFound => ("-", Err(ApiError::not_found("Not Found"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_rules() {
        assert_eq!(
            route_path("/nodes"),
            Routed::Api {
                version: "latest",
                path: "/nodes".into()
            }
        );
        assert_eq!(
            route_path("/latest/nodes"),
            Routed::Api {
                version: "latest",
                path: "/nodes".into()
            }
        );
        assert_eq!(
            route_path("/v0/node/x"),
            Routed::Api {
                version: "v0",
                path: "/node/x".into()
            }
        );
        assert_eq!(
            route_path("/"),
            Routed::Api {
                version: "latest",
                path: "/".into()
            }
        );
        assert_eq!(
            route_path("/latest/"),
            Routed::Api {
                version: "latest",
                path: "/".into()
            }
        );
        assert_eq!(
            route_path("/v1/nodes"),
            Routed::UnsupportedVersion("v1".into())
        );
        assert_eq!(
            route_path("/v0.1/nodes"),
            Routed::UnsupportedVersion("v0.1".into())
        );
        assert_eq!(route_path("/latest"), Routed::Redirect("/latest/".into()));
        assert_eq!(route_path("/v0"), Routed::Redirect("/v0/".into()));
        assert_eq!(
            route_path("/nodes/"),
            Routed::Redirect("/latest/nodes".into())
        );
        assert_eq!(
            route_path("/v0/nodes/"),
            Routed::Redirect("/v0/nodes".into())
        );
        assert_eq!(
            route_path("/latestfoo"),
            Routed::Api {
                version: "latest",
                path: "/latestfoo".into()
            }
        );
        assert_eq!(
            route_path("/viewer"),
            Routed::Api {
                version: "latest",
                path: "/viewer".into()
            }
        );
    }
}
