//! The `data` of node events on the `node` channel (api spec §6.2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CloudEvent, EventError};
use crate::models::{Node, ResultValue, State};

/// The channel node events are published on.
pub const NODE_CHANNEL: &str = "node";

/// What happened to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeOp {
    /// The node was created.
    Created,
    /// The node was updated (PUT, PATCH or as part of a hierarchy).
    Updated,
}

impl NodeOp {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeOp::Created => "created",
            NodeOp::Updated => "updated",
        }
    }
}

/// The state and result of a node before an update (our addition to upstream's payload, which
/// lets consumers trigger on transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    /// The state before the update.
    pub state: State,
    /// The result before the update.
    pub result: Option<ResultValue>,
}

/// A node event payload:
/// `{op, id, kind, name, path, group, state, result, owner, data, is_hierarchy}` and, on
/// updates only, `previous_state, previous_result`, in that order.
///
/// ```
/// use kernelci::events::NodeEvent;
/// use kernelci::models::{Node, NodeKind, State};
///
/// let mut node = Node::new(NodeKind::Checkout, "checkout");
/// node.id = Some(kernelci::models::ObjectId::new());
/// let created = NodeEvent::created(&node).to_value();
/// assert_eq!(created.as_object().unwrap().len(), 11);
/// node.state = State::Available;
/// let updated = NodeEvent::updated(&node, State::Running, None, false);
/// let keys: Vec<_> = updated.to_value().as_object().unwrap().keys().cloned().collect();
/// assert_eq!(keys.last().unwrap(), "previous_result");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    /// Created or updated.
    pub op: NodeOp,
    /// The node id (24 hex characters).
    pub id: String,
    /// The node kind.
    pub kind: String,
    /// The node name.
    pub name: String,
    /// The node path.
    pub path: Vec<String>,
    /// The node group.
    pub group: Option<String>,
    /// The state after the write.
    pub state: State,
    /// The result after the write.
    pub result: Option<ResultValue>,
    /// The node owner.
    pub owner: Option<String>,
    /// The node's `data`.
    pub data: Value,
    /// Whether the write was part of a hierarchy submission (`PUT /nodes/{id}`).
    pub is_hierarchy: bool,
    /// On updates: the state and result before the write. `None` on `created` events.
    pub previous: Option<Previous>,
}

impl NodeEvent {
    fn from_node(node: &Node, op: NodeOp, is_hierarchy: bool, previous: Option<Previous>) -> Self {
        NodeEvent {
            op,
            id: node.id.map(|id| id.to_hex()).unwrap_or_default(),
            kind: node.kind.clone(),
            name: node.name.clone(),
            path: node.path.clone(),
            group: node.group.clone(),
            state: node.state,
            result: node.result,
            owner: node.owner.clone(),
            data: node.data.clone().map(Value::Object).unwrap_or(Value::Null),
            is_hierarchy,
            previous,
        }
    }

    /// The event of a node that was just created (`is_hierarchy: false`).
    pub fn created(node: &Node) -> NodeEvent {
        NodeEvent::from_node(node, NodeOp::Created, false, None)
    }

    /// The `created` event of a node made as part of a hierarchy submission.
    pub fn created_in_hierarchy(node: &Node) -> NodeEvent {
        NodeEvent::from_node(node, NodeOp::Created, true, None)
    }

    /// The event of a node that was just updated; `node` is the node after the write.
    pub fn updated(
        node: &Node,
        previous_state: State,
        previous_result: Option<ResultValue>,
        is_hierarchy: bool,
    ) -> NodeEvent {
        let previous = Previous {
            state: previous_state,
            result: previous_result,
        };
        NodeEvent::from_node(node, NodeOp::Updated, is_hierarchy, Some(previous))
    }

    /// Whether the node changed state with this event (always true for `created`).
    pub fn is_transition(&self) -> bool {
        self.previous
            .is_none_or(|p| p.state != self.state || p.result != self.result)
    }

    /// The payload as a JSON object, in upstream's key order.
    pub fn to_value(&self) -> Value {
        let opt = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_owned()));
        let mut map = Map::new();
        map.insert("op".into(), self.op.as_str().into());
        map.insert("id".into(), self.id.clone().into());
        map.insert("kind".into(), self.kind.clone().into());
        map.insert("name".into(), self.name.clone().into());
        map.insert(
            "path".into(),
            Value::Array(self.path.iter().cloned().map(Value::String).collect()),
        );
        map.insert("group".into(), opt(self.group.as_deref()));
        map.insert("state".into(), self.state.as_str().into());
        map.insert("result".into(), opt(self.result.map(ResultValue::as_str)));
        map.insert("owner".into(), opt(self.owner.as_deref()));
        map.insert("data".into(), self.data.clone());
        map.insert("is_hierarchy".into(), self.is_hierarchy.into());
        if let Some(previous) = &self.previous {
            map.insert("previous_state".into(), previous.state.as_str().into());
            map.insert(
                "previous_result".into(),
                opt(previous.result.map(ResultValue::as_str)),
            );
        }
        Value::Object(map)
    }

    /// Reads a node event payload. `previous_state`/`previous_result` are optional (upstream's
    /// own events do not carry them); unknown keys are ignored.
    pub fn from_value(value: &Value) -> Result<NodeEvent, EventError> {
        let wire: Wire = serde_json::from_value(value.clone())
            .map_err(|e| EventError::Invalid(format!("node event: {e}")))?;
        let previous = match (wire.previous_state, wire.op) {
            (Some(state), NodeOp::Updated) => Some(Previous {
                state,
                result: wire.previous_result,
            }),
            _ => None,
        };
        Ok(NodeEvent {
            op: wire.op,
            id: wire.id,
            kind: wire.kind,
            name: wire.name,
            path: wire.path,
            group: wire.group,
            state: wire.state,
            result: wire.result,
            owner: wire.owner,
            data: wire.data,
            is_hierarchy: wire.is_hierarchy,
            previous,
        })
    }

    /// The CloudEvent upstream publishes for this payload: default source and type, and the
    /// `owner` extension when the node has a non-empty owner.
    pub fn to_cloud_event(&self) -> CloudEvent {
        let event = CloudEvent::new(self.to_value());
        match &self.owner {
            Some(owner) => event.with_owner(owner.clone()),
            None => event,
        }
    }
}

impl Serialize for NodeEvent {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for NodeEvent {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        NodeEvent::from_value(&value).map_err(serde::de::Error::custom)
    }
}

#[derive(Deserialize)]
struct Wire {
    op: NodeOp,
    id: String,
    kind: String,
    name: String,
    #[serde(default)]
    path: Vec<String>,
    #[serde(default)]
    group: Option<String>,
    state: State,
    #[serde(default)]
    result: Option<ResultValue>,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    is_hierarchy: bool,
    #[serde(default)]
    previous_state: Option<State>,
    #[serde(default)]
    previous_result: Option<ResultValue>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::{NodeKind, ObjectId};
    use serde_json::json;

    fn node() -> Node {
        let mut node = Node::new(NodeKind::Kbuild, "kbuild-gcc-12-x86");
        node.id = Some(ObjectId::parse_str("65a1355ee98651d0fe81e41d").unwrap());
        node.path = vec!["checkout".into(), "kbuild-gcc-12-x86".into()];
        node.group = Some("kbuild-gcc-12-x86".into());
        node.owner = Some("bob".into());
        node.data = Some(json!({"arch": "x86_64"}).as_object().unwrap().clone());
        node
    }

    #[test]
    fn created_has_exactly_the_eleven_upstream_keys() {
        let value = NodeEvent::created(&node()).to_value();
        assert_eq!(
            serde_json::to_string(&value).unwrap(),
            r#"{"op":"created","id":"65a1355ee98651d0fe81e41d","kind":"kbuild","name":"kbuild-gcc-12-x86","path":["checkout","kbuild-gcc-12-x86"],"group":"kbuild-gcc-12-x86","state":"running","result":null,"owner":"bob","data":{"arch":"x86_64"},"is_hierarchy":false}"#
        );
        assert_eq!(
            NodeEvent::from_value(&value).unwrap(),
            NodeEvent::created(&node())
        );
    }

    #[test]
    fn updated_carries_previous_state_and_result_last() {
        let mut n = node();
        n.state = State::Done;
        n.result = Some(ResultValue::Fail);
        let event = NodeEvent::updated(&n, State::Running, None, true);
        let value = event.to_value();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            [
                "op",
                "id",
                "kind",
                "name",
                "path",
                "group",
                "state",
                "result",
                "owner",
                "data",
                "is_hierarchy",
                "previous_state",
                "previous_result"
            ]
        );
        assert_eq!(value["previous_state"], "running");
        assert_eq!(value["previous_result"], Value::Null);
        assert_eq!(value["result"], "fail");
        assert!(event.is_transition());
        let back: NodeEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
        assert!(
            !NodeEvent::updated(&n, State::Done, Some(ResultValue::Fail), false).is_transition()
        );
    }

    #[test]
    fn cloud_event_has_owner_extension_when_owned() {
        let ce = NodeEvent::created(&node()).to_cloud_event();
        assert_eq!(ce.owner(), Some("bob"));
        let mut unowned = node();
        unowned.owner = None;
        assert!(
            NodeEvent::created(&unowned)
                .to_cloud_event()
                .owner()
                .is_none()
        );
    }

    #[test]
    fn rejects_malformed_payloads() {
        for bad in [
            json!({"op": "deleted"}),
            json!([]),
            json!({"op": "created", "id": 1}),
        ] {
            assert_eq!(
                NodeEvent::from_value(&bad).unwrap_err().kind(),
                crate::ErrorKind::Invalid
            );
        }
    }
}
