//! The viewer: its JSON data endpoints (our extension, tag `viewer`) and its HTML pages
//! (upstream's page paths among them; see [`crate::viewer`]).

use super::Access::Public;
use super::{Group, Route, route, schema};
use crate::schemas::params::{
    CATEGORY_PAGE, DAYS_TREE, FILTERS, HISTORY_LIMIT, HOURS, LOG_ARTIFACT, LOG_URL, NODE_ID,
};
use crate::viewer::model::{
    CheckoutSummary, CompareResponse, HealthResponse, HistoryResponse, LogResponse, ResultDetail,
    ResultsResponse, TreesResponse,
};
use crate::viewer::{api, manage, pages};
use crate::{handler, page_handler};

/// The data endpoints.
pub const GROUP: Group = Group {
    tag: "viewer",
    description: "The web viewer's data (our extension): trees, revisions, results, logs, \
                  compare, health",
    routes: DATA,
};

/// The pages (tagged with the other pages).
pub const PAGES: Group = Group {
    tag: "pages",
    description: "HTML pages, files, metrics and this description",
    routes: PAGE_ROUTES,
};

const DATA: &[Route] = &[
    route(
        "GET",
        "/viewer/api/trees",
        "Viewer: the latest revision of each tree/branch in the window, with build, boot and \
         test counts",
        Public,
        handler!(|app, req, p| api::trees(app, req).await),
    )
    .query(&[DAYS_TREE])
    .returns(schema::<TreesResponse>),
    route(
        "GET",
        "/viewer/api/checkout/{id}",
        "Viewer: a revision's counts, per-facet breakdowns and facet values, under the filters",
        Public,
        handler!(|app, req, p| api::checkout(app, req, p[0]).await),
    )
    .query(&[FILTERS])
    .returns(schema::<CheckoutSummary>)
    .errors(&[404]),
    route(
        "GET",
        "/viewer/api/checkout/{id}/results",
        "Viewer: a page of a revision's builds, boots or tests, failures first",
        Public,
        handler!(|app, req, p| api::results(app, req, p[0]).await),
    )
    .query(&[CATEGORY_PAGE, FILTERS])
    .returns(schema::<ResultsResponse>)
    .errors(&[404]),
    route(
        "GET",
        "/viewer/api/checkout/{id}/history",
        "Viewer: this revision and the ones before it on its branch, with counts under the \
         filters",
        Public,
        handler!(|app, req, p| api::history(app, req, p[0]).await),
    )
    .query(&[HISTORY_LIMIT, FILTERS])
    .returns(schema::<HistoryResponse>)
    .errors(&[404]),
    route(
        "GET",
        "/viewer/api/result/{id}",
        "Viewer: a build or test, its context, its last runs and their label (regression, \
         fixed, unstable)",
        Public,
        handler!(|app, req, p| api::result(app, req, p[0]).await),
    )
    .query(&[HISTORY_LIMIT])
    .returns(schema::<ResultDetail>)
    .errors(&[404]),
    route(
        "GET",
        "/viewer/api/log/{id}",
        "Viewer: a node's log from storage (size-capped, error and warning lines marked)",
        Public,
        handler!(|app, req, p| api::log(app, req, Some(p[0])).await),
    )
    .query(&[LOG_ARTIFACT])
    .returns(schema::<LogResponse>)
    .errors(&[403, 404, 502]),
    route(
        "GET",
        "/viewer/api/log",
        "Viewer: a log from storage by URL (only this server's storage or a configured one; \
         else 403)",
        Public,
        handler!(|app, req, p| api::log(app, req, None).await),
    )
    .query(&[LOG_URL])
    .returns(schema::<LogResponse>)
    .errors(&[403, 404, 502]),
    route(
        "GET",
        "/viewer/api/compare/{base}/{target}",
        "Viewer: two revisions compared: regressions, new failures, fixes, still failing",
        Public,
        handler!(|app, req, p| api::compare(app, req, p[0], p[1]).await),
    )
    .query(&[FILTERS])
    .returns(schema::<CompareResponse>)
    .errors(&[404]),
    route(
        "GET",
        "/viewer/api/health",
        "Viewer: nodes per kind/state/result, pass and infrastructure-error rates per runtime \
         and platform, queue, anomalies",
        Public,
        handler!(|app, req, p| api::health(app, req).await),
    )
    .query(&[HOURS])
    .returns(schema::<HealthResponse>),
];

/// Every page answers HTML; an error is an HTML error page with the error's status.
const PAGE_ERRORS: &[u16] = &[400, 404];

const PAGE_ROUTES: &[Route] = &[
    route(
        "GET",
        "/viewer",
        "Node viewer page: the trees, or with `node_id` that node",
        Public,
        page_handler!(
            |app, req, p| match req.query_param("node_id").filter(|i| !i.is_empty()) {
                Some(id) => pages::node(app, id).await,
                None => pages::trees(app, req, Some("Maestro API Viewer")).await,
            }
        ),
    )
    .query(&[NODE_ID, DAYS_TREE])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/dashboard",
        "Dashboard page",
        Public,
        page_handler!(|app, req, p| pages::trees(app, req, Some("KernelCI Dashboard")).await),
    )
    .query(&[DAYS_TREE])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/manage",
        "Manage page",
        Public,
        page_handler!(|app, req, p| manage::form(app, Some("Maestro API Manage")).await),
    )
    .html(),
    route(
        "GET",
        "/analytics",
        "Analytics page",
        Public,
        page_handler!(
            |app, req, p| pages::health(app, req, Some("KernelCI Pipeline Analytics")).await
        ),
    )
    .query(&[HOURS])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/stats",
        "Statistics page",
        Public,
        page_handler!(|app, req, p| pages::health(app, req, Some("KernelCI API Statistics")).await),
    )
    .query(&[HOURS])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/trees",
        "Viewer: trees page",
        Public,
        page_handler!(|app, req, p| pages::trees(app, req, None).await),
    )
    .query(&[DAYS_TREE])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/tree/{tree}/{branch}",
        "Viewer: redirect to a branch's latest revision",
        Public,
        page_handler!(|app, req, p| pages::tree_latest(app, p[0], p[1]).await),
    )
    .html()
    .errors(&[303, 404]),
    route(
        "GET",
        "/viewer/checkout/{id}",
        "Viewer: revision page",
        Public,
        page_handler!(|app, req, p| pages::checkout(app, req, p[0]).await),
    )
    .query(&[FILTERS])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/result/{id}",
        "Viewer: result page",
        Public,
        page_handler!(|app, req, p| pages::result(app, req, p[0]).await),
    )
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/log",
        "Viewer: log page by URL",
        Public,
        page_handler!(|app, req, p| pages::log(app, req, None).await),
    )
    .query(&[LOG_URL])
    .html()
    .errors(&[400, 403, 404, 502]),
    route(
        "GET",
        "/viewer/log/{id}",
        "Viewer: log page",
        Public,
        page_handler!(|app, req, p| pages::log(app, req, Some(p[0])).await),
    )
    .query(&[LOG_ARTIFACT])
    .html()
    .errors(&[400, 403, 404, 502]),
    route(
        "GET",
        "/viewer/compare/{id}",
        "Viewer: compare a revision with the one before it",
        Public,
        page_handler!(|app, req, p| pages::compare_previous(app, req, p[0]).await),
    )
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/compare/{base}/{target}",
        "Viewer: compare page",
        Public,
        page_handler!(|app, req, p| pages::compare(app, req, p[0], p[1]).await),
    )
    .query(&[FILTERS])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/health",
        "Viewer: pipeline health page",
        Public,
        page_handler!(|app, req, p| pages::health(app, req, None).await),
    )
    .query(&[HOURS])
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/node/{id}",
        "Viewer: node page",
        Public,
        page_handler!(|app, req, p| pages::node(app, p[0]).await),
    )
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/nodes",
        "Viewer: node search page",
        Public,
        page_handler!(|app, req, p| pages::nodes(app, req).await),
    )
    .html()
    .errors(PAGE_ERRORS),
    route(
        "GET",
        "/viewer/manage",
        "Viewer: submit a custom checkout (form)",
        Public,
        page_handler!(|app, req, p| manage::form(app, None).await),
    )
    .html(),
    route(
        "POST",
        "/viewer/manage",
        "Viewer: submit a custom checkout with the API token given in the form (the page \
         says what happened: 401 without a valid token)",
        Public,
        page_handler!(|app, req, p| manage::submit(app, req).await),
    )
    .html()
    .errors(&[400, 401, 403, 404, 422]),
];
