//! The result hierarchy a job submits: the job node and one child per parsed test.

use super::*;
/// Upstream's `submit_results`: the job node with the outcome merged in, and one child node
/// per parsed test (recursively), each inheriting [`INHERITED_DATA`] from the root, with
/// `group` = the root's name, `path` = the parent's path + its name, state `done`.
pub fn build_hierarchy(root: &Node, outcome: &StepOutcome) -> Hierarchy {
    let mut node = root.clone();
    node.result = outcome.result;
    node.state = outcome.state.unwrap_or(State::Done);
    node.processed_by_kcidb_bridge = false;
    if outcome.holdoff.is_some() {
        node.holdoff = outcome.holdoff;
    }
    let artifacts = node.artifacts.get_or_insert_with(Map::new);
    artifacts.extend(outcome.artifacts.clone());
    let data = node.data.get_or_insert_with(Map::new);
    data.extend(outcome.data.clone());
    match outcome.error_code {
        Some(code) => {
            data.insert("error_code".into(), json!(code.as_str()));
            data.insert("error_msg".into(), json!(outcome.error_msg));
        }
        None => {
            if data.get("error_code").and_then(Value::as_str) == Some("node_timeout")
                && node.result != Some(ResultValue::Incomplete)
            {
                data.insert("error_code".into(), Value::Null);
                data.insert("error_msg".into(), Value::Null);
            }
            if let Some(msg) = &outcome.error_msg {
                data.insert("error_msg".into(), json!(msg));
            }
        }
    }
    let inherited: Map<String, Value> = INHERITED_DATA
        .iter()
        .filter_map(|k| data.get(*k).map(|v| ((*k).to_owned(), v.clone())))
        .filter(|(_, v)| !v.is_null())
        .collect();
    let children = outcome
        .tests
        .iter()
        .map(|t| test_hierarchy(t, &node.path, &node.name, &inherited))
        .collect();
    Hierarchy {
        node,
        child_nodes: children,
    }
}

fn test_hierarchy(
    test: &TestCase,
    parent_path: &[String],
    group: &str,
    inherited: &Map<String, Value>,
) -> Hierarchy {
    let name = if test.name.trim().is_empty() {
        test.number
            .map_or_else(|| "test".to_owned(), |n| n.to_string())
    } else {
        test.name.trim().to_owned()
    };
    let mut node = Node::new(NodeKind::Test, name.clone());
    node.path = parent_path.to_vec();
    node.path.push(name);
    node.group = Some(group.to_owned());
    node.state = State::Done;
    node.result = Some(test.result);
    let mut data = inherited.clone();
    if let Some(reason) = &test.reason
        && test.result != ResultValue::Pass
    {
        data.insert("error_msg".into(), json!(reason));
    }
    if !test.diagnostics.is_empty() || test.missing > 0 {
        let mut misc = Map::new();
        if !test.diagnostics.is_empty() {
            misc.insert("diagnostics".into(), json!(test.diagnostics));
        }
        if test.missing > 0 {
            misc.insert("missing_subtests".into(), json!(test.missing));
        }
        data.insert("misc".into(), Value::Object(misc));
    }
    node.data = Some(data);
    let children = test
        .children
        .iter()
        .map(|c| test_hierarchy(c, &node.path, group, inherited))
        .collect();
    Hierarchy {
        node,
        child_nodes: children,
    }
}
