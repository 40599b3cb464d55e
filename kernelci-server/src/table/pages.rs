//! The pages group: HTML pages, files, metrics and the OpenAPI document.

use super::Access::Public;
use super::Content::{Css, Js, Metrics, Png};
use super::{Group, Route, route};
use crate::handler;
use crate::routes::pages;

/// The routes.
pub const GROUP: Group = Group {
    tag: "pages",
    description: "HTML pages, files, metrics and this description",
    routes: ROUTES,
};

const ROUTES: &[Route] = &[
    route(
        "GET",
        "/",
        "Index page",
        Public,
        handler!(|app, req, p| Ok(pages::index())),
    )
    .html(),
    route(
        "GET",
        "/openapi.json",
        "This document",
        Public,
        handler!(|app, req, p| Ok(crate::openapi::reply())),
    ),
    route(
        "GET",
        "/docs",
        "API docs page",
        Public,
        handler!(|app, req, p| Ok(pages::docs())),
    )
    .html(),
    route(
        "GET",
        "/icons/{icon_name}",
        "Icons",
        Public,
        handler!(|app, req, p| pages::icon(p[0])),
    )
    .content(Png)
    .errors(&[400, 404]),
    route(
        "GET",
        "/static/css/{filename}",
        "Stylesheets",
        Public,
        handler!(|app, req, p| pages::static_file("css", p[0])),
    )
    .content(Css)
    .errors(&[400, 404]),
    route(
        "GET",
        "/static/js/{filename}",
        "Scripts",
        Public,
        handler!(|app, req, p| pages::static_file("js", p[0])),
    )
    .content(Js)
    .errors(&[400, 404]),
    route(
        "GET",
        "/metrics",
        "Prometheus metrics (text format 0.0.4)",
        Public,
        handler!(|app, req, p| Ok(pages::metrics(app).await)),
    )
    .content(Metrics),
];
