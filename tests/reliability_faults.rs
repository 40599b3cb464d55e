//! Dependency faults (issue 11): the system degrades with clear errors and recovers without a
//! restart.
//!
//! - Redis killed and restarted during event traffic: node writes keep succeeding and a durable
//!   listener still gets every event, in order (Redis is only a wake-up, DESIGN §6); the
//!   Redis-only routes (`/push`) answer 503 with a clear detail meanwhile, then work again.
//! - The MongoDB-wire server killed and restarted: requests get 503 with a clear detail, then
//!   the same server process serves again (feature `mongodb`).
//! - sshd killed (with its session processes) during an SSH storage upload: the upload fails
//!   with a clear `Unavailable` error, leaves no truncated file, and the same `SshStorage`
//!   uploads again once sshd is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod reliability_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kernelci::testsuite::redis::RedisServer;
use reliability_support::{ADMIN_PASSWORD, Body, Http, ServerProc, ServerSpec, all_events, node};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// A durable listener on `node`: records (sequence id, when it arrived).
async fn listen_all(
    http: Http,
    token: String,
    stop: Arc<AtomicBool>,
    got: Arc<Mutex<Vec<(u64, Instant)>>>,
) {
    let sub = http
        .call(
            "POST",
            "/latest/subscribe/node?promisc=true&subscriber_id=faults",
            Some(&token),
            Body::None,
        )
        .await
        .json()["id"]
        .as_u64()
        .unwrap();
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        let r = http
            .send(
                "GET",
                &format!("/latest/listen/{sub}?acknowledge={last}"),
                Some(&token),
                &Body::None,
            )
            .await
            .expect("listen (the API server stays up)");
        assert_eq!(r.status, 200, "listen: {}", r.text);
        let ev: Value = serde_json::from_str(r.json()["data"].as_str().unwrap()).unwrap();
        if ev["data"] == "BEEP" {
            continue;
        }
        last = ev["sequenceid"].as_u64().unwrap();
        got.lock().await.push((last, Instant::now()));
    }
}

fn pct(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_outage_delays_events_never_loses_them() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ServerSpec::sqlite(&dir.path().join("db.sqlite3"));
    spec.redis = Some(redis.url());
    let server = ServerProc::start(spec);
    let http = Http::new(&server.url(), Duration::from_secs(20));
    let admin = http.login("admin", ADMIN_PASSWORD).await;
    // Lists live in Redis: they work before the outage.
    let r = http
        .call(
            "POST",
            "/latest/push/jobs",
            Some(&admin),
            Body::Json(json!({"data": 1})),
        )
        .await;
    assert_eq!(r.status, 200, "push: {}", r.text);

    let stop = Arc::new(AtomicBool::new(false));
    let got = Arc::new(Mutex::new(Vec::new()));
    let listener = tokio::spawn(listen_all(
        http.clone(),
        admin.clone(),
        stop.clone(),
        got.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Writes at a steady pace in three phases: Redis up, Redis down, Redis back.
    let mut acked: Vec<(String, Instant, &str)> = Vec::new();
    let mut outage_push = None;
    for (phase, secs) in [("up", 2u64), ("down", 4), ("back", 3)] {
        if phase == "down" {
            redis.kill();
        }
        if phase == "back" {
            redis.restart().unwrap();
        }
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            let r = http
                .call(
                    "POST",
                    "/latest/node",
                    Some(&admin),
                    Body::Json(node(&format!("{phase}-{}", acked.len()))),
                )
                .await;
            assert_eq!(r.status, 200, "POST /node with Redis {phase}: {}", r.text);
            acked.push((
                r.json()["id"].as_str().unwrap().to_owned(),
                Instant::now(),
                phase,
            ));
            if phase == "down" && outage_push.is_none() {
                let r = http
                    .call(
                        "POST",
                        "/latest/push/jobs",
                        Some(&admin),
                        Body::Json(json!({"data": 2})),
                    )
                    .await;
                outage_push = Some(r);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    // Redis-only routes: a clear 503 during the outage, service again after it.
    let p = outage_push.unwrap();
    assert_eq!(p.status, 503, "push without Redis: {}", p.text);
    let detail = p.json()["detail"].as_str().unwrap_or_default().to_owned();
    assert!(!detail.is_empty(), "503 without a detail: {}", p.text);
    let mut pushed = false;
    for _ in 0..50 {
        let r = http
            .call(
                "POST",
                "/latest/push/jobs",
                Some(&admin),
                Body::Json(json!({"data": 3})),
            )
            .await;
        if r.status == 200 {
            pushed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(pushed, "push does not recover after Redis is back");
    let r = http
        .call("GET", "/latest/pop/jobs", Some(&admin), Body::None)
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["data"],
        3,
        "the list restarted empty; the new item pops"
    );

    // Every event arrives, in log order, none lost.
    let seqs: Vec<u64> = all_events(&http)
        .await
        .iter()
        .filter(|e| e["channel"] == "node")
        .map(|e| e["sequence_id"].as_u64().unwrap())
        .collect();
    let want = *seqs.last().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.lock().await.last().map(|g| g.0) != Some(want) {
        assert!(
            Instant::now() < deadline,
            "events not delivered after the outage"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let got = got.lock().await.clone();
    let delivered: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(delivered, seqs, "every event, once, in order");
    // Delivery latency by phase (event i is node write i).
    let mut by_phase: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for ((_, at, phase), (_, recv)) in acked.iter().zip(&got) {
        let ms = recv.saturating_duration_since(*at).as_secs_f64() * 1e3;
        by_phase.entry(phase).or_default().push(ms);
    }
    for (phase, v) in &by_phase {
        eprintln!(
            "redis {phase}: {} events, delivery p50 {:.1} ms, max {:.1} ms",
            v.len(),
            pct(v.clone(), 0.5),
            pct(v.clone(), 1.0)
        );
    }
    eprintln!("push during the outage: 503 {detail:?}");
    assert!(
        by_phase["down"].len() > 10,
        "writes went on during the outage"
    );
    listener.abort();
    drop(server);
}

#[cfg(feature = "mongodb")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_outage_503_then_recovers_without_restart() {
    use kernelci::models::{ObjectId, User};
    use kernelci::store::{MongoConfig, MongoStore, UserStore};
    use kernelci::testsuite::mongo::MongoPeer;

    let Some(mut mongo) = MongoPeer::start() else {
        return;
    };
    let db = format!("kci_faults_{}", &ObjectId::new().to_hex()[16..]);
    let spec = ServerSpec {
        database: mongo.uri(),
        redis: None,
        env: vec![("KCI_MONGO_DATABASE".into(), db.clone())],
    };
    let mut server = ServerProc::start(spec);
    let pid = server.pid();
    let http = Http::new(&server.url(), Duration::from_secs(60));
    let admin = http.login("admin", ADMIN_PASSWORD).await;
    let me = http
        .call("GET", "/latest/whoami", Some(&admin), Body::None)
        .await
        .json();
    let r = http
        .call(
            "POST",
            "/latest/node",
            Some(&admin),
            Body::Json(node("before")),
        )
        .await;
    assert_eq!(r.status, 200);

    mongo.stop();
    let mut refusals = Vec::new();
    for (m, path, body) in [
        ("GET", "/latest/nodes?kind=test", Body::None),
        ("GET", "/latest/count", Body::None),
        ("POST", "/latest/node", Body::Json(node("during"))),
    ] {
        let t = Instant::now();
        let r = http.call(m, path, Some(&admin), body).await;
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(r.status, 503, "{m} {path} with MongoDB down: {}", r.text);
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_owned();
        assert!(!detail.is_empty(), "503 without a detail: {}", r.text);
        eprintln!("mongodb down: {m} {path} -> 503 after {secs:.1}s: {detail}");
        refusals.push(secs);
    }
    // The wire server comes back (in memory: empty). The admin is put back with the same id
    // so the old token works; nothing restarts the API server.
    mongo.restart().unwrap();
    let back = Instant::now();
    let store = MongoStore::connect_with(MongoConfig::new(mongo.uri(), db))
        .await
        .unwrap();
    store
        .insert_user(User {
            id: ObjectId::parse_str(me["id"].as_str().unwrap()).unwrap(),
            email: me["email"].as_str().unwrap().to_owned(),
            hashed_password: "unused".into(),
            is_active: true,
            is_superuser: true,
            is_verified: true,
            username: "admin".into(),
            groups: vec![],
        })
        .await
        .unwrap();
    let mut recovered = None;
    for _ in 0..300 {
        let r = http
            .send(
                "POST",
                "/latest/node",
                Some(&admin),
                &Body::Json(node("after")),
            )
            .await;
        if let Ok(r) = r
            && r.status == 200
        {
            recovered = Some(back.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = recovered.expect("no recovery after MongoDB came back");
    let events = all_events(&http).await;
    assert!(
        events.iter().any(|e| e["data"]["name"] == "after"),
        "the write after recovery has its event"
    );
    assert_eq!(server.pid(), pid, "same server process");
    assert_eq!(server.starts, 1);
    eprintln!(
        "mongodb back: writes succeed {:.1}s after the restart",
        recovered.as_secs_f64()
    );
    server.kill9();
}

/// The pids of `root`'s descendants (from /proc).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid ...; comm may hold spaces: split after the last ')'.
            let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
                continue;
            };
            if let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parent_of {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_down_during_upload_then_recovers() {
    use kernelci::storage::ssh::HostKeyPolicy;
    use kernelci::storage::{SshStorage, Storage, UploadFile};
    use kernelci::testsuite::peers::PeerProcess;
    use kernelci::testsuite::sshd::start_sshd;

    let Some(mut peer) = start_sshd() else {
        return;
    };
    let port = peer.port();
    let storage = SshStorage::new(
        "127.0.0.1",
        port,
        &peer.user,
        &peer.client_key,
        peer.data_dir.to_str().unwrap(),
        "https://storage.example.org/",
        HostKeyPolicy::KnownHosts(peer.known_hosts.clone()),
    )
    .unwrap()
    .with_timeout(Duration::from_secs(10));
    storage
        .upload(
            vec![UploadFile::from_bytes(b"ok".to_vec(), "before.txt")],
            "run",
        )
        .await
        .unwrap();
    // A big upload; kill sshd and every session process while it runs.
    let big = vec![7u8; 256 * 1024 * 1024];
    let s2 = storage.clone();
    let upload = tokio::spawn(async move {
        s2.upload(vec![UploadFile::from_bytes(big, "big.bin")], "run")
            .await
    });
    let sshd_pid = peer.process.pid().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while descendants(sshd_pid).is_empty() {
        assert!(Instant::now() < deadline, "no ssh session started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kids = descendants(sshd_pid);
    peer.process.stop();
    for k in kids {
        // `kill -9 <pid>` of the session processes of the sshd this test started.
        let _ = std::process::Command::new("kill")
            .arg("-9")
            .arg(k.to_string())
            .status();
    }
    let t = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(60), upload)
        .await
        .expect("the upload hangs after sshd died")
        .unwrap()
        .expect_err("upload succeeded although sshd was killed");
    eprintln!(
        "sshd killed mid-upload: error after {:.1}s, kind {:?}: {err}",
        t.elapsed().as_secs_f64(),
        err.kind()
    );
    assert_eq!(err.kind(), kernelci::ErrorKind::Unavailable, "{err}");
    let final_path = peer.data_dir.join("run/big.bin");
    if let Ok(m) = std::fs::metadata(&final_path) {
        assert_eq!(
            m.len(),
            256 * 1024 * 1024,
            "a truncated file at the final name"
        );
    }
    // While it is down: a clear error, quickly.
    let t = Instant::now();
    let err = storage
        .upload(
            vec![UploadFile::from_bytes(b"x".to_vec(), "down.txt")],
            "run",
        )
        .await
        .expect_err("upload with sshd down");
    assert_eq!(err.kind(), kernelci::ErrorKind::Unavailable, "{err}");
    eprintln!("sshd down: {err} (after {:.2}s)", t.elapsed().as_secs_f64());
    // sshd back on the same port, same keys: the same storage object works again.
    let keys = peer.process.dir.path().to_path_buf();
    let mut cmd = std::process::Command::new("/usr/sbin/sshd");
    cmd.args(["-D", "-e", "-f", "/dev/null", "-p"])
        .arg(port.to_string())
        .arg("-h")
        .arg(keys.join("host_key"))
        .args(["-o", "ListenAddress=127.0.0.1", "-o"])
        .arg(format!("PidFile={}", keys.join("sshd2.pid").display()))
        .arg("-o")
        .arg(format!(
            "AuthorizedKeysFile={}",
            keys.join("authorized_keys").display()
        ))
        .args(["-o", "StrictModes=no", "-o", "Subsystem=sftp internal-sftp"]);
    let _again = PeerProcess::spawn("sshd", cmd, port, tempfile::tempdir().unwrap()).unwrap();
    storage
        .upload(
            vec![UploadFile::from_bytes(b"back".to_vec(), "after.txt")],
            "run",
        )
        .await
        .expect("upload after sshd is back");
    assert_eq!(
        std::fs::read(peer.data_dir.join("run/after.txt")).unwrap(),
        b"back"
    );
}
