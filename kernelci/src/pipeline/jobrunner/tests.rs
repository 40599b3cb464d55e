use super::steps::kernel_image;
use super::*;

#[test]
fn hierarchy_inherits_data_and_nests_paths() {
    let mut root = Node::new(NodeKind::Job, "kunit-x86");
    root.id = Some(ObjectId::new());
    root.path = vec!["checkout".into(), "kbuild".into(), "kunit-x86".into()];
    root.data = json!({"arch": "x86_64", "kernel_revision": {"tree": "t"}, "runtime": "shell", "error_code": "node_timeout", "error_msg": "late"})
            .as_object()
            .cloned();
    let report = ktap::parse("1..1\n    1..2\n    ok 1 a\n    not ok 2 b # SKIP why\nok 1 suite\n");
    let outcome = StepOutcome {
        result: report.result(),
        tests: report.tests,
        ..StepOutcome::default()
    };
    let h = build_hierarchy(&root, &outcome);
    assert_eq!(h.node.result, Some(ResultValue::Pass));
    assert_eq!(h.node.state, State::Done);
    assert_eq!(h.node.data_str("error_code"), None, "node_timeout cleared");
    let suite = &h.child_nodes[0];
    assert_eq!(suite.node.path.last().map(String::as_str), Some("suite"));
    let b = &suite.child_nodes[1].node;
    assert_eq!(b.path, ["checkout", "kbuild", "kunit-x86", "suite", "b"]);
    assert_eq!(b.group.as_deref(), Some("kunit-x86"));
    assert_eq!(b.result, Some(ResultValue::Skip));
    assert_eq!(b.data_str("arch"), Some("x86_64"));
    assert_eq!(b.data_str("kernel_revision.tree"), Some("t"));
    assert_eq!(b.data_str("error_msg"), Some("why"));
    assert_eq!(b.kind, "test");
}

#[test]
fn quoting_and_kernel_images() {
    assert_eq!(shell_quote("ARCH=x86"), "ARCH=x86");
    assert_eq!(shell_quote("a b'c"), "'a b'\\''c'");
    let dir = tempfile::tempdir().expect("tmp");
    let boot = dir.path().join("arch/x86/boot");
    std::fs::create_dir_all(&boot).expect("mkdir");
    assert!(kernel_image(dir.path(), Some("x86"), None).is_none());
    std::fs::write(boot.join("bzImage"), b"k").expect("write");
    let (_, name) = kernel_image(dir.path(), Some("x86"), None).expect("image");
    assert_eq!(name, "bzImage");
}
