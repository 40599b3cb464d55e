//! The Kubernetes runtime against a scripted Kubernetes API server.
//!
//! No Kubernetes cluster can run where this project is developed (no kube-apiserver, k3s or
//! kind in the registries), so these tests start small HTTP servers (warp, plain HTTP, named
//! in a generated kubeconfig) that answer the routes the runtime uses the way the API server
//! does: list Pods (by field and label selector), create / get / delete `batch/v1` Jobs, and
//! read a Pod's log. Real clusters were not used.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernelci::models::{ErrorCode, Node, NodeKind, ObjectId};
use kernelci::runtime::kubernetes::{KubernetesConfig, KubernetesRuntime, UNREACHABLE_PENDING};
use kernelci::runtime::{
    JobSpec, JobStatus, Runtime, RuntimeContext, RuntimeCredentials, RuntimeEntry,
    RuntimeErrorKind, RuntimeRegistry, TemplateEngine,
};
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

/// What one scripted cluster saw.
#[derive(Default)]
struct Cluster {
    pending: usize,
    jobs: BTreeMap<String, (Value, u32)>,
    deleted: Vec<(String, Value)>,
    auth: Vec<String>,
    created: Vec<Value>,
}

fn reply(status: StatusCode, v: &Value) -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(v.to_string().into());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn not_found(name: &str) -> warp::reply::Response {
    reply(
        StatusCode::NOT_FOUND,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("jobs.batch \"{name}\" not found"), "reason": "NotFound",
                "code": 404}),
    )
}

/// How a scripted Job evolves: names containing `fail` fail with exit code 2, `hang` never
/// ends, others complete at the third poll.
fn job_state(name: &str, polls: u32) -> (Value, &'static str, Option<i32>) {
    if name.contains("-fail-") {
        if polls >= 2 {
            return (
                json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}),
                "Failed",
                Some(2),
            );
        }
        return (json!({"active": 1}), "Running", None);
    }
    if name.contains("-hang-") {
        return (json!({"active": 1}), "Running", None);
    }
    match polls {
        0 | 1 => (json!({"active": 1}), "Pending", None),
        2 => (json!({"active": 1}), "Running", None),
        _ => (
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
            "Succeeded",
            Some(0),
        ),
    }
}

fn pod_of(name: &str, polls: u32) -> Value {
    let (_, phase, code) = job_state(name, polls);
    let mut pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{name}-pod1"), "namespace": "default",
                     "labels": {"job-name": name}},
        "status": {"phase": phase}});
    if let Some(code) = code {
        pod["status"]["containerStatuses"] = json!([{"name": "kernelci", "image": "x",
            "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": code}}}]);
    }
    pod
}

async fn scripted_cluster(
    pending: usize,
) -> (String, Arc<Mutex<Cluster>>, tokio::task::JoinHandle<()>) {
    let cluster = Arc::new(Mutex::new(Cluster {
        pending,
        ..Cluster::default()
    }));
    let c = cluster.clone();
    let pods = warp::get()
        .and(warp::path!("api" / "v1" / "namespaces" / String / "pods"))
        .and(warp::query::<BTreeMap<String, String>>())
        .and(warp::header::optional::<String>("authorization"))
        .map(
            move |_ns: String, q: BTreeMap<String, String>, auth: Option<String>| {
                let mut c = c.lock().unwrap();
                c.auth.push(auth.unwrap_or_default());
                let items: Vec<Value> =
                    if q.get("fieldSelector").map(String::as_str) == Some("status.phase=Pending") {
                        (0..c.pending)
                            .map(|i| {
                                json!({"metadata": {"name": format!("busy-{i}")},
                                    "status": {"phase": "Pending"}})
                            })
                            .collect()
                    } else if let Some(job) = q
                        .get("labelSelector")
                        .and_then(|l| l.strip_prefix("job-name="))
                    {
                        c.jobs
                            .get(job)
                            .map(|(_, polls)| vec![pod_of(job, *polls)])
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                reply(
                    StatusCode::OK,
                    &json!({"kind": "PodList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "1"}, "items": items}),
                )
            },
        );
    let logs = warp::get()
        .and(warp::path!(
            "api" / "v1" / "namespaces" / String / "pods" / String / "log"
        ))
        .map(|_ns: String, pod: String| {
            warp::reply::Response::new(format!("log of {pod}\nbuild done\n").into())
        });
    let c = cluster.clone();
    let create = warp::post()
        .and(warp::path!(
            "apis" / "batch" / "v1" / "namespaces" / String / "jobs"
        ))
        .and(warp::body::json())
        .map(move |_ns: String, mut job: Value| {
            let mut c = c.lock().unwrap();
            let name = job["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if c.jobs.contains_key(&name) {
                return reply(
                    StatusCode::CONFLICT,
                    &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                            "status": "Failure", "reason": "AlreadyExists", "code": 409,
                            "message": "already exists"}),
                );
            }
            c.created.push(job.clone());
            job["metadata"]["uid"] = json!("0000-1111");
            job["metadata"]["labels"]["job-name"] = json!(name);
            c.jobs.insert(name, (job.clone(), 0));
            reply(StatusCode::CREATED, &job)
        });
    let c = cluster.clone();
    let get = warp::get()
        .and(warp::path!(
            "apis" / "batch" / "v1" / "namespaces" / String / "jobs" / String
        ))
        .map(move |_ns: String, name: String| {
            let mut c = c.lock().unwrap();
            let Some((job, polls)) = c.jobs.get_mut(&name) else {
                return not_found(&name);
            };
            *polls += 1;
            let mut job = job.clone();
            job["status"] = job_state(&name, *polls).0;
            reply(StatusCode::OK, &job)
        });
    let c = cluster.clone();
    let delete = warp::delete()
        .and(warp::path!(
            "apis" / "batch" / "v1" / "namespaces" / String / "jobs" / String
        ))
        .and(warp::body::bytes())
        .map(move |_ns: String, name: String, body: bytes::Bytes| {
            let mut c = c.lock().unwrap();
            if c.jobs.remove(&name).is_none() {
                return not_found(&name);
            }
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            c.deleted.push((name.clone(), body));
            reply(
                StatusCode::OK,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Success", "details": {"name": name, "kind": "jobs"}}),
            )
        });
    let routes = logs.or(pods).or(create).or(get).or(delete);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(warp::serve(routes).incoming(listener).run());
    (format!("http://{addr}"), cluster, task)
}

fn kubeconfig(dir: &Path, clusters: &[(&str, &str)]) -> std::path::PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for (name, url) in clusters {
        text.push_str(&format!("- name: {name}\n  cluster:\n    server: {url}\n"));
    }
    text.push_str("users:\n- name: ci\n  user:\n    token: test-token\ncontexts:\n");
    for (name, _) in clusters {
        text.push_str(&format!(
            "- name: {name}\n  context:\n    cluster: {name}\n    user: ci\n    namespace: default\n"
        ));
    }
    text.push_str(&format!("current-context: {}\n", clusters[0].0));
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    path
}

fn templates(dir: &Path) -> TemplateEngine {
    std::fs::write(
        dir.join("k8s-test.jinja2"),
        "#!/bin/sh\necho 'job {{ name }} for node {{ node.id }}'\nkci job run --node-id '{{ node.id }}'\n",
    )
    .unwrap();
    TemplateEngine::new(vec![
        dir.to_path_buf(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/runtime"),
    ])
}

fn job(name: &str) -> JobSpec {
    let mut node = Node::new(NodeKind::Kbuild, name);
    node.id = Some(ObjectId::new());
    JobSpec {
        node,
        name: name.into(),
        template: "k8s-test.jinja2".into(),
        kind: "kbuild".into(),
        image: Some("ghcr.io/kernelci/gcc-12:x86-kernelci".into()),
        params: Default::default(),
        platform: "kubernetes".into(),
        platform_config: Default::default(),
        storage_config_name: None,
        storage_config: None,
        api_config: Default::default(),
    }
}

fn runtime(dir: &Path, kubeconfig: &Path, contexts: Value) -> Arc<dyn Runtime> {
    let entry = RuntimeEntry::from_value(
        "k8s-test",
        &json!({"lab_type": "kubernetes", "context": contexts, "kubeconfig": kubeconfig,
                "poll_interval": 0.05, "timeout": 5}),
    )
    .unwrap();
    let ctx = RuntimeContext::new(dir.join("out")).with_templates(templates(dir));
    RuntimeRegistry::new()
        .build(&entry, &RuntimeCredentials::default(), &ctx)
        .unwrap()
}

#[tokio::test]
async fn a_job_is_rendered_created_followed_and_its_log_read() {
    support::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let (url, cluster, task) = scripted_cluster(0).await;
    let kc = kubeconfig(dir.path(), &[("only", &url)]);
    let rt = runtime(dir.path(), &kc, json!("only"));
    assert_eq!(rt.lab_type(), "kubernetes");

    let spec = job("kbuild-gcc-12-x86_64");
    let node_id = spec.node.id.unwrap().to_string();
    let params = rt.params(&spec).unwrap();
    let name = params["k8s_job_name"].as_str().unwrap().to_owned();
    assert!(
        name.starts_with(&format!("kci-{node_id}-kbuild-gcc-12-x86-64-")),
        "{name}"
    );
    assert_eq!(params["k8s_api_key"], "kci-api-jwt-early-access");
    let def = rt.generate(&spec, &params).unwrap();
    assert_eq!(def.file_name, format!("{name}.yaml"));
    let manifest: Value = serde_norway::from_str(&def.content).unwrap();
    assert_eq!(manifest["apiVersion"], "batch/v1");
    assert_eq!(manifest["kind"], "Job");
    assert_eq!(manifest["spec"]["ttlSecondsAfterFinished"], 1800);
    assert_eq!(manifest["spec"]["backoffLimit"], 1);
    let pod = &manifest["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "ghcr.io/kernelci/gcc-12:x86-kernelci");
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "kci-api-jwt-early-access"
    );
    let script = container["args"][0].as_str().unwrap();
    assert!(
        script.contains(&format!("kci job run --node-id '{node_id}'")),
        "{script}"
    );

    let handle = rt.submit(&def).await.unwrap().unwrap();
    assert_eq!(handle.id, name);
    assert_eq!(handle.context.as_deref(), Some("only"));
    {
        let c = cluster.lock().unwrap();
        assert_eq!(c.created.len(), 1);
        assert_eq!(c.created[0]["metadata"]["name"], json!(name));
    }
    assert_eq!(rt.status(&handle).await.unwrap(), JobStatus::Queued);
    assert_eq!(rt.status(&handle).await.unwrap(), JobStatus::Running);
    assert_eq!(
        rt.wait(&handle, Duration::from_secs(10)).await.unwrap(),
        JobStatus::Finished { exit_code: 0 }
    );
    let k8s = KubernetesRuntime::new(
        "k8s-test",
        KubernetesConfig::from_entry(
            &RuntimeEntry::from_value(
                "k8s-test",
                &json!({"lab_type": "kubernetes", "context": "only", "kubeconfig": kc}),
            )
            .unwrap(),
        )
        .unwrap(),
        Arc::new(templates(dir.path())),
    );
    let log = k8s.logs(&handle).await.unwrap();
    assert!(log.contains(&format!("log of {name}-pod1")), "{log}");
    assert!(
        cluster
            .lock()
            .unwrap()
            .auth
            .iter()
            .all(|a| a == "Bearer test-token")
    );

    // A failing pod gives its container's exit code.
    let def = rt
        .generate(
            &job("kbuild-fail"),
            &rt.params(&job("kbuild-fail")).unwrap(),
        )
        .unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    assert_eq!(
        rt.wait(&handle, Duration::from_secs(10)).await.unwrap(),
        JobStatus::Finished { exit_code: 2 }
    );
    task.abort();
}

#[tokio::test]
async fn timeouts_and_cancel_delete_the_job_with_its_pods() {
    support::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let (url, cluster, task) = scripted_cluster(0).await;
    let kc = kubeconfig(dir.path(), &[("only", &url)]);
    let rt = runtime(dir.path(), &kc, json!("only"));

    let spec = job("hang");
    let def = rt.generate(&spec, &rt.params(&spec).unwrap()).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    let status = rt.wait(&handle, Duration::from_millis(300)).await.unwrap();
    assert!(
        matches!(
            status,
            JobStatus::Incomplete {
                error_code: ErrorCode::NodeTimeout,
                ..
            }
        ),
        "{status:?}"
    );
    {
        let c = cluster.lock().unwrap();
        assert_eq!(c.deleted.len(), 1);
        assert_eq!(c.deleted[0].0, handle.id);
        assert_eq!(c.deleted[0].1["propagationPolicy"], "Foreground");
        assert!(c.jobs.is_empty());
    }

    let spec = job("hang");
    let def = rt.generate(&spec, &rt.params(&spec).unwrap()).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    rt.cancel(&handle).await.unwrap();
    assert_eq!(rt.status(&handle).await.unwrap(), JobStatus::Canceled);
    assert!(cluster.lock().unwrap().jobs.is_empty());
    // Canceling a job that is gone is fine; a job that never existed is not found.
    rt.cancel(&handle).await.unwrap();
    let err = rt
        .status(&kernelci::runtime::JobHandle {
            id: "nope".into(),
            context: Some("only".into()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::NotFound);
    task.abort();
}

#[tokio::test]
async fn the_least_busy_context_is_chosen_and_an_unreachable_cluster_is_a_submit_error() {
    support::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let (busy_url, busy, t1) = scripted_cluster(3).await;
    let (idle_url, idle, t2) = scripted_cluster(0).await;
    let (half_url, half, t3) = scripted_cluster(1).await;
    let down_url = format!(
        "http://127.0.0.1:{}",
        kernelci::testsuite::peers::free_port()
    );
    let kc = kubeconfig(
        dir.path(),
        &[
            ("busy", &busy_url),
            ("down", &down_url),
            ("idle", &idle_url),
            ("half", &half_url),
        ],
    );
    let entry = |contexts: Value| {
        KubernetesConfig::from_entry(
            &RuntimeEntry::from_value(
                "k8s",
                &json!({"lab_type": "kubernetes", "context": contexts, "kubeconfig": kc,
                        "timeout": 2}),
            )
            .unwrap(),
        )
        .unwrap()
    };
    let k8s = |contexts: Value| {
        KubernetesRuntime::new("k8s", entry(contexts), Arc::new(templates(dir.path())))
    };
    let rt = k8s(json!(["busy", "down", "idle", "half"]));
    assert_eq!(rt.pending_pods("busy").await, 3);
    assert_eq!(rt.pending_pods("down").await, UNREACHABLE_PENDING);
    // The first context without pending pods wins; the ones after it are not asked.
    let before = half.lock().unwrap().auth.len();
    assert_eq!(rt.choose_context().await, "idle");
    assert_eq!(half.lock().unwrap().auth.len(), before);
    // Otherwise the least busy.
    assert_eq!(
        k8s(json!(["busy", "down", "half"])).choose_context().await,
        "half"
    );

    let rt: Arc<dyn Runtime> = Arc::new(k8s(json!(["busy", "down", "idle"])));
    let spec = job("baseline");
    let def = rt.generate(&spec, &rt.params(&spec).unwrap()).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    assert_eq!(handle.context.as_deref(), Some("idle"));
    assert_eq!(idle.lock().unwrap().created.len(), 1);
    assert!(busy.lock().unwrap().created.is_empty());

    let rt: Arc<dyn Runtime> = Arc::new(k8s(json!("down")));
    let err = rt.submit(&def).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable, "{err}");
    assert_eq!(err.error_code(), ErrorCode::SubmitError);
    t1.abort();
    t2.abort();
    t3.abort();
}
