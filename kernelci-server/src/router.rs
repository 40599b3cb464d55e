//! The request router: upstream's version prefixes (`/latest`, `/v0`, bare paths), trailing-slash
//! redirects, dispatch to the handlers, request logging and metrics.

use std::sync::Arc;
use std::time::Instant;

use warp::http::{Method, StatusCode};
use warp::reply::Response;

use crate::app::App;
use crate::http::{ApiError, Request, redirect, typed};
use crate::routes::{events, kv, nodes, pages, pubsub, telemetry, users};

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

async fn dispatch(app: &App, req: &Request) -> Handled {
    let segs = req.segments();
    if crate::viewer::owns(&segs)
        && let Some(handled) = crate::viewer::route(app, req, &segs).await
    {
        return handled;
    }
    let m = &req.method;
    macro_rules! r {
        ($route:expr, $e:expr) => {
            ($route, $e.await)
        };
    }
    match (m, segs.as_slice()) {
        (&Method::GET, []) => ("/", Ok(pages::index())),
        (&Method::GET, ["openapi.json"]) => ("/openapi.json", Ok(crate::openapi::reply())),
        (&Method::GET, ["docs"]) => ("/docs", Ok(pages::docs())),
        (&Method::GET, ["icons", name]) => ("/icons/{icon_name}", pages::icon(name)),
        (&Method::GET, ["static", kind @ ("css" | "js"), name]) => {
            ("/static/{kind}/{filename}", pages::static_file(kind, name))
        }
        (&Method::GET, ["metrics"]) => ("/metrics", Ok(pages::metrics(app).await)),
        // Users and auth.
        (&Method::POST, ["user", "login"]) => r!("/user/login", users::login(app, req)),
        (&Method::POST, ["user", "logout"]) => r!("/user/logout", users::logout(app, req)),
        (&Method::POST, ["user", "register"]) => r!("/user/register", users::register(app, req)),
        (&Method::GET, ["user", "invite"]) => ("/user/invite", Ok(pages::invite_page(false))),
        (&Method::POST, ["user", "invite"]) => r!("/user/invite", users::invite(app, req)),
        (&Method::GET, ["user", "accept-invite"]) => {
            ("/user/accept-invite", Ok(pages::invite_page(true)))
        }
        (&Method::POST, ["user", "accept-invite"]) => {
            r!("/user/accept-invite", users::accept_invite(app, req))
        }
        (&Method::GET, ["user", "invite", "url"]) => {
            r!("/user/invite/url", users::invite_url(app, req))
        }
        (&Method::POST, ["user", "forgot-password"]) => {
            r!("/user/forgot-password", users::forgot_password(app, req))
        }
        (&Method::POST, ["user", "reset-password"]) => {
            r!("/user/reset-password", users::reset_password(app, req))
        }
        (&Method::POST, ["user", "update-password"]) => {
            r!("/user/update-password", users::update_password(app, req))
        }
        (&Method::POST, ["user", "tokens"]) => r!("/user/tokens", users::create_token(app, req)),
        (&Method::DELETE, ["user", "tokens", jti]) => {
            r!("/user/tokens/{jti}", users::revoke_token(app, req, jti))
        }
        (&Method::GET, ["whoami"]) => r!("/whoami", users::whoami(app, req)),
        (&Method::PATCH, ["user", "me"]) => r!("/user/me", users::patch_me(app, req)),
        (&Method::GET, ["user", id]) => r!("/user/{id}", users::get_user(app, req, id)),
        (&Method::DELETE, ["user", id]) => r!("/user/{id}", users::delete_user(app, req, id)),
        (&Method::PATCH, ["user", id]) => r!("/user/{user_id}", users::patch_user(app, req, id)),
        (&Method::GET, ["users"]) => r!("/users", users::list_users(app, req)),
        (&Method::GET, ["user-groups"]) => r!("/user-groups", users::list_groups(app, req)),
        (&Method::POST, ["user-groups"]) => r!("/user-groups", users::create_group(app, req)),
        (&Method::GET, ["user-groups", id]) => {
            r!("/user-groups/{group_id}", users::get_group(app, req, id))
        }
        (&Method::DELETE, ["user-groups", id]) => {
            r!("/user-groups/{group_id}", users::delete_group(app, req, id))
        }
        // Nodes.
        (&Method::GET, ["node", id]) => r!("/node/{node_id}", nodes::get(app, id)),
        (&Method::GET, ["nodes"]) => r!("/nodes", nodes::find(app, req)),
        (&Method::GET, ["nodes", "fast"]) => r!("/nodes/fast", nodes::find_fast(app, req)),
        (&Method::GET, ["count"]) => r!("/count", nodes::count(app, req)),
        (&Method::POST, ["node"]) => r!("/node", nodes::create(app, req)),
        (&Method::PUT, ["node", id]) => r!("/node/{node_id}", nodes::replace(app, req, id)),
        (&Method::PATCH, ["node", id]) => r!("/node/{node_id}", nodes::patch(app, req, id)),
        (&Method::PUT, ["batch", "nodeset"]) => r!("/batch/nodeset", nodes::batch_set(app, req)),
        (&Method::PUT, ["nodes", id]) => r!("/nodes/{node_id}", nodes::hierarchy(app, req, id)),
        // Events, pub/sub, key/value, telemetry.
        (&Method::GET, ["events"]) => r!("/events", events::list(app, req)),
        (&Method::POST, ["subscribe", ch]) => {
            r!("/subscribe/{channel}", pubsub::subscribe(app, req, ch))
        }
        (&Method::POST, ["unsubscribe", id]) => {
            r!("/unsubscribe/{sub_id}", pubsub::unsubscribe(app, req, id))
        }
        (&Method::GET, ["listen", id]) => r!("/listen/{sub_id}", pubsub::listen(app, req, id)),
        (&Method::POST, ["ack", id]) => r!("/ack/{sub_id}", pubsub::ack(app, req, id)),
        (&Method::POST, ["publish", ch]) => r!("/publish/{channel}", pubsub::publish(app, req, ch)),
        (&Method::POST, ["push", list]) => r!("/push/{list_name}", pubsub::push(app, req, list)),
        (&Method::GET, ["pop", list]) => r!("/pop/{list_name}", pubsub::pop(app, req, list)),
        (&Method::GET, ["stats", "subscriptions"]) => {
            r!("/stats/subscriptions", pubsub::stats(app, req))
        }
        (&Method::GET, ["kv", ns, key]) => r!("/kv/{namespace}/{key}", kv::get(app, req, ns, key)),
        (&Method::POST, ["kv", ns, key]) => r!("/kv/{namespace}/{key}", kv::set(app, req, ns, key)),
        (&Method::DELETE, ["kv", ns, key]) => {
            r!("/kv/{namespace}/{key}", kv::delete(app, req, ns, key))
        }
        (&Method::POST, ["telemetry"]) => r!("/telemetry", telemetry::add(app, req)),
        (&Method::GET, ["telemetry"]) => r!("/telemetry", telemetry::list(app, req)),
        (&Method::GET, ["telemetry", "stats"]) => {
            r!("/telemetry/stats", telemetry::stats(app, req))
        }
        (&Method::GET, ["telemetry", "anomalies"]) => {
            r!("/telemetry/anomalies", telemetry::anomalies(app, req))
        }
        _ => ("-", Err(not_found_or_method(req, &segs))),
    }
}

/// 405 when the path exists with another method, else 404.
fn not_found_or_method(req: &Request, segs: &[&str]) -> ApiError {
    let known = crate::openapi::ROUTES.iter().any(|r| {
        let tpl: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        tpl.len() == segs.len()
            && tpl
                .iter()
                .zip(segs)
                .all(|(t, s)| t.starts_with('{') || t == s)
            && r.method != req.method.as_str()
    });
    if known {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
    } else {
        ApiError::not_found("Not Found")
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
