//! `ShellRuntime` with real processes: generate from a template, submit, log capture, exit
//! codes, a hanging job killed at its timeout (with its children), cancel leaving nothing
//! running, and the registry building it from a runtime YAML entry.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kernelci::models::{ErrorCode, Node, NodeKind, ObjectId};
use kernelci::runtime::{
    JobHandle, JobSpec, JobStatus, Runtime, RuntimeContext, RuntimeCredentials, RuntimeEntry,
    RuntimeRegistry, ShellRuntime, TemplateEngine,
};
use serde_json::{Map, json};

fn spec(template: &str, params: serde_json::Value) -> JobSpec {
    let mut node = Node::new(NodeKind::Job, "sleepy");
    node.id = Some(ObjectId::new());
    JobSpec {
        node,
        name: "sleepy".into(),
        template: template.into(),
        kind: "job".into(),
        image: None,
        params: params.as_object().cloned().unwrap_or_default(),
        platform: "shell".into(),
        platform_config: Map::new(),
        storage_config_name: None,
        storage_config: None,
        api_config: json!({"url": "http://127.0.0.1:1"})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

fn runtime(dir: &Path) -> ShellRuntime {
    std::fs::write(
        dir.join("script.jinja2"),
        "#!/bin/sh\n# job {{ name }} on {{ node.id }}\n{{ script }}\n",
    )
    .unwrap();
    ShellRuntime::new(
        "local-shell",
        Arc::new(TemplateEngine::new(vec![dir.to_path_buf()])),
        dir.join("out"),
    )
}

async fn start(rt: &ShellRuntime, script: &str) -> JobHandle {
    let job = spec("script.jinja2", json!({"script": script}));
    let params = rt.params(&job).unwrap();
    let def = rt.generate(&job, &params).unwrap();
    rt.submit(&def)
        .await
        .unwrap()
        .expect("a shell job has an id")
}

/// Whether a pid is alive (a zombie waiting for a reaper counts as dead).
/// Whether `pid` is gone within a few seconds (SIGKILL delivery is asynchronous: on a loaded
/// machine the process can still be listed right after the kill).
fn gone_soon(pid: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("X");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

fn pids_in(path: &Path) -> Vec<u32> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        if pids.len() >= 2 || Instant::now() > deadline {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_job_runs_with_its_log_and_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let h = start(&rt, "echo hello from $KCI_JOB_DIR; echo oops >&2; exit 3").await;
    let status = rt.wait(&h, Duration::from_secs(30)).await.unwrap();
    assert_eq!(status, JobStatus::Finished { exit_code: 3 });
    assert_eq!(rt.status(&h).await.unwrap(), status);
    let workdir = rt.workdir(&h).unwrap();
    assert!(workdir.starts_with(dir.path().join("out")));
    let log = rt.log(&h).unwrap();
    assert!(log.contains("hello from"), "{log}");
    assert!(log.contains(&workdir.display().to_string()), "{log}");
    assert!(log.contains("oops"), "{log}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(workdir.join("sleepy"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o775);
    // Canceling a finished job is fine.
    rt.cancel(&h).await.unwrap();
    assert_eq!(rt.status(&h).await.unwrap(), status);
}

#[tokio::test]
async fn a_hanging_job_is_killed_at_its_timeout_with_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let pids = dir.path().join("pids");
    let h = start(
        &rt,
        &format!(
            "sleep 300 & echo $! >> {p}; echo $$ >> {p}; wait",
            p = pids.display()
        ),
    )
    .await;
    let pids = pids_in(&pids);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(pids.iter().all(|p| alive(*p)));
    let started = Instant::now();
    let status = rt.wait(&h, Duration::from_secs(1)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    match &status {
        JobStatus::Incomplete {
            error_code,
            message,
        } => {
            assert_eq!(*error_code, ErrorCode::NodeTimeout);
            assert!(message.contains("timeout"), "{message}");
        }
        other => panic!("expected incomplete, got {other:?}"),
    }
    for pid in pids {
        assert!(gone_soon(pid), "process {pid} survived the timeout");
    }
    assert_eq!(rt.status(&h).await.unwrap(), status);
}

#[tokio::test]
async fn cancel_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    let pids = dir.path().join("pids");
    // The script ignores SIGTERM, so cancel has to escalate to SIGKILL.
    let h = start(
        &rt,
        &format!(
            "trap '' TERM; sleep 300 & echo $! >> {p}; echo $$ >> {p}; while :; do sleep 1; done",
            p = pids.display()
        ),
    )
    .await;
    let pids = pids_in(&pids);
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_eq!(rt.status(&h).await.unwrap(), JobStatus::Running);
    rt.cancel(&h).await.unwrap();
    assert_eq!(rt.status(&h).await.unwrap(), JobStatus::Canceled);
    for pid in pids {
        assert!(gone_soon(pid), "process {pid} survived cancel");
    }
    // Unknown ids are not found.
    let unknown = JobHandle {
        id: "not-a-pid".into(),
        context: None,
    };
    assert!(rt.status(&unknown).await.is_err());
}

#[tokio::test]
async fn empty_renderings_and_template_errors_are_generation_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(dir.path());
    std::fs::write(
        dir.path().join("empty.jinja2"),
        "{% if false %}x{% endif %}\n",
    )
    .unwrap();
    let job = spec("empty.jinja2", json!({}));
    let err = rt.generate(&job, &rt.params(&job).unwrap()).unwrap_err();
    assert_eq!(err.error_code(), ErrorCode::JobGenerationError);
    let job = spec("missing.jinja2", json!({}));
    let err = rt.generate(&job, &rt.params(&job).unwrap()).unwrap_err();
    assert!(err.message.contains("missing.jinja2"), "{}", err.message);
}

#[tokio::test]
async fn the_registry_builds_a_shell_runtime_rendering_the_shipped_templates() {
    let dir = tempfile::tempdir().unwrap();
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/runtime");
    let ctx = RuntimeContext::new(dir.path())
        .with_templates(TemplateEngine::new(vec![templates]))
        .with_job_env("KCI_BIN", "/bin/echo");
    let yaml = json!({"lab_type": "shell", "rules": {"tree": ["!android"]}});
    let entry = RuntimeEntry::from_value("shell", &yaml).unwrap();
    let rt = RuntimeRegistry::new()
        .build(&entry, &RuntimeCredentials::default(), &ctx)
        .unwrap();
    assert_eq!((rt.name(), rt.lab_type()), ("shell", "shell"));

    // The test template refuses a job without a command, naming the job.
    let job = spec("ktap-test.jinja2", json!({}));
    let err = rt.generate(&job, &rt.params(&job).unwrap()).unwrap_err();
    assert!(err.message.contains("sleepy"), "{}", err.message);

    // With KCI_BIN=/bin/echo the script prints the job runner command line it would run.
    let job = spec(
        "ktap-test.jinja2",
        json!({"command": "echo 'ok 1 x'\nrm -rf /"}),
    );
    let def = rt.generate(&job, &rt.params(&job).unwrap()).unwrap();
    assert!(def.content.starts_with("#!/bin/sh\n"), "{}", def.content);
    assert!(
        !def.content.contains("\nrm -rf /"),
        "the command must not leak into the script: {}",
        def.content
    );
    let h = rt.submit(&def).await.unwrap().unwrap();
    let status = rt.wait(&h, Duration::from_secs(30)).await.unwrap();
    assert_eq!(status, JobStatus::Finished { exit_code: 0 });
    let node_id = job.node.id.unwrap().to_hex();
    let jobs: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(jobs.len(), 1);
    let log = std::fs::read_to_string(jobs[0].join("job.log")).unwrap();
    assert!(
        log.contains(&format!(
            "job run --node-id {node_id} --api http://127.0.0.1:1"
        )),
        "{log}"
    );
    let params: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jobs[0].join("params.json")).unwrap())
            .unwrap();
    assert_eq!(params["command"], "echo 'ok 1 x'\nrm -rf /");
    assert_eq!(params["node"]["id"], node_id);
}
