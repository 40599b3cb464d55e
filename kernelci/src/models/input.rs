//! Request bodies checked against upstream's `Node` and `NodePatchRequest` models before they
//! are decoded: the stage where upstream (FastAPI) answers 422 with pydantic's error list.
//!
//! [`check_node_input`] and [`check_patch_input`] report every problem with pydantic's type
//! names, messages, locations and inputs, and apply pydantic's lax conversions in place; a body
//! they accept decodes into [`Node`] / [`NodePatch`].

use serde_json::{Value, json};

use super::shape::{self, Field, Shape};
use super::validate::{ModelError, ValidationErrors};
use super::{Node, NodePatch, ResultValue, State};

const STATE: Shape = Shape::Enum(&State::NAMES);
const RESULT: Shape = Shape::Enum(&ResultValue::NAMES);

/// Upstream's `Node` model, in its field order (`id`/`_id` are checked apart).
const NODE_MODEL: &[Field] = &[
    Field::non_null("kind", Shape::Str),
    Field::required("name", Shape::Str),
    Field::required("path", Shape::StrList),
    Field::opt("group", Shape::Str),
    Field::opt("parent", Shape::Oid),
    Field::non_null("state", STATE),
    Field::opt("result", RESULT),
    Field::opt("artifacts", Shape::HttpUrlMap),
    Field::opt("data", Shape::Dict),
    Field::opt("debug", Shape::Dict),
    Field::opt("jobfilter", Shape::StrList),
    Field::opt("platform_filter", Shape::StrList),
    Field::non_null("created", Shape::Datetime),
    Field::non_null("updated", Shape::Datetime),
    Field::non_null("timeout", Shape::Datetime),
    Field::opt("holdoff", Shape::Datetime),
    Field::opt("owner", Shape::Str),
    Field::opt("submitter", Shape::Str),
    Field::opt("treeid", Shape::Str),
    Field::non_null("user_groups", Shape::StrList),
    Field::non_null("processed_by_kcidb_bridge", Shape::Bool),
    Field::non_null("retry_counter", Shape::Int),
];

/// Upstream's `NodePatchRequest`: every field optional; unknown keys ignored.
const PATCH_MODEL: &[Field] = &[
    Field::opt("state", STATE),
    Field::opt("result", RESULT),
    Field::opt("artifacts", Shape::StrMap),
    Field::opt("data", Shape::Dict),
    Field::opt("debug", Shape::Dict),
    Field::opt("jobfilter", Shape::StrList),
    Field::opt("platform_filter", Shape::StrList),
    Field::opt("timeout", Shape::Datetime),
    Field::opt("holdoff", Shape::Datetime),
    Field::opt("processed_by_kcidb_bridge", Shape::Bool),
];

/// The text of upstream's `user_groups` validator.
pub const UNIQUE_GROUPS: &str = "Groups must have unique names.";

/// Records upstream's error for a `user_groups` list that names a group twice.
pub fn check_unique_groups(groups: &[String], errors: &mut ValidationErrors) {
    let mut seen = std::collections::BTreeSet::new();
    if groups.iter().all(|g| seen.insert(g)) {
        return;
    }
    errors.add_ctx(
        vec![Value::from("user_groups")],
        "value_error",
        format!("Value error, {UNIQUE_GROUPS}"),
        &json!(groups),
        json!({ "error": UNIQUE_GROUPS }),
    );
}

/// A body that is not an object: `null` is a missing body, anything else pydantic's
/// `model_type` for `class_name`.
fn not_an_object(class_name: &str, value: &Value, errors: &mut ValidationErrors) {
    if value.is_null() {
        errors.add(Vec::new(), "missing", "Field required", value);
    } else {
        errors.add_ctx(
            Vec::new(),
            "model_type",
            format!("Input should be a valid dictionary or instance of {class_name}"),
            value,
            json!({ "class_name": class_name }),
        );
    }
}

/// Checks a `Node` body; locations are relative to the node (the caller puts `body` in
/// front). On success `value` decodes into a [`Node`].
pub fn check_node_input(value: &mut Value) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    let Some(obj) = value.as_object_mut() else {
        not_an_object("Node", value, &mut errors);
        return errors;
    };
    for key in ["id", "_id"] {
        let id_field = [Field::opt(key, Shape::Oid)];
        shape::check_object(&id_field, &[], obj, &mut errors);
    }
    shape::check_object(NODE_MODEL, &[], obj, &mut errors);
    if let Some(Value::Array(items)) = obj.get("user_groups") {
        let groups: Option<Vec<String>> = items
            .iter()
            .map(|g| g.as_str().map(str::to_owned))
            .collect();
        if let Some(groups) = groups {
            check_unique_groups(&groups, &mut errors);
        }
    }
    errors
}

/// Checks a `PATCH /node/{id}` body, as [`check_node_input`] does for a node.
pub fn check_patch_input(value: &mut Value) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    match value.as_object_mut() {
        Some(obj) => shape::check_object(PATCH_MODEL, &[], obj, &mut errors),
        None => not_an_object("NodePatchRequest", value, &mut errors),
    }
    errors
}

/// A checked node body decoded; a decode failure (which the checks should have caught) is
/// reported without the decoder's words.
pub fn node_from_input(value: Value) -> Result<Node, ModelError> {
    Node::from_value(value).map_err(opaque_decode)
}

/// A checked patch body decoded, as [`node_from_input`].
pub fn patch_from_input(value: Value) -> Result<NodePatch, ModelError> {
    super::validate::decode_value(value).map_err(opaque_decode)
}

fn opaque_decode(e: ModelError) -> ModelError {
    match e {
        ModelError::Decode { path, .. } => {
            ModelError::invalid(path, "Value error, the input does not match the model")
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(body: Value) -> Vec<(String, String)> {
        let mut body = body;
        check_node_input(&mut body)
            .problems
            .into_iter()
            .map(|p| (p.path, p.kind))
            .collect()
    }

    #[test]
    fn node_body_problems_have_pydantic_types() {
        assert_eq!(
            kinds(json!({"name": "x"})),
            vec![("path".to_owned(), "missing".to_owned())]
        );
        assert_eq!(
            kinds(json!({"name": "x", "path": "a", "retry_counter": "1", "state": "bogus"})),
            vec![
                ("path".to_owned(), "list_type".to_owned()),
                ("state".to_owned(), "enum".to_owned()),
                ("retry_counter".to_owned(), "int_type".to_owned()),
            ]
        );
        assert_eq!(
            kinds(json!({"name": "x", "path": [], "user_groups": ["a", "a"]})),
            vec![("user_groups".to_owned(), "value_error".to_owned())]
        );
        assert_eq!(
            kinds(json!({"name": "x", "path": [], "_id": "zz", "artifacts": {"a.b": "ftp://x"}})),
            vec![
                ("_id".to_owned(), "value_error".to_owned()),
                ("artifacts.a.b".to_owned(), "url_scheme".to_owned()),
            ]
        );
        assert_eq!(
            kinds(json!([1])),
            vec![(String::new(), "model_type".to_owned())]
        );
    }

    #[test]
    fn accepted_bodies_decode() {
        let mut body = json!({"name": "x", "path": [], "kind": "test",
            "processed_by_kcidb_bridge": "yes", "artifacts": {"log": "https://x.org"}});
        assert!(check_node_input(&mut body).is_empty());
        let node = node_from_input(body).expect("decodes");
        assert!(node.processed_by_kcidb_bridge);
        assert_eq!(node.artifacts.unwrap()["log"], json!("https://x.org/"));
        let mut patch = json!({"state": "done", "name": 5});
        assert!(check_patch_input(&mut patch).is_empty());
        assert!(patch_from_input(patch).is_ok());
        let mut bad = json!({"jobfilter": "a", "artifacts": {"x": 1}});
        let errors = check_patch_input(&mut bad);
        assert_eq!(errors.problems.len(), 2);
    }
}
