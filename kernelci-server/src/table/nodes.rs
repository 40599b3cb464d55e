//! The nodes group (query, create, update, submit results) and the events group.

use super::Access::{Public, User};
use super::{Group, Route, route, schema};
use crate::handler;
use crate::routes::{events, nodes};
use crate::schemas::nodes::{BatchNodeset, EventRecord, NodeRequest, NodeTree};
use crate::schemas::params::{EVENTS, NODES_PAGE, NOEVENT};
use crate::schemas::users::Page;
use kernelci::models::Node;

/// The nodes.
pub const GROUP: Group = Group {
    tag: "nodes",
    description: "Query, create and update nodes; submit results",
    routes: ROUTES,
};

/// The event history.
pub const EVENTS_GROUP: Group = Group {
    tag: "events",
    description: "The event history",
    routes: EVENT_ROUTES,
};

const ROUTES: &[Route] = &[
    route(
        "GET",
        "/node/{node_id}",
        "A node, or null",
        Public,
        handler!(|app, req, p| nodes::get(app, p[0]).await),
    )
    .returns(schema::<Option<Node>>),
    route(
        "GET",
        "/nodes",
        "Nodes matching field__op=value filters (paginated)",
        Public,
        handler!(|app, req, p| nodes::find(app, req).await),
    )
    .query(&[NODES_PAGE])
    .returns(schema::<Page<Node>>),
    route(
        "GET",
        "/nodes/fast",
        "Nodes matching filters (bare array)",
        Public,
        handler!(|app, req, p| nodes::find_fast(app, req).await),
    )
    .returns(schema::<Vec<Node>>),
    route(
        "GET",
        "/count",
        "How many nodes match filters",
        Public,
        handler!(|app, req, p| nodes::count(app, req).await),
    )
    .returns(schema::<u64>),
    route(
        "POST",
        "/node",
        "Create a node",
        User,
        handler!(|app, req, p| nodes::create(app, req).await),
    )
    .json(schema::<NodeRequest>)
    .returns(schema::<Node>)
    .errors(&[404]),
    route(
        "PUT",
        "/node/{node_id}",
        "Replace a node",
        User,
        handler!(|app, req, p| nodes::replace(app, req, p[0]).await),
    )
    .json(schema::<NodeRequest>)
    .query(&[NOEVENT])
    .returns(schema::<Node>)
    .errors(&[403, 404]),
    route(
        "PATCH",
        "/node/{node_id}",
        "Update some fields of a node",
        User,
        handler!(|app, req, p| nodes::patch(app, req, p[0]).await),
    )
    .json(schema::<kernelci::models::NodePatch>)
    .query(&[NOEVENT])
    .returns(schema::<Node>)
    .errors(&[403, 404]),
    route(
        "PUT",
        "/batch/nodeset",
        "Set processed_by_kcidb_bridge on nodes; answers how many were set",
        User,
        handler!(|app, req, p| nodes::batch_set(app, req).await),
    )
    .json(schema::<BatchNodeset>)
    .returns(schema::<u64>)
    .errors(&[404]),
    route(
        "PUT",
        "/nodes/{node_id}",
        "Submit a result hierarchy",
        User,
        handler!(|app, req, p| nodes::hierarchy(app, req, p[0]).await),
    )
    .json(schema::<NodeTree>)
    .returns(schema::<Vec<Node>>)
    .errors(&[403, 404]),
];

const EVENT_ROUTES: &[Route] = &[route(
    "GET",
    "/events",
    "Event history",
    Public,
    handler!(|app, req, p| events::list(app, req).await),
)
.query(&[EVENTS])
.returns(schema::<Vec<EventRecord>>)];
