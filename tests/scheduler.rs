//! The scheduler against a real API server (loopback) with a recording test runtime: a
//! checkout that becomes available creates exactly the expected job nodes, a redelivered event
//! (same process, or a restarted scheduler) creates no duplicates, a submit failure marks the
//! node done/incomplete with `submit_error`, and the durable listeners drive it end to end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernelci::client::ApiClient;
use kernelci::config::PipelineConfig;
use kernelci::models::{Node, NodeKind, ObjectId, ResultValue, State};
use kernelci::pipeline::scheduler::{Outcome, Scheduler, SchedulerOptions};
use kernelci::pipeline::service::ServiceContext;
use kernelci::runtime::{
    JobDefinition, JobHandle, JobParams, JobSpec, JobStatus, Runtime, RuntimeError,
    RuntimeErrorKind, async_trait,
};
use serde_json::{Map, Value, json};
use support::{ADMIN_PASSWORD, TestServer};

/// A runtime that renders a one-line script and records what it was asked to submit.
#[derive(Debug)]
struct TestRuntime {
    name: String,
    lab_type: String,
    fail_submit: bool,
    submitted: Mutex<Vec<(String, JobParams)>>,
    generated: Mutex<Vec<String>>,
}

impl TestRuntime {
    fn new(name: &str, lab_type: &str, fail_submit: bool) -> Arc<TestRuntime> {
        Arc::new(TestRuntime {
            name: name.into(),
            lab_type: lab_type.into(),
            fail_submit,
            submitted: Mutex::default(),
            generated: Mutex::default(),
        })
    }
}

#[async_trait]
impl Runtime for TestRuntime {
    fn name(&self) -> &str {
        &self.name
    }
    fn lab_type(&self) -> &str {
        &self.lab_type
    }
    fn generate(&self, job: &JobSpec, params: &JobParams) -> Result<JobDefinition, RuntimeError> {
        self.generated.lock().unwrap().push(job.name.clone());
        Ok(JobDefinition {
            file_name: format!("{}.sh", job.name),
            content: format!(
                "#!/bin/sh\n# node {}\necho {}\n",
                job.node.id.map(|i| i.to_string()).unwrap_or_default(),
                serde_json::to_string(params).unwrap()
            ),
            metadata: json!({}),
        })
    }
    async fn submit(&self, d: &JobDefinition) -> Result<Option<JobHandle>, RuntimeError> {
        if self.fail_submit {
            return Err(RuntimeError::new(
                RuntimeErrorKind::Unavailable,
                "the lab is down",
            ));
        }
        let params: JobParams = d
            .content
            .lines()
            .nth(2)
            .and_then(|l| l.strip_prefix("echo "))
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or_default();
        let mut s = self.submitted.lock().unwrap();
        s.push((d.file_name.clone(), params));
        Ok(Some(JobHandle {
            id: format!("{}-{}", self.name, s.len()),
            context: (self.lab_type == "kubernetes").then(|| "aks-kbuild-medium-1".to_owned()),
        }))
    }
    async fn status(&self, _: &JobHandle) -> Result<JobStatus, RuntimeError> {
        Ok(JobStatus::Running)
    }
    async fn wait(&self, _: &JobHandle, _: Duration) -> Result<JobStatus, RuntimeError> {
        Ok(JobStatus::Finished { exit_code: 0 })
    }
    async fn cancel(&self, _: &JobHandle) -> Result<(), RuntimeError> {
        Ok(())
    }
}

fn fixture_config() -> Arc<PipelineConfig> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/upstream-like");
    Arc::new(PipelineConfig::load(&[dir]).unwrap_or_else(|e| panic!("{e}")))
}

/// A server over a database in `dir`, and an admin client of it.
async fn start(dir: &Path) -> (TestServer, ApiClient) {
    let server =
        TestServer::start(&dir.join("db.sqlite3"), "127.0.0.1:0".parse().unwrap(), 1).await;
    let api = admin(&server).await;
    (server, api)
}

async fn admin(server: &TestServer) -> ApiClient {
    let api = ApiClient::new(&server.url())
        .unwrap()
        .with_retries(3, Duration::from_millis(50));
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    api.with_token(token)
}

fn checkout(tree: &str, branch: &str) -> Node {
    let mut n = Node::new(NodeKind::Checkout, "checkout");
    n.data = json!({"kernel_revision": {
        "tree": tree, "branch": branch, "url": "https://git.example.org/linux.git",
        "commit": "0123456789abcdef0123456789abcdef01234567", "describe": "v6.8-rc1",
        "version": {"version": 6, "patchlevel": 8, "sublevel": 0, "extra": "-rc1"},
        "commit_message": "fix {all} the things"}})
    .as_object()
    .cloned();
    n.artifacts = json!({"tarball": "http://storage.example.org/linux.tar.gz"})
        .as_object()
        .cloned();
    n
}

fn available_event(node: &Node) -> Map<String, Value> {
    json!({"op": "updated", "id": node.id.unwrap().to_string(), "kind": "checkout",
        "name": "checkout", "path": ["checkout"], "state": "available", "result": "pass",
        "previous_state": "running", "previous_result": null})
    .as_object()
    .cloned()
    .unwrap()
}

async fn children(api: &ApiClient, parent: ObjectId) -> Vec<Node> {
    let id = parent.to_string();
    let mut v = api
        .find_all_nodes(&[("parent", id.as_str())])
        .await
        .unwrap();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

struct Setup {
    k8s: Arc<TestRuntime>,
    docker: Arc<TestRuntime>,
    shell: Arc<TestRuntime>,
}

fn runtimes(docker_fails: bool) -> (Setup, Vec<Arc<dyn Runtime>>) {
    let s = Setup {
        k8s: TestRuntime::new("k8s-all", "kubernetes", false),
        docker: TestRuntime::new("docker", "docker", docker_fails),
        shell: TestRuntime::new("shell", "shell", false),
    };
    let list: Vec<Arc<dyn Runtime>> = vec![s.k8s.clone(), s.docker.clone(), s.shell.clone()];
    (s, list)
}

fn options(output: &Path) -> SchedulerOptions {
    SchedulerOptions {
        output: Some(output.to_path_buf()),
        image_prefix: "kernelci/".into(),
        storage_config: Some("docker-host".into()),
        api_config: Some("docker-host".into()),
        ..SchedulerOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_available_creates_the_expected_jobs_once() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = start(dir.path()).await;
    let config = fixture_config();
    let (rt, list) = runtimes(true);
    let sched = Scheduler::new(
        config.clone(),
        api.clone(),
        list.clone(),
        options(dir.path()),
    )
    .unwrap();

    let mut co = checkout("mainline", "master");
    co.state = State::Available;
    let co = api.create_node(&co).await.unwrap();
    let event = available_event(&co);

    let results = sched.handle_event(&event, "node").await.unwrap();
    let mut summary: Vec<(String, String, String, String)> = results
        .iter()
        .map(|s| {
            let o = match &s.outcome {
                Outcome::Submitted { .. } => "submitted".to_owned(),
                Outcome::Failed { error_code, .. } => format!("failed:{error_code:?}"),
                Outcome::Skipped(why) => format!("skipped:{why}"),
            };
            (s.job.clone(), s.runtime.clone(), s.platform.clone(), o)
        })
        .collect();
    summary.sort();
    assert_eq!(
        summary,
        [
            ("kbuild-gcc-14-arm64", "k8s-all", "kubernetes", "submitted"),
            (
                "kbuild-gcc-14-arm64-dtbscheck",
                "k8s-all",
                "kubernetes",
                "skipped:entry rules"
            ),
            ("kbuild-gcc-14-x86", "k8s-all", "kubernetes", "submitted"),
            (
                "kbuild-gcc-14-x86-kcidebug",
                "docker",
                "docker",
                "failed:SubmitError"
            ),
            ("kunit-x86_64", "shell", "shell", "submitted"),
        ]
        .map(|(a, b, c, d)| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned()))
    );

    let kids = children(&api, co.id.unwrap()).await;
    let names: Vec<&str> = kids.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kbuild-gcc-14-arm64",
            "kbuild-gcc-14-x86",
            "kbuild-gcc-14-x86-kcidebug",
            "kunit-x86_64"
        ]
    );
    for n in &kids {
        let d = n.data.as_ref().unwrap();
        assert_eq!(n.parent, co.id);
        assert_eq!(n.path, ["checkout".to_owned(), n.name.clone()]);
        assert_eq!(d["kernel_revision"]["tree"], "mainline");
        assert_eq!(
            d["kernel_revision"]["commit_message"], "fix {all} the things",
            "commit messages are not formatted"
        );
        assert_eq!(
            d["tree_priority"], "high",
            "mainline's build config priority"
        );
        match n.name.as_str() {
            "kbuild-gcc-14-x86-kcidebug" => {
                assert_eq!(
                    (n.state, n.result),
                    (State::Done, Some(ResultValue::Incomplete))
                );
                assert_eq!(d["error_code"], "submit_error");
                assert_eq!(d["error_msg"], "the lab is down");
                assert_eq!(d["runtime"], "docker");
            }
            name => {
                assert_eq!(n.state, State::Running, "{name}");
                assert_eq!(n.result, None);
                assert!(
                    d["job_id"].as_str().is_some_and(|j| !j.is_empty()),
                    "{name}: {d:?}"
                );
                let kube = name.starts_with("kbuild");
                assert_eq!(d.get("job_context").is_some(), kube, "{name}");
                assert_eq!(n.kind, if kube { "kbuild" } else { "job" });
            }
        }
    }
    // The job saw its parent's artifacts, its formatted image and the fragment definitions.
    let subs = rt.k8s.submitted.lock().unwrap().clone();
    let (_, x86) = subs
        .iter()
        .find(|(f, _)| f == "kbuild-gcc-14-x86.sh")
        .expect("x86 submitted");
    assert_eq!(
        x86["node"]["artifacts"]["tarball"],
        "http://storage.example.org/linux.tar.gz"
    );
    assert_eq!(
        x86["runtime_image"],
        "ghcr.io/kernelci/kernelci/gcc-14:x86-kselftest-kernelci"
    );
    assert_eq!(
        x86["fragment_configs"]["kselftest"]["path"],
        "kernel/configs/kselftest.config"
    );
    assert_eq!(x86["storage_config"]["base_url"], "http://172.17.0.1:8002/");
    assert_eq!(rt.shell.submitted.lock().unwrap().len(), 1);
    assert_eq!(rt.docker.generated.lock().unwrap().len(), 1);
    // A copy of each definition is kept under output/<node id>/.
    let kunit = kids.iter().find(|n| n.name == "kunit-x86_64").unwrap();
    assert!(
        dir.path()
            .join(kunit.id.unwrap().to_string())
            .join("kunit-x86_64.sh")
            .is_file()
    );

    // Telemetry: three submissions and one runtime error (submit_error, an infra error).
    let t = api
        .find_telemetry(&[("kind", "job_submission")])
        .await
        .unwrap();
    assert_eq!(t.total, 3, "{:?}", t.items);
    let t = api
        .find_telemetry(&[("kind", "runtime_error")])
        .await
        .unwrap();
    assert_eq!(t.total, 1);
    assert_eq!(t.items[0]["error_type"], "submit_error");
    assert_eq!(t.items[0]["job_name"], "kbuild-gcc-14-x86-kcidebug");
    assert_eq!(t.items[0]["is_infra_error"], true);

    // Redelivery to the same scheduler: the duplicate guard.
    let again = sched.handle_event(&event, "node").await.unwrap();
    assert!(
        again
            .iter()
            .all(|s| matches!(s.outcome, Outcome::Skipped(_))),
        "{again:?}"
    );
    // Redelivery to a restarted scheduler (empty guard): the API check finds the children.
    let (rt2, list2) = runtimes(false);
    let restarted =
        Scheduler::new(config.clone(), api.clone(), list2, options(dir.path())).unwrap();
    let again = restarted.handle_event(&event, "node").await.unwrap();
    assert!(
        again
            .iter()
            .all(|s| matches!(s.outcome, Outcome::Skipped(_))),
        "{again:?}"
    );
    assert_eq!(
        children(&api, co.id.unwrap()).await.len(),
        4,
        "no duplicate job node"
    );
    assert!(rt2.k8s.submitted.lock().unwrap().is_empty());

    // No rising edge: available -> available matches nothing.
    let mut same = event.clone();
    same.insert("previous_state".into(), json!("available"));
    same.insert("previous_result".into(), json!("pass"));
    assert!(
        restarted
            .handle_event(&same, "node")
            .await
            .unwrap()
            .is_empty()
    );

    // A retry event for the failed job (retry_counter 1, jobfilter) re-creates only that job.
    let mut retry = event.clone();
    retry.remove("op");
    retry.insert("retry_counter".into(), json!(1));
    retry.insert("jobfilter".into(), json!(["kbuild-gcc-14-x86-kcidebug"]));
    let r = restarted.handle_event(&retry, "retry").await.unwrap();
    let created: Vec<&str> = r
        .iter()
        .filter(|s| !matches!(s.outcome, Outcome::Skipped(_)))
        .map(|s| s.job.as_str())
        .collect();
    assert_eq!(created, ["kbuild-gcc-14-x86-kcidebug"]);
    let kids = children(&api, co.id.unwrap()).await;
    assert_eq!(kids.len(), 5);
    let retried = kids.iter().find(|n| n.retry_counter == 1).unwrap();
    assert_eq!(retried.name, "kbuild-gcc-14-x86-kcidebug");
    assert_eq!(retried.state, State::Running);

    // Another tree: the kbuild rules (!android) keep every kbuild job away, kunit still runs.
    let mut android = checkout("android", "android-mainline");
    android.state = State::Available;
    let android = api.create_node(&android).await.unwrap();
    let r = restarted
        .handle_event(&available_event(&android), "node")
        .await
        .unwrap();
    let submitted: Vec<&str> = r
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Submitted { .. }))
        .map(|s| s.job.as_str())
        .collect();
    assert_eq!(submitted, ["kunit-x86_64"]);
    // kunit-x86_64 has `frequency: 12h`: not again on the same tree/branch.
    let mut android2 = checkout("android", "android-mainline");
    android2.state = State::Available;
    let android2 = api.create_node(&android2).await.unwrap();
    let r = restarted
        .handle_event(&available_event(&android2), "node")
        .await
        .unwrap();
    assert!(
        r.iter().any(|s| s.job == "kunit-x86_64"
            && s.outcome == Outcome::Skipped("ran within its frequency".into())),
        "{r:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_drive_the_scheduler_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = start(dir.path()).await;
    let (_rt, list) = runtimes(false);
    let sched =
        Arc::new(Scheduler::new(fixture_config(), api.clone(), list, options(dir.path())).unwrap());
    let ctx = ServiceContext::new("scheduler-test", api.clone());
    let health = ctx
        .serve_health_on("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let task = {
        let (sched, ctx) = (sched.clone(), ctx.clone());
        tokio::spawn(async move { sched.run(&ctx).await })
    };

    // The trigger creates a running checkout; the tarball step makes it available.
    let co = api
        .create_node(&checkout("mainline", "master"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut avail = co.clone();
    avail.state = State::Available;
    avail.result = Some(ResultValue::Pass);
    api.update_node(&avail, false).await.unwrap();

    let mut kids = Vec::new();
    for _ in 0..100 {
        kids = children(&api, co.id.unwrap()).await;
        if kids.len() >= 4
            && kids
                .iter()
                .all(|n| n.data.as_ref().unwrap().contains_key("job_id"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let names: Vec<&str> = kids.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "kbuild-gcc-14-arm64",
            "kbuild-gcc-14-x86",
            "kbuild-gcc-14-x86-kcidebug",
            "kunit-x86_64"
        ]
    );
    // The scheduler's own PUTs (running -> running) trigger nothing more.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(children(&api, co.id.unwrap()).await.len(), 4);

    // Liveness.
    let mut ok = false;
    for _ in 0..80 {
        if let Ok(r) = reqwest::get(format!("http://{health}/health")).await
            && r.status() == 200
            && r.text().await.unwrap() == "OK"
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "/health answered 200 OK");
    let r = reqwest::get(format!("http://{health}/other"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    ctx.shutdown().trigger();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops on shutdown")
        .unwrap()
        .unwrap();
    server.stop().await;
}

/// Upstream's own config uses `cip://` fragments and schedules jobs on labs a deployment may
/// not have: the whole config loads (with warnings), the CIP job is scheduled with its
/// fragment passed on for the job's kbuild to fetch, and the entries of undefined runtimes are
/// skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_constructs_load_and_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let (server, api) = start(dir.path()).await;
    let folder =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config/upstream-constructs");
    let config = Arc::new(PipelineConfig::load(&[folder]).unwrap_or_else(|e| panic!("{e}")));
    let warned: Vec<&str> = config
        .warnings()
        .iter()
        .map(|w| w.key.as_deref().unwrap())
        .collect();
    assert_eq!(
        warned,
        ["scheduler[2].runtime.name", "scheduler[3].runtime.type"]
    );
    let shell = TestRuntime::new("shell", "shell", false);
    let sched = Scheduler::new(
        config,
        api.clone(),
        vec![shell.clone() as Arc<dyn Runtime>],
        SchedulerOptions {
            output: Some(dir.path().to_path_buf()),
            ..SchedulerOptions::default()
        },
    )
    .unwrap();

    let mut co = checkout("cip", "linux-6.12.y-cip");
    co.state = State::Available;
    let co = api.create_node(&co).await.unwrap();
    let results = sched
        .handle_event(&available_event(&co), "node")
        .await
        .unwrap();
    let mut submitted: Vec<&str> = results
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Submitted { .. }))
        .map(|s| s.job.as_str())
        .collect();
    submitted.sort_unstable();
    assert_eq!(
        submitted,
        [
            "kbuild-gcc-14-arm64-612-cip",
            "kbuild-gcc-14-arm64-612-cip-plain"
        ],
        "{results:?}"
    );
    let subs = shell.submitted.lock().unwrap().clone();
    let (_, cip) = subs
        .iter()
        .find(|(f, _)| f == "kbuild-gcc-14-arm64-612-cip.sh")
        .expect("the CIP job was submitted");
    assert_eq!(
        cip["fragments"],
        json!([
            "kselftest",
            "lab-setup",
            "cip://6.12.y-cip/arm64/cip_merged_defconfig"
        ])
    );
    let defined: Vec<&String> = cip["fragment_configs"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(defined, ["kselftest", "lab-setup"]);

    // The kbuild finishes: its tests are for LAVA labs this deployment does not have.
    let mut kb = Node::new(NodeKind::Kbuild, "kbuild-gcc-14-arm64-612-cip");
    kb.parent = co.id;
    kb.state = State::Done;
    kb.result = Some(ResultValue::Pass);
    let kb = api.create_node(&kb).await.unwrap();
    let event = json!({"op": "updated", "id": kb.id.unwrap().to_string(), "kind": "kbuild",
        "name": "kbuild-gcc-14-arm64-612-cip", "path": ["checkout", "kbuild-gcc-14-arm64-612-cip"],
        "state": "done", "result": "pass", "previous_state": "running", "previous_result": null});
    let results = sched
        .handle_event(event.as_object().unwrap(), "node")
        .await
        .unwrap();
    assert!(results.is_empty(), "{results:?}");
    assert_eq!(children(&api, kb.id.unwrap()).await.len(), 0);
    server.stop().await;
}
