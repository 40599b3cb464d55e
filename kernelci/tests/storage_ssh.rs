//! The storage conformance suite over `SshStorage` against a real OpenSSH sshd.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;

use kernelci::ErrorKind;
use kernelci::storage::ssh::{HostKeyPolicy, SshMethod};
use kernelci::storage::{self, SshStorage, Storage, StorageConfig, StorageError, UploadFile};
use kernelci::testsuite::sshd::{SshdPeer, start_sshd};
use kernelci::testsuite::storage::storage_suite;

fn storage(peer: &SshdPeer, host_keys: HostKeyPolicy) -> SshStorage {
    SshStorage::new(
        "127.0.0.1",
        peer.port(),
        &peer.user,
        &peer.client_key,
        &peer.data_dir.to_string_lossy(),
        "http://files.example/",
        host_keys,
    )
    .unwrap()
}

fn leftover_parts(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if entry.file_name().to_string_lossy().contains(".part-") {
                found.push(path);
            }
        }
    }
    found
}

async fn run_suite(peer: &SshdPeer, storage: &dyn Storage) {
    let root = peer.data_dir.clone();
    storage_suite(storage, move |path| {
        let root = root.clone();
        async move { std::fs::read(root.join(path)).ok() }
    })
    .await;
    assert_eq!(leftover_parts(&peer.data_dir), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn ssh_sftp_passes_the_suite() {
    let Some(peer) = start_sshd() else { return };
    let s = storage(&peer, HostKeyPolicy::KnownHosts(peer.known_hosts.clone()));
    run_suite(&peer, &s).await;
}

#[tokio::test]
async fn ssh_scp_passes_the_suite_via_the_factory() {
    let Some(peer) = start_sshd() else { return };
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "ssh",
        "host": "127.0.0.1",
        "port": peer.port(),
        "user": peer.user,
        "path": peer.data_dir,
        "base_url": "http://127.0.0.1:8002/",
        "method": "scp",
        "known_hosts": peer.known_hosts,
    }))
    .unwrap();
    let key = peer.client_key.to_string_lossy().into_owned();
    let s = storage::from_config(&config, Some(&key)).unwrap();
    run_suite(&peer, &s).await;
}

#[tokio::test]
async fn ssh_refuses_unknown_and_mismatched_host_keys() {
    let Some(peer) = start_sshd() else { return };
    let file = || UploadFile::from_bytes(b"x".to_vec(), "x.txt");
    for (known, needle) in [
        (&peer.wrong_known_hosts, "DOES NOT MATCH"),
        (&peer.empty_known_hosts, "no key for this host"),
    ] {
        let s = storage(&peer, HostKeyPolicy::KnownHosts(known.clone()));
        let err = s.upload_single(file(), "").await.unwrap_err();
        assert!(matches!(err, StorageError::HostKey { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Unauthorized);
        assert!(err.to_string().contains(needle), "{err}");
    }
    assert!(!peer.data_dir.join("x.txt").exists());
    // The explicit opt-out connects anyway.
    let s = storage(&peer, HostKeyPolicy::Insecure);
    s.upload_single(file(), "").await.unwrap();
    assert!(peer.data_dir.join("x.txt").exists());
}

#[tokio::test]
async fn ssh_refuses_a_wrong_client_key() {
    let Some(peer) = start_sshd() else { return };
    let other = peer.process.dir.path().join("other_host_key");
    let s = SshStorage::new(
        "127.0.0.1",
        peer.port(),
        &peer.user,
        other,
        &peer.data_dir.to_string_lossy(),
        "http://files.example/",
        HostKeyPolicy::KnownHosts(peer.known_hosts.clone()),
    )
    .unwrap()
    .with_method(SshMethod::Sftp);
    let err = s.exists("", "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
}
