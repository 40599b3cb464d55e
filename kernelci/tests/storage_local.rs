//! The storage conformance suite over `LocalStorage`, plus local-only checks.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};

use kernelci::ErrorKind;
use kernelci::storage::{self, LocalStorage, Storage, StorageConfig, UploadFile};
use kernelci::testsuite::storage::{FailingReader, storage_suite, write_tar_gz};

/// Every file below `dir` whose name marks an unfinished upload.
pub fn leftover_parts(dir: &Path) -> Vec<PathBuf> {
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

#[tokio::test]
async fn local_storage_passes_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path(), "http://files.example/kci/").unwrap();
    let root = dir.path().to_path_buf();
    storage_suite(&storage, move |path| {
        let root = root.clone();
        async move { std::fs::read(root.join(path)).ok() }
    })
    .await;
    assert_eq!(leftover_parts(dir.path()), Vec::<PathBuf>::new());
    // Nothing escaped the root.
    assert!(!dir.path().parent().unwrap().join("escape.txt").exists());
}

#[tokio::test]
async fn factory_builds_local_storage_and_runs_the_suite() {
    let dir = tempfile::tempdir().unwrap();
    let config = StorageConfig::from_value(serde_json::json!({
        "storage_type": "local",
        "base_url": "http://localhost:8002/",
        "path": dir.path(),
    }))
    .unwrap();
    let storage = storage::from_config(&config, None).unwrap();
    let root = dir.path().to_path_buf();
    storage_suite(&storage, move |path| {
        let root = root.clone();
        async move { std::fs::read(root.join(path)).ok() }
    })
    .await;
}

#[tokio::test]
async fn interrupted_write_leaves_no_part_file() {
    let dir = tempfile::tempdir().unwrap();
    let storage = LocalStorage::new(dir.path(), "http://x/").unwrap();
    let err = storage
        .upload_single(
            UploadFile::from_reader(FailingReader::new(5 << 20), "x.bin"),
            "d",
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("simulated failure"), "{err}");
    assert!(!dir.path().join("d/x.bin").exists());
    assert_eq!(leftover_parts(dir.path()), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn hostile_archive_members_are_refused_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let archive = scratch.path().join("evil.tar.gz");
    // tar::Builder refuses `..` itself, so write the header name by hand.
    {
        let file = std::fs::File::create(&archive).unwrap();
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..13].copy_from_slice(b"../escape.txt");
        header.set_size(2);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, &b"no"[..]).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        tar.append_link(&mut link, "link", "/etc/passwd").unwrap();
        let mut ok = tar::Header::new_gnu();
        ok.set_size(3);
        ok.set_mode(0o644);
        tar.append_data(&mut ok, "fine.txt", &b"yes"[..]).unwrap();
        tar.into_inner().unwrap().finish().unwrap();
    }
    let store_root = dir.path().join("store");
    let storage = LocalStorage::new(&store_root, "http://x/").unwrap();
    let err = storage.unpack_archive(&archive, "a").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    match err {
        storage::StorageError::Archive { failed, .. } => assert_eq!(failed, 2),
        other => panic!("unexpected {other}"),
    }
    assert!(!store_root.join("escape.txt").exists());
    assert!(!store_root.join("a/link").exists());
    assert_eq!(
        std::fs::read(store_root.join("a/fine.txt")).unwrap(),
        b"yes"
    );

    let good = scratch.path().join("good.tar.gz");
    write_tar_gz(&good, &[("x/y.txt", b"z")]).unwrap();
    assert!(storage.unpack_archive(&good, "b").await.unwrap());
    assert_eq!(std::fs::read(store_root.join("b/x/y.txt")).unwrap(), b"z");
}

#[tokio::test]
async fn unknown_and_disabled_types_are_clear_errors() {
    let err = storage::from_config(&StorageConfig::new("gcs", "http://x/"), None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(
        err.to_string().contains("unknown storage_type \"gcs\""),
        "{err}"
    );
}
