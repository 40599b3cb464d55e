//! THE route table: every route the server answers, as one entry each — method, path
//! template, handler, who may call it, request and response types, statuses, query
//! parameters. The same table drives dispatch ([`find`], used by [`crate::router`]), the
//! OpenAPI document ([`crate::openapi`]) and the access-matrix test (`tests/access_matrix.rs`),
//! so they cannot disagree. Adding a route is one entry in one of the group files below plus
//! its handler (README "Adding a route").
//!
//! Entries are grouped by concern, one file per group (the group is the OpenAPI tag):
//! [`users`], [`nodes`] (nodes and events), [`pubsub`] (pub/sub, key/value, telemetry),
//! [`viewer`] (the viewer's data and pages) and [`pages`] (pages, files, metrics).

pub mod nodes;
pub mod pages;
pub mod pubsub;
pub mod users;
pub mod viewer;

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use warp::reply::Response;

use crate::app::App;
use crate::http::{ApiError, Request};

/// Who may call a route. Handlers check it themselves (the order of checks is upstream's);
/// the access-matrix test holds every handler to its entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// An active user with a token.
    User,
    /// An active, verified user.
    Verified,
    /// An admin.
    Superuser,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// `application/json` (the schema: [`Route::response`]).
    Json,
    /// `text/html` (the pages; their errors are HTML pages too).
    Html,
    /// `text/plain; version=0.0.4`: the Prometheus text format of `/metrics`.
    Metrics,
    /// `image/png`.
    Png,
    /// `text/css`.
    Css,
    /// `application/javascript`.
    Js,
    /// No body (204).
    Empty,
}

impl Content {
    /// The media type documented for it (`None`: no body).
    pub fn media_type(self) -> Option<&'static str> {
        match self {
            Content::Json => Some("application/json"),
            Content::Html => Some("text/html"),
            Content::Metrics => Some("text/plain; version=0.0.4"),
            Content::Png => Some("image/png"),
            Content::Css => Some("text/css"),
            Content::Js => Some("application/javascript"),
            Content::Empty => None,
        }
    }
}

/// Writes the JSON Schema of a type into a generator (a `$ref` to a component, or inline).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T` (use as `schema::<T>` in an entry).
pub fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// The request body a route takes.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    /// None.
    None,
    /// `application/json` of this type.
    Json(SchemaFn),
    /// `application/x-www-form-urlencoded` with these fields.
    Form(SchemaFn),
}

/// One query parameter of a route (documented; the handler reads it through
/// [`crate::query`]).
#[derive(Debug, Clone, Copy)]
pub struct QueryParam {
    /// Its name.
    pub name: &'static str,
    /// Whether it must be given.
    pub required: bool,
    /// What it means.
    pub description: &'static str,
    /// Its type.
    pub schema: SchemaFn,
}

/// The values of a route's path parameters, in template order (unused ones are empty).
pub type Params<'a> = [&'a str; MAX_PARAMS];

/// The most path parameters a route has.
pub const MAX_PARAMS: usize = 2;

/// What a handler returns: its answer, later.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Response, ApiError>> + Send + 'a>>;

/// A route's handler: the app, the request, the path parameters.
pub type Handler = for<'a> fn(&'a App, &'a Request, Params<'a>) -> Reply<'a>;

/// Makes a [`Handler`] from a body that may use `app`, `req` and `p` (the path parameters)
/// and evaluates to `Result<Response, ApiError>` (`.await` inside is fine).
#[macro_export]
#[doc(hidden)]
macro_rules! handler {
    (|$app:ident, $req:ident, $p:ident| $body:expr) => {{
        fn handle<'a>(
            $app: &'a $crate::app::App,
            $req: &'a $crate::http::Request,
            $p: $crate::table::Params<'a>,
        ) -> $crate::table::Reply<'a> {
            let _ = (&$app, &$req, &$p);
            Box::pin(async move { $body })
        }
        handle as $crate::table::Handler
    }};
}

/// Makes a [`Handler`] for an HTML page: an error becomes the viewer's error page (with the
/// error's status).
#[macro_export]
#[doc(hidden)]
macro_rules! page_handler {
    (|$app:ident, $req:ident, $p:ident| $body:expr) => {
        $crate::handler!(|$app, $req, $p| Ok(
            ($body).unwrap_or_else($crate::viewer::pages::error_page)
        ))
    };
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method (upper case).
    pub method: &'static str,
    /// Path template below `/latest`; `{name}` is a parameter (one whole segment).
    pub path: &'static str,
    /// What it does (the OpenAPI summary).
    pub summary: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Its request body.
    pub body: Body,
    /// The success status.
    pub ok: u16,
    /// The success content.
    pub content: Content,
    /// The JSON schema of the success answer (for [`Content::Json`]).
    pub response: Option<SchemaFn>,
    /// Error statuses of its own, beyond the ones every route of its kind has (see
    /// [`Route::statuses`]).
    pub errors: &'static [u16],
    /// Its query parameters, in lists (shared lists, e.g. the viewer's filters, are named
    /// once and listed by several routes).
    pub query: &'static [&'static [QueryParam]],
    /// Its handler.
    pub handler: Handler,
}

/// A route answering `200` JSON (change with the builder methods).
pub const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    access: Access,
    handler: Handler,
) -> Route {
    Route {
        method,
        path,
        summary,
        access,
        body: Body::None,
        ok: 200,
        content: Content::Json,
        response: None,
        errors: &[],
        query: &[],
        handler,
    }
}

impl Route {
    /// Takes a JSON body of type `T` (`schema::<T>`).
    pub const fn json(mut self, schema: SchemaFn) -> Route {
        self.body = Body::Json(schema);
        self
    }

    /// Takes an urlencoded form with the fields of `T` (`schema::<T>`).
    pub const fn form(mut self, schema: SchemaFn) -> Route {
        self.body = Body::Form(schema);
        self
    }

    /// Answers JSON of type `T` (`schema::<T>`) on success.
    pub const fn returns(mut self, schema: SchemaFn) -> Route {
        self.response = Some(schema);
        self
    }

    /// Answers `content` on success.
    pub const fn content(mut self, content: Content) -> Route {
        self.content = content;
        self
    }

    /// An HTML page.
    pub const fn html(self) -> Route {
        self.content(Content::Html)
    }

    /// Succeeds with `status` (202, 204) instead of 200; 204 has no body.
    pub const fn ok(mut self, status: u16) -> Route {
        self.ok = status;
        if status == 204 {
            self.content = Content::Empty;
        }
        self
    }

    /// Also answers these error statuses.
    pub const fn errors(mut self, errors: &'static [u16]) -> Route {
        self.errors = errors;
        self
    }

    /// Takes the query parameters of these lists.
    pub const fn query(mut self, query: &'static [&'static [QueryParam]]) -> Route {
        self.query = query;
        self
    }

    /// Whether it is an API route (JSON in and out, backed by the store), not a page or file.
    pub fn is_api(&self) -> bool {
        matches!(self.content, Content::Json | Content::Empty) && self.path != "/openapi.json"
    }

    /// Every status it can answer, sorted: success, auth (401; 403 for verified-only and
    /// admin routes), its own errors, and for API routes 400 and 422 (bad input), 408 and 413
    /// (body too slow or over the limit) when it takes a body, 503 and 504 (store unavailable
    /// or too slow).
    pub fn statuses(&self) -> Vec<u16> {
        let mut out = vec![self.ok];
        match self.access {
            Access::Public => {}
            Access::User => out.push(401),
            Access::Verified | Access::Superuser => out.extend([401, 403]),
        }
        out.extend_from_slice(self.errors);
        if self.is_api() {
            out.extend([400, 422, 503, 504]);
            if !matches!(self.body, Body::None) {
                out.extend([408, 413]);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The names of its path parameters, in order.
    pub fn path_params(&self) -> impl Iterator<Item = &'static str> {
        self.path
            .split('/')
            .filter(|s| s.starts_with('{'))
            .map(|s| s.trim_matches(['{', '}']))
    }
}

/// A group of routes: one concern, one OpenAPI tag.
#[derive(Debug)]
pub struct Group {
    /// The tag.
    pub tag: &'static str,
    /// What the group holds.
    pub description: &'static str,
    /// Its routes.
    pub routes: &'static [Route],
}

/// Every route, by group (in the order of the OpenAPI document's tags).
pub const GROUPS: &[Group] = &[
    users::GROUP,
    nodes::GROUP,
    nodes::EVENTS_GROUP,
    pubsub::GROUP,
    pubsub::KV,
    pubsub::TELEMETRY,
    viewer::GROUP,
    pages::GROUP,
    viewer::PAGES,
];

/// Every route with its group's tag.
pub fn routes() -> impl Iterator<Item = (&'static str, &'static Route)> {
    GROUPS
        .iter()
        .flat_map(|g| g.routes.iter().map(move |r| (g.tag, r)))
}

/// One segment of a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    Param,
}

/// The table parsed for lookup: per segment count, the routes and their segments.
#[derive(Debug)]
struct Index {
    by_len: Vec<Vec<(&'static Route, Vec<Segment>)>>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut by_len: Vec<Vec<(&'static Route, Vec<Segment>)>> = Vec::new();
        for (_, route) in routes() {
            let segs: Vec<Segment> = route
                .path
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| {
                    if s.starts_with('{') {
                        Segment::Param
                    } else {
                        Segment::Literal(s)
                    }
                })
                .collect();
            if by_len.len() <= segs.len() {
                by_len.resize_with(segs.len() + 1, Vec::new);
            }
            by_len[segs.len()].push((route, segs));
        }
        // The most specific template first: at the first position where two differ, a
        // literal before a parameter (`/user/me` before `/user/{id}`).
        for bucket in &mut by_len {
            bucket.sort_by_key(|(_, segs)| {
                segs.iter()
                    .map(|s| *s == Segment::Param)
                    .collect::<Vec<bool>>()
            });
        }
        Index { by_len }
    })
}

/// What the table says about a method and path.
#[derive(Debug)]
pub enum Lookup<'s> {
    /// This route, with these path parameter values.
    Found(&'static Route, Params<'s>),
    /// The path is a route's, the method is not (405).
    WrongMethod,
    /// No route has this path (404).
    NotFound,
}

/// Finds the route for `method` and the path's segments: by segment count, then literal
/// segments, the most specific template first (no allocation).
pub fn find<'s>(method: &str, segs: &[&'s str]) -> Lookup<'s> {
    let Some(candidates) = index().by_len.get(segs.len()) else {
        return Lookup::NotFound;
    };
    let mut path_known = false;
    for (route, template) in candidates {
        let matches = template.iter().zip(segs).all(|(t, s)| match t {
            Segment::Literal(l) => l == s,
            Segment::Param => true,
        });
        if !matches {
            continue;
        }
        if route.method != method {
            path_known = true;
            continue;
        }
        let mut params: Params<'s> = [""; MAX_PARAMS];
        let values = template
            .iter()
            .zip(segs)
            .filter(|(t, _)| **t == Segment::Param)
            .map(|(_, s)| *s);
        for (slot, value) in params.iter_mut().zip(values) {
            *slot = value;
        }
        return Lookup::Found(route, params);
    }
    if path_known {
        Lookup::WrongMethod
    } else {
        Lookup::NotFound
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_unique_and_fits_the_parameter_slots() {
        let mut seen = std::collections::HashSet::new();
        for (_, r) in routes() {
            assert!(
                seen.insert((r.method, r.path)),
                "{} {} twice",
                r.method,
                r.path
            );
            assert!(r.path_params().count() <= MAX_PARAMS, "{}", r.path);
            assert!(r.path.starts_with('/'), "{}", r.path);
            if r.content == Content::Json && r.path != "/openapi.json" {
                assert!(
                    r.response.is_some(),
                    "{} {}: no response type",
                    r.method,
                    r.path
                );
            }
        }
    }

    #[test]
    fn literal_segments_win_over_parameters_in_table_order() {
        // `/user/me` wins over `/user/{user_id}` whatever the order of the entries.
        match find("PATCH", &["user", "me"]) {
            Lookup::Found(r, _) => assert_eq!(r.path, "/user/me"),
            other => panic!("{other:?}"),
        }
        match find("GET", &["node", "abc"]) {
            Lookup::Found(r, p) => {
                assert_eq!(r.path, "/node/{node_id}");
                assert_eq!(p, ["abc", ""]);
            }
            other => panic!("{other:?}"),
        }
        match find("GET", &["kv", "ns", "k"]) {
            Lookup::Found(_, p) => assert_eq!(p, ["ns", "k"]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(find("DELETE", &["nodes"]), Lookup::WrongMethod));
        assert!(matches!(find("GET", &["nope"]), Lookup::NotFound));
        assert!(matches!(
            find("GET", &["a", "b", "c", "d", "e", "f", "g"]),
            Lookup::NotFound
        ));
    }
}
