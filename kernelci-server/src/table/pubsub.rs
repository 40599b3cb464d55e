//! The pub/sub group (subscriptions, listening, publishing, lists), key/value and telemetry.

use super::Access::{Public, Superuser, User};
use super::{Group, Route, route, schema};
use crate::handler;
use crate::routes::{kv, pubsub, telemetry};
use crate::schemas::params::{LISTEN, PAGE_1000, SUBSCRIBE, TELEMETRY_STATS};
use crate::schemas::pubsub::{
    Ack, Anomalies, Inserted, ListenAnswer, Publish, Push, Subscription, SubscriptionStats,
    TelemetryEvent, TelemetryRow,
};
use crate::schemas::users::Page;

/// Pub/sub.
pub const GROUP: Group = Group {
    tag: "pubsub",
    description: "Subscriptions, listening, publishing and lists",
    routes: ROUTES,
};

/// Key/value.
pub const KV: Group = Group {
    tag: "kv",
    description: "The key/value store",
    routes: KV_ROUTES,
};

/// Telemetry.
pub const TELEMETRY: Group = Group {
    tag: "telemetry",
    description: "Job and device telemetry",
    routes: TELEMETRY_ROUTES,
};

const ROUTES: &[Route] = &[
    route(
        "POST",
        "/subscribe/{channel}",
        "Subscribe to a channel (durable with subscriber_id; 409: another user's id)",
        User,
        handler!(|app, req, p| pubsub::subscribe(app, req, p[0]).await),
    )
    .query(&[SUBSCRIBE])
    .returns(schema::<Subscription>)
    .errors(&[409]),
    route(
        "POST",
        "/unsubscribe/{sub_id}",
        "Unsubscribe (404: unknown subscription; 403: another user's)",
        User,
        handler!(|app, req, p| pubsub::unsubscribe(app, req, p[0]).await),
    )
    .returns(schema::<()>)
    .errors(&[403, 404]),
    route(
        "GET",
        "/listen/{sub_id}",
        "Wait for the next event (long poll; 404: unknown subscription; 410: events past \
         retention; 403: another user's)",
        User,
        handler!(|app, req, p| pubsub::listen(app, req, p[0]).await),
    )
    .query(&[LISTEN])
    .returns(schema::<ListenAnswer>)
    .errors(&[403, 404, 410]),
    route(
        "POST",
        "/ack/{sub_id}",
        "Acknowledge events up to a sequence number (404: unknown subscription; 403: another \
         user's)",
        User,
        handler!(|app, req, p| pubsub::ack(app, req, p[0]).await),
    )
    .json(schema::<Ack>)
    .returns(schema::<()>)
    .errors(&[403, 404]),
    route(
        "POST",
        "/publish/{channel}",
        "Publish an event",
        User,
        handler!(|app, req, p| pubsub::publish(app, req, p[0]).await),
    )
    .json(schema::<Publish>)
    .returns(schema::<()>),
    route(
        "POST",
        "/push/{list_name}",
        "Append to a list",
        User,
        handler!(|app, req, p| pubsub::push(app, req, p[0]).await),
    )
    .json(schema::<Push>)
    .returns(schema::<()>),
    route(
        "GET",
        "/pop/{list_name}",
        "Take the first item of a list (blocking)",
        User,
        handler!(|app, req, p| pubsub::pop(app, req, p[0]).await),
    )
    .returns(schema::<serde_json::Value>),
    route(
        "GET",
        "/stats/subscriptions",
        "This process's subscriptions",
        Superuser,
        handler!(|app, req, p| pubsub::stats(app, req).await),
    )
    .returns(schema::<Vec<SubscriptionStats>>),
];

const KV_ROUTES: &[Route] = &[
    route(
        "GET",
        "/kv/{namespace}/{key}",
        "Read a value (null when unset)",
        User,
        handler!(|app, req, p| kv::get(app, req, p[0], p[1]).await),
    )
    .returns(schema::<Option<String>>),
    route(
        "POST",
        "/kv/{namespace}/{key}",
        "Write a value (JSON string; empty deletes)",
        User,
        handler!(|app, req, p| kv::set(app, req, p[0], p[1]).await),
    )
    .json(schema::<Option<String>>)
    .returns(schema::<String>),
    route(
        "DELETE",
        "/kv/{namespace}/{key}",
        "Delete a value",
        User,
        handler!(|app, req, p| kv::delete(app, req, p[0], p[1]).await),
    )
    .returns(schema::<String>),
];

const TELEMETRY_ROUTES: &[Route] = &[
    route(
        "POST",
        "/telemetry",
        "Add telemetry events",
        User,
        handler!(|app, req, p| telemetry::add(app, req).await),
    )
    .json(schema::<Vec<TelemetryEvent>>)
    .returns(schema::<Inserted>),
    route(
        "GET",
        "/telemetry",
        "Telemetry events (paginated)",
        Public,
        handler!(|app, req, p| telemetry::list(app, req).await),
    )
    .query(&[PAGE_1000])
    .returns(schema::<Page<TelemetryRow>>),
    route(
        "GET",
        "/telemetry/stats",
        "Telemetry counts by group",
        Public,
        handler!(|app, req, p| telemetry::stats(app, req).await),
    )
    .query(&[TELEMETRY_STATS])
    .returns(schema::<Vec<serde_json::Map<String, serde_json::Value>>>),
    route(
        "GET",
        "/telemetry/anomalies",
        "Devices and runtimes failing unusually",
        Public,
        handler!(|app, req, p| telemetry::anomalies(app, req).await),
    )
    .returns(schema::<Anomalies>),
];
