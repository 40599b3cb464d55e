//! The KCIDB bridge against a local KCIDB REST receiver (a real HTTP server answering like
//! kcidb-ng: 200 with an id, 400, 401, 502, or no answer), with the real `kci-kcidb` binary
//! killed with SIGKILL mid-batch: nothing is lost, nothing is sent twice, failed submissions
//! back off, invalid and rejected objects are left out, logged and counted in `/metrics`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kcidb_support;
mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kcidb_support::*;
use kernelci::client::ApiClient;
use kernelci::kcidb::testsuite::{Answer, KcidbReceiver};
use kernelci::models::ObjectId;
use kernelci::testsuite::peers::free_port;
use support::{ADMIN_PASSWORD, TestServer};

const COMMIT: &str = "48c0ea45d4431a2ce6e782b89e0fcc8d08d426d5";

struct Setup {
    _server: TestServer,
    api: ApiClient,
    token: String,
    dir: tempfile::TempDir,
    url: String,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &dir.path().join("db.sqlite"),
        SocketAddr::from(([127, 0, 0, 1], 0)),
        5,
    )
    .await;
    let api = ApiClient::new(&server.url()).unwrap();
    let token = api.login("admin", ADMIN_PASSWORD).await.unwrap();
    let api = api.with_token(token.clone());
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::write(dir.path().join("config/jobs.yaml"), JOBS_YAML).unwrap();
    Setup {
        url: server.url(),
        _server: server,
        api,
        token,
        dir,
    }
}

fn bridge(s: &Setup, receiver: &KcidbReceiver, health: u16, timeout: &str) -> BridgeProc {
    let args = [
        "--api-url",
        &s.url,
        "-c",
        "config",
        "--name",
        "kcidb-test",
        "--health-port",
        &health.to_string(),
        "--submit-timeout",
        timeout,
        "--retry-delay",
        "0.2",
        "--retry-attempts",
        "3",
        "--linger-ms",
        "200",
        "--no-log-excerpts",
    ]
    .map(String::from)
    .to_vec();
    let env = vec![
        ("KCI_API_TOKEN".to_owned(), s.token.clone()),
        ("KCIDB_REST".to_owned(), receiver.kcidb_rest()),
    ];
    BridgeProc::new(s.dir.path(), args, env)
}

async fn wait_requests(receiver: &KcidbReceiver, n: usize, what: &str, p: &mut BridgeProc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while receiver.requests().len() < n {
        assert!(p.running(), "the bridge exited:\n{}", p.logs());
        assert!(Instant::now() < deadline, "no {what}:\n{}", p.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_sent_twice_across_kill_9_mid_batch() {
    let s = setup().await;
    let receiver = KcidbReceiver::start("secret-token");
    let checkout = checkout(&s.api, COMMIT).await;
    let kbuild = kbuild(&s.api, &checkout, "x86_64", "http://logs.invalid/kbuild").await;
    let tree = test_job(&s.api, &kbuild, "alpha", 20).await;
    let suite = tree.iter().find(|n| n.name == "alpha").unwrap().clone();
    let mut expected: Vec<_> = vec![checkout.clone(), kbuild.clone()];
    expected.extend(tree.iter().filter(|n| n.name != "alpha").cloned());
    let health = free_port();

    // 1. The first submission hangs: kill -9 while KCIDB has not answered.
    receiver.script([Answer::Hang]);
    let mut p = bridge(&s, &receiver, health, "30");
    p.start(None);
    wait_requests(&receiver, 1, "hanging submission", &mut p).await;
    p.kill9();
    let hung = &receiver.requests()[0];
    assert_eq!(hung.status, 0);
    assert_eq!(
        ids_in(&hung.body, "tests").len(),
        21,
        "the job and its 20 leaves (not the suite)"
    );
    // Only the suite is marked (it is never sent); nothing that was to be sent.
    let flagged = |nodes: Vec<kernelci::models::Node>| -> Vec<String> {
        nodes
            .into_iter()
            .filter(|n| n.processed_by_kcidb_bridge)
            .map(|n| n.name)
            .collect()
    };
    assert_eq!(flagged(all_nodes(&s.api).await), ["alpha"]);

    // 2. Restarted, it sends the batch again; killed after KCIDB took it, before marking.
    let mut p = bridge(&s, &receiver, health, "2");
    p.start(Some("kcidb-submitted"));
    p.wait_crash("kcidb-submitted", Duration::from_secs(60));
    p.kill9();
    assert_eq!(receiver.accepted().len(), 1, "KCIDB took the batch once");
    assert_eq!(
        flagged(all_nodes(&s.api).await),
        ["alpha"],
        "not marked yet"
    );

    // 3. Restarted, it finishes the journaled submission: marks, sends nothing again.
    p.start(None);
    let ids: Vec<ObjectId> = expected
        .iter()
        .chain([&suite])
        .filter_map(|n| n.id)
        .collect();
    wait_flagged(&s.api, &ids, Duration::from_secs(60), || p.logs()).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.accepted().len(), 1, "{}", p.logs());

    // 4. New results while KCIDB answers 502 twice: retried with growing delays.
    let before = receiver.requests().len();
    receiver.script([Answer::Status(502), Answer::Status(502)]);
    let more = test_job(&s.api, &kbuild, "beta", 5).await;
    let more_ids: Vec<ObjectId> = more.iter().filter_map(|n| n.id).collect();
    wait_flagged(&s.api, &more_ids, Duration::from_secs(60), || p.logs()).await;
    let requests = receiver.requests()[before..].to_vec();
    let statuses: Vec<u16> = requests.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [502, 502, 200], "{}", p.logs());
    let gap1 = requests[1].at - requests[0].at;
    let gap2 = requests[2].at - requests[1].at;
    assert!(gap1 >= Duration::from_millis(100), "first backoff {gap1:?}");
    assert!(
        gap2 >= Duration::from_millis(200),
        "second backoff {gap2:?}"
    );
    expected.extend(more.iter().filter(|n| n.name != "beta").cloned());

    // Every object exactly once, nothing else.
    let accepted = receiver.accepted_ids();
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    let got: BTreeSet<String> = accepted.keys().map(|(_, id)| id.clone()).collect();
    let want: BTreeSet<String> = kcidb_ids(&expected).into_iter().collect();
    assert_eq!(got, want);
    let text = metrics(health).await;
    assert!(metric(&text, "kcidb_objects_sent_total") >= 6, "{text}");
    assert_eq!(
        metric(&text, "kcidb_submission_failures_total"),
        0,
        "{text}"
    );
    p.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_and_rejected_objects_are_left_out_logged_and_counted() {
    let s = setup().await;
    let receiver = KcidbReceiver::start("secret-token");
    receiver.set_default(Answer::RejectIfContains("poison_case".into()));
    // The token is refused once first: nothing is marked, the batch is tried again.
    receiver.script([Answer::Status(401)]);
    let checkout = checkout(&s.api, COMMIT).await;
    let good = kbuild(&s.api, &checkout, "x86_64", "http://logs.invalid/good").await;
    let bad = kbuild(&s.api, &checkout, "X86-64", "http://logs.invalid/bad").await;
    let tests = test_job(&s.api, &good, "gamma", 3).await;
    let poison = test_job(&s.api, &good, "poison", 1).await;
    let poison_leaf = poison
        .iter()
        .find(|n| n.name == "poison_case_0")
        .unwrap()
        .clone();
    let health = free_port();
    let mut p = bridge(&s, &receiver, health, "2");
    p.start(None);
    let all: Vec<ObjectId> = all_nodes(&s.api)
        .await
        .iter()
        .filter_map(|n| n.id)
        .collect();
    wait_flagged(&s.api, &all, Duration::from_secs(90), || p.logs()).await;

    let statuses: Vec<u16> = receiver.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses.first(), Some(&401), "{statuses:?}");
    assert!(statuses.contains(&400), "{statuses:?}");
    let accepted = receiver.accepted_ids();
    assert!(accepted.values().all(|n| *n == 1), "{accepted:?}");
    let got: BTreeSet<String> = accepted.keys().map(|(_, id)| id.clone()).collect();
    let mut want = vec![checkout.clone(), good.clone()];
    want.extend(tests.iter().filter(|n| n.name != "gamma").cloned());
    want.extend(poison.iter().filter(|n| n.kind == "job").cloned());
    let want: BTreeSet<String> = kcidb_ids(&want).into_iter().collect();
    assert_eq!(got, want, "{}", p.logs());
    let text = metrics(health).await;
    assert_eq!(metric(&text, "kcidb_objects_invalid_total"), 1, "{text}");
    assert_eq!(metric(&text, "kcidb_objects_rejected_total"), 1, "{text}");
    assert!(metric(&text, "kcidb_batch_failures_total") >= 1, "{text}");
    let logs = p.logs();
    let bad_id = bad.id.unwrap().to_string();
    assert!(
        logs.lines().any(|l| l.contains("invalid KCIDB object")
            && l.contains(&bad_id)
            && l.contains("architecture")),
        "the invalid build is logged with its node and field:\n{logs}"
    );
    let poison_id = poison_leaf.id.unwrap().to_string();
    assert!(
        logs.lines()
            .any(|l| l.contains("rejected the object") && l.contains(&poison_id)),
        "{logs}"
    );
    p.kill9();
}
