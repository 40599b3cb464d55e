//! The LAVA runtime.
//!
//! - Against a scripted LAVA REST server (warp, in this file) that answers the routes the
//!   runtime uses as LAVA 2023.01 does (`recipes/lava/REST-NOTES.md`): submit, status, wait,
//!   cancel, queue depth, online devices, errors.
//! - Opt-in (`#[ignore]`d; `./scripts/reliability --lava-only` runs them with `--ignored`):
//!   against a real LAVA started by `./scripts/lava-up` (`LAVA_URL`, default
//!   `http://127.0.0.1:8000`, token `LAVA_TOKEN`): a job rendered from
//!   `tests/lava-inline.jinja2` boots a kernel in QEMU, runs inline test cases and calls the
//!   callback receiver back, which writes the results to a real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kernelci::models::{ErrorCode, Node, NodeKind, ObjectId};
use kernelci::runtime::lava::{LavaConfig, LavaRuntime};
use kernelci::runtime::{
    JobHandle, JobSpec, JobStatus, Runtime, RuntimeContext, RuntimeCredentials, RuntimeEntry,
    RuntimeErrorKind, RuntimeRegistry, TemplateEngine,
};
use kernelci::storage::{LocalStorage, Storage};
use serde_json::{Value, json};
use warp::Filter;
use warp::http::StatusCode;

const TOKEN: &str = "lab-rest-token";

fn templates() -> Arc<TemplateEngine> {
    Arc::new(TemplateEngine::new(vec![
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config/runtime"),
    ]))
}

fn spec(node: Node, template: &str, params: Value) -> JobSpec {
    JobSpec {
        node,
        name: "baseline-qemu".into(),
        template: template.into(),
        kind: "job".into(),
        image: None,
        params: params.as_object().cloned().unwrap(),
        platform: "qemu".into(),
        platform_config: json!({"arch": "x86_64", "boot_method": "qemu",
                                "context": {"arch": "amd64"}})
        .as_object()
        .cloned()
        .unwrap(),
        storage_config_name: Some("local".into()),
        storage_config: None,
        api_config: json!({"name": "local", "url": "http://127.0.0.1:1"})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

fn job_node() -> Node {
    let mut node = Node::new(NodeKind::Job, "baseline-qemu");
    node.id = Some(ObjectId::new());
    node.submitter = Some("service:pipeline".into());
    node.artifacts
        .as_mut()
        .unwrap()
        .insert("kernel".into(), json!("http://storage.test/bzImage"));
    node
}

fn runtime(url: Option<&str>, extra: Value) -> LavaRuntime {
    let mut settings = json!({"lab_type": "lava", "poll_interval": 0.05,
        "notify": {"callback": {"token": "kernelci-callback"}}});
    if let Some(url) = url {
        settings["url"] = json!(url);
    }
    for (k, v) in extra.as_object().unwrap() {
        settings[k] = v.clone();
    }
    let entry = RuntimeEntry::from_value("lava-test", &settings).unwrap();
    LavaRuntime::new(
        "lava-test",
        LavaConfig::from_entry(&entry).unwrap(),
        Some(TOKEN.into()),
        templates(),
    )
    .unwrap()
}

/// What the scripted LAVA saw and how its jobs are.
#[derive(Default)]
struct Lab {
    submitted: Vec<String>,
    auth: Vec<Option<String>>,
    polls: BTreeMap<u64, u32>,
    canceled: Vec<u64>,
    next_id: u64,
}

fn json_reply(status: StatusCode, v: Value) -> warp::reply::Response {
    let mut resp = warp::reply::Response::new(v.to_string().into());
    *resp.status_mut() = status;
    resp
}

/// Job 1xx finishes Complete after two polls, 2xx never ends (until canceled), 3xx ends
/// Incomplete, 500 answers a server error.
async fn scripted_lava() -> (String, Arc<Mutex<Lab>>, tokio::task::JoinHandle<()>) {
    support::init_tls();
    let lab = Arc::new(Mutex::new(Lab {
        next_id: 100,
        ..Lab::default()
    }));
    let l = lab.clone();
    let submit = warp::post()
        .and(warp::path!("api" / "v0.2" / "jobs"))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::body::json())
        .map(move |auth: Option<String>, body: Value| {
            let mut lab = l.lock().unwrap();
            lab.auth.push(auth.clone());
            if auth.as_deref() != Some(&format!("Token {TOKEN}")) {
                return json_reply(
                    StatusCode::FORBIDDEN,
                    json!({"detail": "Invalid token."}),
                );
            }
            let def = body["definition"].as_str().unwrap_or_default().to_owned();
            if !def.contains("actions") {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    json!({"message": "Problem with submitted job data: required key not provided @ data['actions']"}),
                );
            }
            let id = if def.contains("hang") {
                200
            } else if def.contains("broken") {
                300
            } else {
                lab.next_id += 1;
                lab.next_id
            };
            lab.submitted.push(def);
            json_reply(
                StatusCode::CREATED,
                json!({"message": "job(s) successfully submitted", "job_ids": [id]}),
            )
        });
    let l = lab.clone();
    let job = warp::get()
        .and(warp::path!("api" / "v0.2" / "jobs" / u64))
        .map(move |id: u64| {
            let mut lab = l.lock().unwrap();
            let polls = {
                let p = lab.polls.entry(id).or_default();
                *p += 1;
                *p
            };
            let canceled = lab.canceled.contains(&id);
            let (state, health) = match id {
                _ if canceled => ("Finished", "Canceled"),
                100..=199 if polls >= 3 => ("Finished", "Complete"),
                100..=199 if polls == 2 => ("Running", "Unknown"),
                100..=199 => ("Submitted", "Unknown"),
                200..=299 => ("Running", "Unknown"),
                300..=399 => ("Finished", "Incomplete"),
                _ => return json_reply(StatusCode::NOT_FOUND, json!({"detail": "Not found."})),
            };
            json_reply(
                StatusCode::OK,
                json!({"id": id, "state": state, "health": health, "failure_comment": null}),
            )
        });
    let l = lab.clone();
    let cancel = warp::get()
        .and(warp::path!("api" / "v0.2" / "jobs" / u64 / "cancel"))
        .map(move |id: u64| {
            l.lock().unwrap().canceled.push(id);
            json_reply(
                StatusCode::OK,
                json!({"message": "Job cancel signal sent."}),
            )
        });
    let count = warp::get()
        .and(warp::path!("api" / "v0.2" / "jobs"))
        .and(warp::query::<BTreeMap<String, String>>())
        .map(|q: BTreeMap<String, String>| {
            let n = if q.get("state").map(String::as_str) == Some("Submitted")
                && q.get("requested_device_type").map(String::as_str) == Some("qemu")
            {
                7
            } else {
                0
            };
            json_reply(
                StatusCode::OK,
                json!({"count": n, "next": null, "results": []}),
            )
        });
    let devices = warp::get()
        .and(warp::path!("api" / "v0.2" / "devices"))
        .and(warp::query::<BTreeMap<String, String>>())
        .and(warp::host::optional())
        .map(
            |q: BTreeMap<String, String>, host: Option<warp::host::Authority>| {
                let host = host.map(|h| h.to_string()).unwrap_or_default();
                if q.get("page").map(String::as_str) == Some("2") {
                    return json_reply(
                        StatusCode::OK,
                        json!({"count": 3, "next": null, "results": [
                            {"hostname": "qemu03", "device_type": "qemu"}]}),
                    );
                }
                if q.get("device_type").map(String::as_str) != Some("qemu") {
                    return json_reply(StatusCode::OK, json!({"count": 0, "next": null, "results": []}));
                }
                json_reply(
                    StatusCode::OK,
                    json!({"count": 3,
                           "next": format!("http://{host}/api/v0.2/devices/?device_type=qemu&page=2"),
                           "results": [
                               {"hostname": "qemu01", "health": "Good"},
                               {"hostname": "qemu02", "health": "Maintenance"}]}),
                )
            },
        );
    let broken = warp::path!("broken" / "api" / "v0.2" / ..).map(|| {
        json_reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"detail": "database is down"}),
        )
    });
    let routes = submit.or(cancel).or(job).or(count).or(devices).or(broken);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(warp::serve(routes).incoming(listener).run());
    (format!("http://{addr}"), lab, task)
}

#[tokio::test]
async fn generate_renders_a_lava_job_with_callback_metadata_and_priority() {
    let rt = runtime(
        Some("http://lava.test"),
        json!({"priority_min": 12, "priority_max": 40}),
    );
    let node = job_node();
    let id = node.id.unwrap().to_string();
    let job = spec(
        node,
        "tests/lava-inline.jinja2",
        json!({"priority": "high", "ramdisk_url": "file:///r.cpio.gz",
               "steps": ["lava-test-case ok --shell true"], "test_name": "smoke"}),
    );
    let mut params = rt.params(&job).unwrap();
    assert_eq!(params["priority"], json!(28));
    params.insert("instance_callback".into(), json!("http://cb.test:8100"));
    let def = rt.generate(&job, &params).unwrap();
    assert_eq!(def.file_name, "baseline-qemu.yaml");
    let yaml: Value = serde_norway::from_str(&def.content).unwrap();
    assert_eq!(yaml["priority"], 28);
    assert_eq!(yaml["device_type"], "qemu");
    assert_eq!(yaml["visibility"], "public");
    assert_eq!(yaml["context"]["arch"], "amd64");
    assert_eq!(
        yaml["job_name"],
        json!(format!("[KernelCI AKS] {id} baseline-qemu"))
    );
    assert_eq!(yaml["timeouts"]["job"]["minutes"], 30);
    assert_eq!(yaml["timeouts"]["queue"]["days"], 2);
    let cb = &yaml["notify"]["callback"];
    assert_eq!(cb["url"], json!(format!("http://cb.test:8100/node/{id}")));
    assert_eq!(cb["token"], "kernelci-callback");
    assert_eq!(cb["dataset"], "all");
    assert_eq!(yaml["notify"]["criteria"]["status"], "finished");
    assert_eq!(yaml["metadata"]["node_id"], json!(id));
    assert_eq!(yaml["metadata"]["api_config_name"], "local");
    assert_eq!(yaml["metadata"]["storage_config_name"], "local");
    let actions = yaml["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 3);
    assert_eq!(
        actions[0]["deploy"]["images"]["kernel"]["url"],
        "http://storage.test/bzImage"
    );
    assert_eq!(actions[1]["boot"]["method"], "qemu");
    assert_eq!(
        actions[2]["test"]["definitions"][0]["repository"]["run"]["steps"][0],
        "lava-test-case ok --shell true"
    );

    // A template error is a generation error naming the template.
    let job = spec(
        job_node(),
        "tests/lava-inline.jinja2",
        json!({"steps": ["x"]}),
    );
    let err = rt.generate(&job, &rt.params(&job).unwrap()).unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Generation);
    let full = format!("{} {:?}", err.message, err.source);
    assert!(full.contains("boot/qemu.jinja2"), "{full}");
}

fn definition(rt: &LavaRuntime, marker: &str) -> kernelci::runtime::JobDefinition {
    let job = spec(
        job_node(),
        "tests/lava-inline.jinja2",
        json!({"ramdisk_url": "file:///r.cpio.gz", "test_name": marker,
               "steps": ["lava-test-case ok --shell true"]}),
    );
    rt.generate(&job, &rt.params(&job).unwrap()).unwrap()
}

#[tokio::test]
async fn submit_status_wait_cancel_and_queue_against_a_scripted_lab() {
    let (url, lab, task) = scripted_lava().await;
    let rt = runtime(Some(&url), json!({}));

    let def = definition(&rt, "smoke");
    let handle = rt.submit(&def).await.unwrap().expect("a job id");
    assert_eq!(handle.id, "101");
    {
        let lab = lab.lock().unwrap();
        assert_eq!(lab.auth[0].as_deref(), Some("Token lab-rest-token"));
        assert_eq!(lab.submitted[0], def.content);
    }
    assert_eq!(rt.status(&handle).await.unwrap(), JobStatus::Queued);
    assert_eq!(rt.status(&handle).await.unwrap(), JobStatus::Running);
    assert_eq!(
        rt.wait(&handle, Duration::from_secs(10)).await.unwrap(),
        JobStatus::Finished { exit_code: 0 }
    );

    // A job that never finishes is canceled at the timeout.
    let hang = rt.submit(&definition(&rt, "hang")).await.unwrap().unwrap();
    let status = rt.wait(&hang, Duration::from_millis(200)).await.unwrap();
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
    assert_eq!(lab.lock().unwrap().canceled, [200]);
    assert_eq!(rt.status(&hang).await.unwrap(), JobStatus::Canceled);
    // Canceling an ended job does nothing.
    rt.cancel(&hang).await.unwrap();
    assert_eq!(lab.lock().unwrap().canceled, [200]);

    let broken = rt
        .submit(&definition(&rt, "broken"))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        rt.wait(&broken, Duration::from_secs(5)).await.unwrap(),
        JobStatus::Incomplete {
            error_code: ErrorCode::Infrastructure,
            ..
        }
    ));
    let err = rt
        .status(&JobHandle {
            id: "999".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::NotFound);

    assert_eq!(rt.queue_depth("qemu").await.unwrap(), Some(7));
    assert_eq!(rt.queue_depth("rk3399").await.unwrap(), Some(0));
    assert_eq!(
        rt.online_devices("qemu").await.unwrap(),
        Some(vec!["qemu01".to_owned(), "qemu03".to_owned()])
    );

    // Refusals and a bad token are submit errors (the scheduler's submit_error).
    let mut bad = def.clone();
    bad.content = "device_type: qemu\n".into();
    let err = rt.submit(&bad).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable);
    assert!(
        err.message.contains("required key not provided"),
        "{}",
        err.message
    );
    assert_eq!(err.error_code(), ErrorCode::SubmitError);
    let entry = RuntimeEntry::from_value("t", &json!({"lab_type": "lava", "url": url})).unwrap();
    let no_token = LavaRuntime::new(
        "t",
        LavaConfig::from_entry(&entry).unwrap(),
        None,
        templates(),
    )
    .unwrap();
    let err = no_token.submit(&def).await.unwrap_err();
    assert!(err.message.contains("Invalid token"), "{}", err.message);
    task.abort();
}

#[tokio::test]
async fn a_lab_that_is_down_or_failing_gives_submit_errors() {
    let (url, _lab, task) = scripted_lava().await;
    let rt = runtime(Some(&format!("{url}/broken")), json!({}));
    let def = definition(&rt, "smoke");
    let err = rt.submit(&def).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable);
    assert!(err.message.contains("500"), "{}", err.message);
    assert!(err.message.contains("database is down"), "{}", err.message);
    task.abort();

    let port = kernelci::testsuite::peers::free_port();
    let rt = runtime(Some(&format!("http://127.0.0.1:{port}")), json!({}));
    let err = rt.submit(&def).await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable);
    assert_eq!(err.error_code(), ErrorCode::SubmitError);
    let err = rt.queue_depth("qemu").await.unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Unavailable);
}

#[tokio::test]
async fn without_url_the_definition_is_uploaded_for_a_pull_lab() {
    support::init_tls();
    let dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> =
        Arc::new(LocalStorage::new(dir.path(), "http://files.test/").unwrap());
    let ctx = RuntimeContext::new(dir.path().join("out"))
        .with_templates(TemplateEngine::new(vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/runtime"),
        ]))
        .with_storage(storage);
    let entry = RuntimeEntry::from_value(
        "lava-pull",
        &json!({"lab_type": "lava", "notify": {"callback": {"token": "t"}}}),
    )
    .unwrap();
    // Built through the registry, as the scheduler does.
    let rt = RuntimeRegistry::new()
        .build(&entry, &RuntimeCredentials::default(), &ctx)
        .unwrap();
    assert_eq!(rt.lab_type(), "lava");
    let job = spec(
        job_node(),
        "tests/lava-inline.jinja2",
        json!({"ramdisk_url": "file:///r.cpio.gz", "steps": ["true"]}),
    );
    let def = rt.generate(&job, &rt.params(&job).unwrap()).unwrap();
    assert_eq!(rt.submit(&def).await.unwrap(), None);
    let url = rt.job_definition_url(&def).expect("definition URL");
    let date = chrono::Utc::now().format("%Y%m%d").to_string();
    let prefix = format!("http://files.test/jobs/{date}/");
    assert!(url.starts_with(&prefix) && url.ends_with(".yaml"), "{url}");
    let stored = dir
        .path()
        .join(url.strip_prefix("http://files.test/").unwrap());
    assert_eq!(std::fs::read_to_string(stored).unwrap(), def.content);
    // A pull lab has no queue and cannot be followed.
    assert_eq!(rt.queue_depth("qemu").await.unwrap(), None);
    let err = rt
        .status(&JobHandle {
            id: "1".into(),
            context: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, RuntimeErrorKind::Config);
}

// ----- opt-in: a real LAVA -----

/// Whether the LAVA at `LAVA_URL` answers; a LAVA that does not fails the test (the peer
/// `lava`: `./scripts/lava-up` brings one up), unless `KCI_ALLOW_MISSING` names it.
async fn lava_is_up() -> bool {
    support::init_tls();
    let url = std::env::var("LAVA_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let answers = reqwest::Client::new()
        .get(format!("{url}/api/v0.2/system/version/"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success());
    kernelci::testsuite::peers::LAVA.require(answers).is_some()
}

/// A real job on a real LAVA: submit, wait for it, receive its callback, check the results in
/// the API. Start LAVA first: `./scripts/lava-up` (see the README).
#[tokio::test]
#[ignore = "needs a real LAVA: ./scripts/reliability --lava-only (scripts/lava-up)"]
async fn real_lava_1_runs_a_job_and_calls_back() {
    if !lava_is_up().await {
        return;
    }
    use kernelci::client::ApiClient;
    use kernelci::models::{ResultValue, State};
    use kernelci::pipeline::lava_callback::{LabTokens, LavaCallbackConfig, LavaCallbackService};

    let lava_url = std::env::var("LAVA_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let token = std::env::var("LAVA_TOKEN").unwrap_or_else(|_| "ci-admin-token-0123456789".into());
    let cb_secret =
        std::env::var("LAVA_CALLBACK_SECRET").unwrap_or_else(|_| "callback-secret-123".into());
    let images = std::env::var("LAVA_WORKDIR").unwrap_or_else(|_| "/tmp/lava-ci".into());

    let db = tempfile::tempdir().unwrap();
    let server =
        support::TestServer::start(&db.path().join("db"), "127.0.0.1:0".parse().unwrap(), 1).await;
    let anon = ApiClient::new(&server.url()).unwrap();
    let api = anon
        .clone()
        .with_token(anon.login("admin", support::ADMIN_PASSWORD).await.unwrap());
    let mut node = Node::new(NodeKind::Job, "baseline-qemu");
    node.submitter = Some("service:pipeline".into());
    let node = api.create_node(&node).await.unwrap();

    let storage_dir = tempfile::tempdir().unwrap();
    let storage: Arc<dyn Storage> =
        Arc::new(LocalStorage::new(storage_dir.path(), "http://files.test/").unwrap());
    let service = LavaCallbackService::new(LavaCallbackConfig {
        labs: BTreeMap::from([(
            "lava-local".to_owned(),
            LabTokens {
                runtime_token: Some(token.clone()),
                callback_token: Some(cb_secret),
            },
        )]),
        apis: BTreeMap::from([("local".to_owned(), api.clone().into())]),
        default_api: Some("local".into()),
        storages: BTreeMap::from([("local".to_owned(), storage)]),
        default_storage: Some("local".into()),
        workers: 2,
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let svc = service.clone();
    let cb_task = tokio::spawn(async move {
        svc.serve(
            "127.0.0.1:0".parse().unwrap(),
            move |a| {
                let _ = addr_tx.send(a);
            },
            async {
                let _ = stop_rx.await;
            },
        )
        .await
    });
    let cb_addr = addr_rx.await.unwrap();

    let entry = RuntimeEntry::from_value(
        "lava-local",
        &json!({"lab_type": "lava", "url": lava_url, "priority": "medium",
                "notify": {"callback": {"token": "kernelci-callback"}}}),
    )
    .unwrap();
    let rt = LavaRuntime::new(
        "lava-local",
        LavaConfig::from_entry(&entry).unwrap(),
        Some(token),
        templates(),
    )
    .unwrap();
    assert_eq!(
        rt.online_devices("qemu").await.unwrap(),
        Some(vec!["qemu01".to_owned()])
    );
    let queued_before = rt.queue_depth("qemu").await.unwrap();
    assert!(queued_before.is_some());

    let job = spec(
        node.clone(),
        "tests/lava-inline.jinja2",
        json!({"kernel_url": format!("file://{images}/images/vmlinuz"),
               "ramdisk_url": format!("file://{images}/images/rootfs.cpio.gz"),
               "test_name": "smoke",
               "steps": ["lava-test-case kernel-is-linux --shell 'uname -s | grep -q Linux'",
                         "lava-test-case expected-fail --shell false"]}),
    );
    let mut params = rt.params(&job).unwrap();
    params.insert(
        "instance_callback".into(),
        json!(format!("http://{cb_addr}")),
    );
    let def = rt.generate(&job, &params).unwrap();
    let started = std::time::Instant::now();
    let handle = rt.submit(&def).await.unwrap().expect("job id");
    eprintln!("LAVA job {} submitted", handle.id);
    let status = rt.wait(&handle, Duration::from_secs(600)).await.unwrap();
    eprintln!(
        "LAVA job {}: {status:?} after {:?}",
        handle.id,
        started.elapsed()
    );
    assert_eq!(status, JobStatus::Finished { exit_code: 0 });

    // The callback is sent when the job finishes; give the receiver time to write it.
    let mut done = None;
    for _ in 0..300 {
        let n = api.get_node(node.id.unwrap()).await.unwrap().unwrap();
        if n.state == State::Done {
            done = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    service.wait_idle().await;
    let done = done.expect("the LAVA callback reached the receiver and the node is done");
    eprintln!(
        "callback processed {:?} after submit; node result {:?}",
        started.elapsed(),
        done.result
    );
    assert_eq!(
        done.result,
        Some(ResultValue::Fail),
        "one case fails on purpose"
    );
    assert_eq!(done.data_str("device"), Some("qemu01"));
    assert!(done.artifacts.as_ref().unwrap().contains_key("lava_log"));
    let id = node.id.unwrap().to_string();
    let children = api
        .find_all_nodes(&[("parent", id.as_str())])
        .await
        .unwrap();
    let mut names: Vec<&str> = children.iter().map(|n| n.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["setup", "smoke"]);
    let smoke = children.iter().find(|n| n.name == "smoke").unwrap();
    let smoke_id = smoke.id.unwrap().to_string();
    let cases = api
        .find_all_nodes(&[("parent", smoke_id.as_str())])
        .await
        .unwrap();
    let result = |name: &str| cases.iter().find(|c| c.name == name).and_then(|c| c.result);
    assert_eq!(result("kernel-is-linux"), Some(ResultValue::Pass));
    assert_eq!(result("expected-fail"), Some(ResultValue::Fail));

    let _ = stop_tx.send(());
    cb_task.await.unwrap().unwrap();
}

/// Cancel right after submit (runs after the first test: a canceled job must not leave the
/// device unhealthy, so it uses the real images).
#[tokio::test]
#[ignore = "needs a real LAVA: ./scripts/reliability --lava-only (scripts/lava-up)"]
async fn real_lava_2_cancels_a_job() {
    if !lava_is_up().await {
        return;
    }
    let lava_url = std::env::var("LAVA_URL").unwrap_or_else(|_| "http://127.0.0.1:8000".into());
    let token = std::env::var("LAVA_TOKEN").unwrap_or_else(|_| "ci-admin-token-0123456789".into());
    let images = std::env::var("LAVA_WORKDIR").unwrap_or_else(|_| "/tmp/lava-ci".into());
    support::init_tls();
    let entry = RuntimeEntry::from_value(
        "lava-local",
        &json!({"lab_type": "lava", "url": lava_url, "poll_interval": 0.5}),
    )
    .unwrap();
    let rt = LavaRuntime::new(
        "lava-local",
        LavaConfig::from_entry(&entry).unwrap(),
        Some(token),
        templates(),
    )
    .unwrap();
    let job = spec(
        job_node(),
        "tests/lava-inline.jinja2",
        json!({"kernel_url": format!("file://{images}/images/vmlinuz"),
               "ramdisk_url": format!("file://{images}/images/rootfs.cpio.gz"),
               "steps": ["sleep 60"]}),
    );
    let def = rt.generate(&job, &rt.params(&job).unwrap()).unwrap();
    let handle = rt.submit(&def).await.unwrap().unwrap();
    rt.cancel(&handle).await.unwrap();
    let status = rt.wait(&handle, Duration::from_secs(120)).await.unwrap();
    assert_eq!(status, JobStatus::Canceled);
}
