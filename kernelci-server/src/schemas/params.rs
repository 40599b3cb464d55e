//! The query parameters of the routes, as the route table documents them.

use schemars::{Schema, SchemaGenerator, json_schema};

use crate::table::QueryParam;

const fn q(
    name: &'static str,
    description: &'static str,
    schema: fn(&mut SchemaGenerator) -> Schema,
) -> QueryParam {
    QueryParam {
        name,
        required: false,
        description,
        schema,
    }
}

fn limit(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 1})
}

fn limit_1000(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 1, "maximum": crate::routes::MAX_PAGE_LIMIT})
}

fn limit_50(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 1, "maximum": 50})
}

fn offset(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 0})
}

fn boolean(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "boolean"})
}

fn string(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string"})
}

fn days(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 1, "maximum": 365})
}

fn hours(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 1, "maximum": 48})
}

fn category(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"enum": ["build", "boot", "test"]})
}

fn statuses(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "items": {"enum": ["pass", "fail", "inconclusive"]}})
}

fn strings(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "array", "items": {"type": "string"}})
}

/// `limit` (no maximum: the answer streams) and `offset`.
pub const NODES_PAGE: &[QueryParam] = &[
    q("limit", "page size (no maximum: the answer streams)", limit),
    q("offset", "items to skip", offset),
];

/// `limit` (at most 1000) and `offset`.
pub const PAGE_1000: &[QueryParam] = &[
    q("limit", "page size, at most 1000", limit_1000),
    q("offset", "items to skip", offset),
];

/// The event history's paging and filters.
pub const EVENTS: &[QueryParam] = &[
    q("limit", "page size (no maximum: the answer streams)", limit),
    q("offset", "items to skip", offset),
    q(
        "recursive",
        "include the nodes (limit at most 1000)",
        boolean,
    ),
    q(
        "from",
        "events after this ISO 8601 time (or Unix seconds)",
        string,
    ),
    q("channel", "the channel", string),
    q("node_id", "events of this node", string),
    q("id", "one event id", string),
    q("ids", "comma-separated event ids", string),
];

/// `noevent`: write without publishing an event.
pub const NOEVENT: &[QueryParam] = &[q("noevent", "publish no event", boolean)];

/// `promisc` and `subscriber_id` of `/subscribe`.
pub const SUBSCRIBE: &[QueryParam] = &[
    q("promisc", "receive every user's events", boolean),
    q(
        "subscriber_id",
        "durable subscription: resume this subscriber's position",
        string,
    ),
];

fn batch_size(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 1, "maximum": crate::pubsub::MAX_BATCH})
}

/// `acknowledge` and `max` of `/listen`.
pub const LISTEN: &[QueryParam] = &[
    q(
        "acknowledge",
        "acknowledge events up to this sequence number first",
        offset,
    ),
    q(
        "max",
        "our extension: answer a JSON array of up to this many events (batched catch-up)",
        batch_size,
    ),
];

/// `group_by` (required) of `/telemetry/stats`.
pub const TELEMETRY_STATS: &[QueryParam] = &[QueryParam {
    name: "group_by",
    required: true,
    description: "comma-separated fields to group by",
    schema: string,
}];

/// The viewer's result filters: status and the facets (each repeatable: OR).
pub const FILTERS: &[QueryParam] = &[
    q(
        "status",
        "pass, fail, inconclusive (repeatable: OR)",
        statuses,
    ),
    q("arch", "data.arch equals (repeatable: OR)", strings),
    q(
        "config",
        "data.config_full equals (repeatable: OR)",
        strings,
    ),
    q("compiler", "data.compiler equals (repeatable: OR)", strings),
    q("platform", "data.platform equals (repeatable: OR)", strings),
    q("runtime", "data.runtime equals (repeatable: OR)", strings),
];

/// A category and a page (of a revision's results).
pub const CATEGORY_PAGE: &[QueryParam] = &[
    q("category", "build, boot or test (default test)", category),
    q("offset", "integer >= 0", offset),
    q("limit", "integer 1-1000, default 100", limit_1000),
];

/// `days` and `tree` of the trees view.
pub const DAYS_TREE: &[QueryParam] = &[
    q("days", "integer 1-365, default 7", days),
    q("tree", "tree name contains", string),
];

/// `hours` of the health view.
pub const HOURS: &[QueryParam] = &[q("hours", "integer 1-48, default 24", hours)];

/// `artifact` of a node's log.
pub const LOG_ARTIFACT: &[QueryParam] = &[q(
    "artifact",
    "artifact key (default: the first log)",
    string,
)];

/// `url` of a log by URL.
pub const LOG_URL: &[QueryParam] = &[q("url", "the log URL", string)];

/// `node_id` of `/viewer`.
pub const NODE_ID: &[QueryParam] = &[q("node_id", "show this node", string)];

/// `limit` of a history or of a result's runs.
pub const HISTORY_LIMIT: &[QueryParam] = &[q("limit", "integer 1-50, default 10", limit_50)];
