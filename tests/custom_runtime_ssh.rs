//! The example custom runtime (`examples/custom_runtime.rs`, lab_type `ssh-host`) against a
//! real OpenSSH `sshd` on a loopback port: a job runs remotely and reports its exit code, a
//! hanging job is killed at its timeout, an unreachable host is `Unavailable`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "../examples/custom_runtime.rs"]
mod example;

use std::time::Duration;

use kernelci::models::{ErrorCode, Node, NodeKind, ObjectId};
use kernelci::runtime::{
    JobSpec, JobStatus, RuntimeContext, RuntimeCredentials, RuntimeEntry, RuntimeErrorKind,
    RuntimeRegistry, TemplateEngine,
};
use kernelci::testsuite::sshd::start_sshd;
use serde_json::{Map, json};

fn spec(script: &str) -> JobSpec {
    let mut node = Node::new(NodeKind::Job, "remote");
    node.id = Some(ObjectId::new());
    JobSpec {
        node,
        name: "remote".into(),
        template: "job.jinja2".into(),
        kind: "job".into(),
        image: None,
        params: json!({"script": script}).as_object().cloned().unwrap(),
        platform: "build-box".into(),
        platform_config: Map::new(),
        storage_config_name: None,
        storage_config: None,
        api_config: Map::new(),
    }
}

#[tokio::test]
async fn the_ssh_example_runtime_runs_jobs_on_a_real_sshd() {
    let Some(sshd) = start_sshd() else { return };
    let templates = tempfile::tempdir().unwrap();
    std::fs::write(
        templates.path().join("job.jinja2"),
        "#!/bin/sh\n{{ script }}\n",
    )
    .unwrap();
    let ctx = RuntimeContext::new(templates.path().join("out"))
        .with_templates(TemplateEngine::new(vec![templates.path().to_path_buf()]));
    let mut registry = RuntimeRegistry::new();
    registry.register("ssh-host", example::SshRuntime::factory);
    let entry = |port: u16| {
        RuntimeEntry::from_value(
            "build-box",
            &json!({"lab_type": "ssh-host", "host": "127.0.0.1", "port": port,
                "user": sshd.user, "identity": sshd.client_key.display().to_string(),
                "known_hosts": sshd.known_hosts.display().to_string(),
                "remote_dir": sshd.data_dir.display().to_string()}),
        )
        .unwrap()
    };
    let rt = registry
        .build(&entry(sshd.port()), &RuntimeCredentials::default(), &ctx)
        .unwrap();
    assert_eq!(rt.lab_type(), "ssh-host");

    // A job that prints KTAP and exits 3.
    let job = spec("echo 'ok 1 remote'; exit 3");
    let def = rt.generate(&job, &rt.params(&job).unwrap()).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    assert_eq!(handle.context.as_deref(), Some("127.0.0.1"));
    let status = rt.wait(&handle, Duration::from_secs(60)).await.unwrap();
    let (dir, _) = handle.id.rsplit_once(':').unwrap();
    assert_eq!(status, JobStatus::Finished { exit_code: 3 });
    let log = std::fs::read_to_string(format!("{dir}/job.log")).unwrap();
    assert_eq!(log, "ok 1 remote\n");

    // A hanging job is killed at its timeout.
    let job = spec("sleep 300");
    let def = rt.generate(&job, &rt.params(&job).unwrap()).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    let pid: u32 = handle.id.rsplit_once(':').unwrap().1.parse().unwrap();
    let status = rt.wait(&handle, Duration::from_secs(1)).await.unwrap();
    assert!(matches!(
        status,
        JobStatus::Incomplete {
            error_code: ErrorCode::NodeTimeout,
            ..
        }
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
    {
        assert!(std::time::Instant::now() < deadline, "job {pid} survived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An unreachable host: the runtime is down.
    let down = registry
        .build(
            &entry(kernelci::testsuite::peers::free_port()),
            &RuntimeCredentials::default(),
            &ctx,
        )
        .unwrap();
    let err = down.submit(&def).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable, "{}", err.message);
}
