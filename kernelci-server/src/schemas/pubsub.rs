//! Pub/sub and telemetry.

use kernelci::models::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A subscription.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Subscription {
    /// Its id (for `/listen`, `/ack`, `/unsubscribe`).
    pub id: u64,
    /// The channel.
    pub channel: String,
    /// Its owner.
    pub user: String,
    /// Whether it receives every user's events.
    pub promiscuous: bool,
}

/// A subscription as `/stats/subscriptions` lists it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct SubscriptionStats {
    /// Its id.
    pub id: u64,
    /// The channel.
    pub channel: String,
    /// Its owner.
    pub user: String,
    /// Whether it receives every user's events.
    pub promiscuous: bool,
    /// When it was made.
    pub created: Timestamp,
    /// When it was last polled.
    pub last_poll: Option<Timestamp>,
}

/// What `/listen` answers: upstream's Redis message, the CloudEvent as JSON text in `data`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Listened {
    /// `message`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The channel.
    pub channel: String,
    /// The event (a JSON CloudEvent, as text).
    pub data: String,
    /// Other fields (`pattern`, `sequence_id`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// What `/listen` answers: one message (upstream's), or with `?max=N` an array of up to N.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ListenAnswer {
    /// Without `max`: one event or keep-alive.
    One(Listened),
    /// With `max`: the events waiting (at least one) or one keep-alive.
    Batch(Vec<Listened>),
}

/// `POST /ack/{id}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Ack {
    /// Everything up to this sequence number was handled.
    pub sequence_id: u64,
}

/// `POST /publish/{channel}`: a CloudEvent's data and attributes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Publish {
    /// The payload.
    #[serde(default)]
    pub data: Value,
    /// The CloudEvent type.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The CloudEvent source.
    #[serde(default)]
    pub source: String,
    /// More CloudEvent attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

/// `POST /push/{list}`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct Push {
    /// The payload.
    pub data: Value,
    /// The CloudEvent type.
    #[serde(default, rename = "type")]
    pub kind: String,
    /// The CloudEvent source.
    #[serde(default)]
    pub source: String,
}

/// One telemetry event (`POST /telemetry` takes a list).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
pub struct TelemetryEvent {
    /// When (default: now).
    #[serde(default)]
    pub ts: Option<Timestamp>,
    /// What happened (`job_submission`, `job_result`, `runtime_error`, ...).
    pub kind: String,
    /// The runtime.
    pub runtime: String,
    /// Device type.
    #[serde(default)]
    pub device_type: String,
    /// Device id.
    #[serde(default)]
    pub device_id: String,
    /// Job name.
    #[serde(default)]
    pub job_name: String,
    /// Job id.
    #[serde(default)]
    pub job_id: String,
    /// Tree.
    #[serde(default)]
    pub tree: String,
    /// Branch.
    #[serde(default)]
    pub branch: String,
    /// Architecture.
    #[serde(default)]
    pub arch: String,
    /// Result.
    #[serde(default)]
    pub result: String,
    /// Whether it was an infrastructure error.
    #[serde(default)]
    pub is_infra_error: bool,
    /// Error type.
    #[serde(default)]
    pub error_type: String,
    /// Error message.
    #[serde(default)]
    pub error_msg: String,
    /// Retry number.
    #[serde(default)]
    pub retry: i64,
    /// More.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// A stored telemetry event (`GET /telemetry`): the fields sent, with its id and time.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct TelemetryRow {
    /// What happened.
    pub kind: String,
    /// The runtime.
    pub runtime: String,
    /// The other fields, as sent.
    #[serde(flatten)]
    pub fields: Map<String, Value>,
}

/// `POST /telemetry`: how many events were stored.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Inserted {
    /// The count.
    pub inserted: u64,
}

/// `GET /telemetry/anomalies`.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct Anomalies {
    /// The window (`6h`, `1d`, ...).
    pub window: String,
    /// The failure rate above which a group is reported.
    pub threshold: f64,
    /// The fewest events a group needs.
    pub min_total: u64,
    /// The field grouped by.
    pub scope: String,
    /// The window's start.
    pub since: String,
    /// Groups failing unusually (their counts, rates, last seen, latest error).
    pub result_anomalies: Vec<Map<String, Value>>,
    /// Error types seen unusually often per runtime.
    pub error_anomalies: Vec<ErrorAnomaly>,
}

/// An error type seen unusually often on a runtime.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ErrorAnomaly {
    /// The runtime.
    pub runtime: Value,
    /// The error type.
    pub error_type: Value,
    /// How often.
    pub count: u64,
}
