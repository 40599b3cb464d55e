//! Node JSON compared field by field with upstream-shaped documents (api spec §4).

use kernelci::models::{ModelError, Node, NodeKind, ResultValue, State};
use serde_json::{Value, json};

const FIXTURES: &[(&str, &str)] = &[
    ("checkout", include_str!("fixtures/upstream-checkout.json")),
    ("test", include_str!("fixtures/upstream-test.json")),
    (
        "regression",
        include_str!("fixtures/upstream-regression.json"),
    ),
];

const UPSTREAM_KEYS: [&str; 23] = [
    "id",
    "kind",
    "name",
    "path",
    "group",
    "parent",
    "state",
    "result",
    "artifacts",
    "data",
    "debug",
    "jobfilter",
    "platform_filter",
    "created",
    "updated",
    "timeout",
    "holdoff",
    "owner",
    "submitter",
    "treeid",
    "user_groups",
    "processed_by_kcidb_bridge",
    "retry_counter",
];

#[test]
fn upstream_documents_round_trip_field_by_field() {
    for (name, text) in FIXTURES {
        let upstream: Value = serde_json::from_str(text).expect("fixture is JSON");
        let mut node = Node::from_json(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
        node.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = node.to_value();
        let obj = ours.as_object().expect("object");
        assert_eq!(
            obj.keys().map(String::as_str).collect::<Vec<_>>(),
            UPSTREAM_KEYS.to_vec(),
            "{name}: key order"
        );
        for key in UPSTREAM_KEYS {
            let want = upstream.get(key).or_else(|| {
                if key == "id" {
                    upstream.get("_id")
                } else {
                    None
                }
            });
            assert_eq!(obj.get(key), want, "{name}: field {key}");
        }
        // And the text itself re-encodes to the same value.
        let again: Node =
            serde_json::from_str(&serde_json::to_string(&node).expect("encode")).expect("decode");
        assert_eq!(again, node);
    }
}

#[test]
fn defaults_match_upstream() {
    let before = kernelci::models::Timestamp::now();
    let node = Node::from_json(br#"{"name": "x", "path": []}"#).expect("minimal node");
    assert_eq!(node.kind, "node");
    assert_eq!(node.state, State::Running);
    assert_eq!(node.result, None);
    assert_eq!(node.artifacts, Some(Default::default()));
    assert_eq!(node.data, Some(Default::default()));
    assert_eq!(node.platform_filter, Some(vec![]));
    assert_eq!(node.jobfilter, None);
    assert!(node.created >= before);
    let six_hours = node.timeout.micros() - node.created.micros();
    assert!(
        (6 * 3600 * 1_000_000 - 1_000_000..=6 * 3600 * 1_000_000 + 1_000_000).contains(&six_hours)
    );
    let v = node.to_value();
    assert_eq!(v.as_object().map(|o| o.len()), Some(23));
    assert_eq!(v["id"], Value::Null);
    assert_eq!(v["retry_counter"], 0);
    assert_eq!(v["processed_by_kcidb_bridge"], false);
    // The default kind is readable but not writable.
    let mut n = node.clone();
    assert_eq!(
        n.validate().unwrap_err().to_string(),
        "Unsupported node kind: node"
    );
}

#[test]
fn timestamps_with_offsets_are_normalised_to_naive_utc() {
    let node = Node::from_json(
        br#"{"kind": "test", "name": "x", "path": [], "created": "2025-01-01T02:00:00+02:00",
        "timeout": "2025-01-01T00:00:00Z"}"#,
    )
    .expect("decodes");
    assert_eq!(node.to_value()["created"], "2025-01-01T00:00:00");
    assert_eq!(node.to_value()["timeout"], "2025-01-01T00:00:00");
}

fn decode_err(body: Value) -> ModelError {
    Node::from_json(body.to_string().as_bytes()).expect_err("must fail")
}

#[test]
fn bad_input_names_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"name": "x"}), "path"),
        (
            json!({"name": "x", "path": [], "retry_counter": "1"}),
            "retry_counter",
        ),
        (
            json!({"name": "x", "path": [], "retry_counter": 1.5}),
            "retry_counter",
        ),
        (
            json!({"name": "x", "path": [], "state": "finished"}),
            "state",
        ),
        (json!({"name": "x", "path": [], "result": "ok"}), "result"),
        (json!({"name": "x", "path": [], "parent": "zz"}), "parent"),
        (json!({"name": "x", "path": [], "id": 12}), "id"),
        (
            json!({"name": "x", "path": [], "created": "yesterday"}),
            "created",
        ),
        (json!({"name": "x", "path": [1]}), "path.0"),
        (
            json!({"name": "x", "path": [], "user_groups": "g"}),
            "user_groups",
        ),
    ];
    for (body, field) in cases {
        match decode_err(body.clone()) {
            ModelError::Decode {
                path,
                syntax: false,
                ..
            } => assert_eq!(path, field, "{body}"),
            other => panic!("{body}: unexpected {other:?}"),
        }
    }
    assert!(matches!(
        Node::from_json(b"{\"name\": "),
        Err(ModelError::Decode { syntax: true, .. })
    ));
    assert!(matches!(
        Node::from_json(b"[]"),
        Err(ModelError::Decode { .. })
    ));
}

#[test]
fn validation_reports_every_problem() {
    let mut node = Node::from_json(
        json!({"kind": "kbuild", "name": "k", "path": [], "user_groups": ["a", "a"],
               "artifacts": {"log": "ftp://x/log", "ok": "https://x.org"},
               "data": {"arch": 5, "error_code": "oops", "kernel_revision": {"tree": "t"}, "regression": "zz"}})
        .to_string()
        .as_bytes(),
    )
    .expect("decodes");
    let err = node.validate().expect_err("invalid");
    let paths: Vec<String> = err.problems().into_iter().map(|p| p.path).collect();
    for want in [
        "user_groups",
        "artifacts.log",
        "data.arch",
        "data.error_code",
        "data.kernel_revision.url",
        "data.kernel_revision.branch",
        "data.kernel_revision.commit",
        "data.regression",
    ] {
        assert!(
            paths.iter().any(|p| p == want),
            "missing {want} in {paths:?}"
        );
    }
    assert_eq!(paths.len(), 8, "{paths:?}");
    assert!(err.to_string().starts_with("8 validation errors"));
}

#[test]
fn version_strings_become_integers() {
    let mut node = Node::new(NodeKind::Checkout, "checkout");
    node.data =
        json!({"kernel_revision": {"tree": "t", "url": "u://x", "branch": "b", "commit": "c",
        "version": {"version": "6", "patchlevel": "8", "sublevel": " 1 ", "extra": "-rc1"}}})
        .as_object()
        .cloned();
    node.coerce_version_numbers();
    node.validate().expect("valid after coercion");
    assert_eq!(
        node.data_path("kernel_revision.version.patchlevel"),
        Some(&json!(8))
    );
    assert_eq!(node.data_str("kernel_revision.version.extra"), Some("-rc1"));
    assert_eq!(ResultValue::Incomplete.to_string(), "incomplete");
}
