use super::*;

/// Real callbacks from a LAVA 2023.01 server (copied from `shared/fixtures/lava`).
fn fixture(name: &str) -> Option<Callback> {
    let bytes: &[u8] = match name {
        "callback-complete.json" => {
            include_bytes!("../../../tests/fixtures/lava/callback-complete.json")
        }
        "callback-incomplete.json" => {
            include_bytes!("../../../tests/fixtures/lava/callback-incomplete.json")
        }
        "callback-canceled.json" => {
            include_bytes!("../../../tests/fixtures/lava/callback-canceled.json")
        }
        _ => return None,
    };
    Some(Callback::parse(bytes).expect("fixture parses"))
}

fn job_node(name: &str) -> Node {
    let mut node = Node::new(NodeKind::Job, name);
    node.id = Some(ObjectId::new());
    node.path = vec!["checkout".into(), "kbuild-gcc-12-x86".into(), name.into()];
    let data = node.data.get_or_insert_with(Map::new);
    data.insert("platform".into(), json!("qemu"));
    data.insert("runtime".into(), json!("lava-local"));
    data.insert(
        "kernel_revision".into(),
        json!({"tree": "mainline", "branch": "master"}),
    );
    data.insert("job_id".into(), json!("7"));
    data.insert("error_code".into(), json!("node_timeout"));
    node
}

#[test]
fn complete_callback_gives_setup_and_smoke_nodes_and_fails_on_the_failed_case() {
    let cb = fixture("callback-complete.json").unwrap();
    assert_eq!(cb.job_status(), Some(ResultValue::Pass));
    assert_eq!(cb.device_id(), Some("qemu01"));
    assert_eq!(cb.meta_str("source"), Some("rust-lava-client-trial"));
    let tree = cb.results();
    let setup = tree.get("setup").expect("setup");
    assert_eq!(setup.get("login"), Some(&ResultTree::Case("pass".into())));
    assert_eq!(
        setup.get("kernelmsg"),
        Some(&ResultTree::Case("pass".into()))
    );
    let ResultTree::Group(smoke) = tree.get("smoke").expect("smoke") else {
        panic!("smoke is a group")
    };
    // Upstream walks the cases in reverse.
    let names: Vec<&str> = smoke.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "measured",
            "expected-fail",
            "proc-mounted",
            "kernel-is-linux"
        ]
    );

    let h = cb.hierarchy(job_node("baseline-x86"));
    // The smoke suite has a failed case, so the job fails (it is not setup).
    assert_eq!(h.node.result, Some(ResultValue::Fail));
    assert_eq!(h.node.state, State::Done);
    assert_eq!(h.node.data_str("device"), Some("qemu01"));
    // node_timeout is cleared once the job has a non-incomplete result.
    assert_eq!(h.node.data_path("error_code"), Some(&Value::Null));
    let names: Vec<&str> = h.child_nodes.iter().map(|c| c.node.name.as_str()).collect();
    assert_eq!(names, ["setup", "smoke"]);
    let setup = &h.child_nodes[0];
    assert_eq!(setup.node.kind, "job");
    assert_eq!(setup.node.result, Some(ResultValue::Pass));
    assert_eq!(setup.child_nodes.len(), 2);
    assert_eq!(setup.child_nodes[0].node.name, "login");
    assert_eq!(setup.child_nodes[0].node.kind, "test");
    assert_eq!(
        setup.child_nodes[0].node.path,
        [
            "checkout",
            "kbuild-gcc-12-x86",
            "baseline-x86",
            "setup",
            "login"
        ]
    );
    let smoke = &h.child_nodes[1];
    // LAVA's stage `0_smoke` says pass, but a case failed: the evaluation wins.
    assert_eq!(smoke.node.result, Some(ResultValue::Fail));
    let failed = smoke
        .child_nodes
        .iter()
        .find(|c| c.node.name == "expected-fail")
        .expect("expected-fail");
    assert_eq!(failed.node.result, Some(ResultValue::Fail));
    assert_eq!(failed.node.group.as_deref(), Some("baseline-x86"));
    assert_eq!(failed.node.data_str("platform"), Some("qemu"));
    assert_eq!(
        failed.node.data_str("kernel_revision.tree"),
        Some("mainline")
    );
    assert_eq!(
        failed.node.data_path("job_id"),
        None,
        "job_id is not inherited"
    );
    let log = cb.log_text().unwrap().expect("target lines");
    assert!(
        log.contains("Linux version"),
        "{}",
        &log[..200.min(log.len())]
    );
    assert!(!log.contains('\x1b'));
    assert!(cb.log_lines().unwrap().len() > 100);
}

#[test]
fn incomplete_callback_takes_the_error_from_the_job_stage() {
    let cb = fixture("callback-incomplete.json").unwrap();
    assert_eq!(cb.job_status(), Some(ResultValue::Incomplete));
    // No login or kernel-messages cases: no setup node at all.
    assert_eq!(cb.results(), ResultTree::Group(Vec::new()));
    let h = cb.hierarchy(job_node("baseline-x86"));
    assert_eq!(h.node.result, Some(ResultValue::Incomplete));
    assert_eq!(h.node.data_str("error_code"), Some("Job"));
    let msg = h.node.data_str("error_msg").expect("error_msg");
    assert!(
        msg.starts_with("Invalid job data: [\"Image file '/tmp/lava-ci/images/missing-vmlinuz'"),
        "{msg}"
    );
    assert!(h.child_nodes.is_empty());
    assert!(cb.has_log());
}

#[test]
fn canceled_callback_without_log_or_results_is_an_infrastructure_error() {
    let cb = fixture("callback-canceled.json").unwrap();
    assert_eq!(cb.status(), Some(status::CANCELED));
    assert!(!cb.has_log());
    assert_eq!(cb.log_text().unwrap(), None);
    let h = cb.hierarchy(job_node("kunit"));
    assert_eq!(h.node.result, Some(ResultValue::Incomplete));
    assert_eq!(h.node.data_str("error_code"), Some("Infrastructure"));
    assert_eq!(
        h.node.data_str("error_msg"),
        Some("Unknown infrastructure error")
    );
    assert!(h.child_nodes.is_empty());
    assert!(cb.body_without_token().get("token").is_none());
    assert!(cb.body().contains_key("token"));
}

fn synthetic(results: Value, status: i64) -> Callback {
    Callback::from_value(json!({
        "id": 9, "status": status, "log": "- {dt: x, lvl: target, msg: hi}\n",
        "definition": "metadata:\n  node_id: abc\n  api_config_name: local\n",
        "results": results,
    }))
    .unwrap()
}

#[test]
fn sets_group_cases_and_setup_failure_makes_a_pass_incomplete() {
    let lava = "- {name: login-action, result: fail, metadata: {}}\n\
                    - {name: auto-login-action, result: fail, metadata: {}}\n\
                    - {name: kernel-messages, result: pass, metadata: {}}\n\
                    - {name: job, result: pass, metadata: {}}\n";
    let suite = "- {name: a, result: pass, metadata: {set: s1}}\n\
                     - {name: b, result: skip, metadata: {set: s1}}\n\
                     - {name: os-release, result: unknown, metadata: {}}\n";
    let tast = "- {name: os-release, result: pass, measurement: '42.5', metadata: {}}\n";
    let cb = synthetic(
        json!({"lava": lava, "1_kselftest-foo": suite, "0_tast": tast}),
        2,
    );
    assert_eq!(cb.meta_str("api_config_name"), Some("local"));
    let out = cb.outcome("baseline-x86", Some(ResultValue::Pass));
    assert_eq!(out.result, Some(ResultValue::Incomplete));
    let names: Vec<&str> = out.children.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["setup", "kselftest-foo", "tast"]);
    assert_eq!(out.children[0].result, Some(ResultValue::Fail));
    let ks = &out.children[1];
    let s1 = ks.child("s1").expect("set s1");
    assert_eq!(s1.kind, NodeKind::Job);
    assert_eq!(s1.result, Some(ResultValue::Pass));
    assert_eq!(s1.children.len(), 2);
    let unknown = ks.child("os-release").expect("os-release");
    assert_eq!(unknown.result, None);
    assert_eq!(
        unknown.data.as_ref().unwrap()["misc"]["measurement"],
        json!(42.5)
    );
    // Incomplete baseline job with failed setup becomes fail.
    let out = cb.outcome("baseline-x86", Some(ResultValue::Incomplete));
    assert_eq!(out.result, Some(ResultValue::Fail));
    let out = cb.outcome("kunit", Some(ResultValue::Incomplete));
    assert_eq!(out.result, Some(ResultValue::Incomplete));
    assert_eq!(out.error_code, None, "the job case has no error_type");
}

#[test]
fn unknown_error_types_stay_valid_error_codes_and_bad_bodies_are_errors() {
    let lava = "- {name: job, result: fail, metadata: {error_type: Weird, error_msg: boom}}\n";
    let cb = synthetic(json!({ "lava": lava }), 3);
    let out = cb.outcome("x", cb.job_status());
    assert_eq!(out.error_code.as_deref(), Some("Infrastructure"));
    assert_eq!(out.error_msg.as_deref(), Some("Weird: boom"));
    assert!(matches!(
        Callback::parse(b"not json"),
        Err(CallbackError::Invalid(_))
    ));
    assert!(Callback::from_value(json!({"results": {"lava": "- [unclosed"}})).is_err());
    assert!(Callback::from_value(json!({"status": "two"})).is_err());
    assert!(Callback::from_value(json!([1])).is_err());
}
