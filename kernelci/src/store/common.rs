//! Helpers every backend shares: the node events a write appends, the update rules, user and
//! group lookups evaluated in memory, paging of in-memory results, telemetry group checks.
//!
//! The public ones ([`node_created_event`], [`node_updated_event`], [`apply_update_rule`],
//! [`TelemetryGrouper`]) are for third-party stores too, so that they behave exactly like ours.

use serde_json::Value;

use super::{Conflict, NewEvent, StoreError, StoreResult, TelemetryGroup, UpdateRule};
use crate::events::{NODE_CHANNEL, NodeEvent};
use crate::models::{Node, Timestamp, User, UserGroup};
use crate::query::Filter;

/// The event a node insert appends (`op: created`, on channel `node`, owned by the node's
/// owner).
pub fn node_created_event(node: &Node) -> NewEvent {
    node_event(NodeEvent::created(node), node)
}

/// The event a node update appends (`op: updated`, with the previous state and result;
/// `is_hierarchy` for the root of a hierarchy write).
pub fn node_updated_event(node: &Node, previous: &Node, is_hierarchy: bool) -> NewEvent {
    node_event(
        NodeEvent::updated(node, previous.state, previous.result, is_hierarchy),
        node,
    )
}

fn node_event(event: NodeEvent, node: &Node) -> NewEvent {
    NewEvent {
        channel: NODE_CHANNEL.into(),
        owner: node.owner.clone().filter(|o| !o.is_empty()),
        data: event.to_value(),
        attributes: crate::events::logged_event_attributes(),
    }
}

/// Applies `rule` to a replacement of `previous` by `node`: refuses a forbidden state move
/// (when checked), keeps the stored identity (when asked) and stamps `updated`.
pub fn apply_update_rule(node: &mut Node, previous: &Node, rule: UpdateRule) -> StoreResult<()> {
    if rule.check_transition {
        previous.state.check_transition(node.state)?;
    }
    if rule.keep_identity {
        node.owner.clone_from(&previous.owner);
        node.submitter.clone_from(&previous.submitter);
        node.user_groups.clone_from(&previous.user_groups);
    }
    node.updated = Timestamp::now();
    Ok(())
}

/// Refuses a field `set_field` must not write: empty, dotted, `$`-prefixed, or the id.
pub(crate) fn check_settable_field(field: &str) -> StoreResult<()> {
    if field.is_empty() || field.contains('.') || field.starts_with('$') || field == "id" {
        return Err(StoreError::Invalid(format!(
            "field '{field}' cannot be set"
        )));
    }
    if field == "_id" {
        return Err(StoreError::Invalid(format!(
            "field '{field}' cannot be set"
        )));
    }
    Ok(())
}

/// One page of `items` (`offset`, then at most `limit`), and how many there were in all.
pub(crate) fn page<T>(items: Vec<T>, offset: u64, limit: Option<u64>) -> (Vec<T>, u64) {
    let total = items.len() as u64;
    let it = items
        .into_iter()
        .skip(usize::try_from(offset).unwrap_or(usize::MAX));
    let out = match limit {
        Some(l) => it.take(usize::try_from(l).unwrap_or(usize::MAX)).collect(),
        None => it.collect(),
    };
    (out, total)
}

/// The users (in id order) matching `filter` on their public shape (without the password
/// hash), paged, and the total.
pub(crate) fn find_users_in(
    all: Vec<User>,
    filter: &Filter,
    offset: u64,
    limit: Option<u64>,
) -> (Vec<User>, u64) {
    let matching = all
        .into_iter()
        .filter(|u| filter.matches(&serde_json::to_value(u.read()).unwrap_or(Value::Null)))
        .collect();
    page(matching, offset, limit)
}

/// The groups (in id order) matching `filter`, paged, and the total.
pub(crate) fn find_groups_in(
    all: Vec<UserGroup>,
    filter: &Filter,
    offset: u64,
    limit: Option<u64>,
) -> (Vec<UserGroup>, u64) {
    let matching = all
        .into_iter()
        .filter(|g| filter.matches(&serde_json::to_value(g).unwrap_or(Value::Null)))
        .collect();
    page(matching, offset, limit)
}

/// The conflict of a user write that broke a unique index: the username when the backend's
/// words (`detail`, naming the index or column) mention it, else the e-mail.
pub(crate) fn user_conflict(user: &User, detail: &str) -> StoreError {
    StoreError::Conflict(if detail.contains("username") {
        Conflict::Username(user.username.clone())
    } else {
        Conflict::Email(user.email.clone())
    })
}

/// Refuses `group_by` fields that are not plain top-level names (they are spelled into SQL
/// and aggregation pipelines).
pub(crate) fn check_group_by(group_by: &[String]) -> StoreResult<()> {
    if group_by.is_empty() {
        return Err(StoreError::Invalid("no field to group telemetry by".into()));
    }
    for f in group_by {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(StoreError::Invalid(format!(
                "cannot group telemetry by '{f}'"
            )));
        }
    }
    Ok(())
}

/// Telemetry groups counted in memory, one document at a time (for stores or filters a
/// database cannot aggregate); memory grows with the number of groups, not of documents.
#[derive(Debug, Default)]
pub struct TelemetryGrouper {
    groups: std::collections::BTreeMap<String, TelemetryGroup>,
}

impl TelemetryGrouper {
    /// Counts `doc` into its group of `group_by`.
    pub fn add(&mut self, doc: &Value, group_by: &[String]) {
        let keys = TelemetryGroup::keys_of(doc, group_by);
        self.groups
            .entry(serde_json::to_string(&keys).unwrap_or_default())
            .or_insert_with(|| TelemetryGroup {
                keys,
                ..TelemetryGroup::default()
            })
            .add(doc);
    }

    /// The groups, in key order.
    pub fn finish(self) -> Vec<TelemetryGroup> {
        self.groups.into_values().collect()
    }
}
