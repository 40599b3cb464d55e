//! A third-party `Storage` written only against the public trait: an in-memory store.
//! It runs the shared conformance suite, like any backend of the crate does.
//!
//! Run with `cargo run --example custom_storage`.

use std::collections::HashMap;
use std::sync::Mutex;

use kernelci::storage::{RelPath, Storage, StorageError, UploadFile, UrlMap, validate_upload};
use tokio::io::AsyncReadExt;

/// Files kept in a map from their full relative path to their bytes.
#[derive(Debug, Default)]
struct MemoryStorage {
    files: Mutex<HashMap<String, Vec<u8>>>,
}

impl MemoryStorage {
    fn get(&self, path: &str) -> Option<Vec<u8>> {
        self.files.lock().ok()?.get(path).cloned()
    }
}

#[kernelci::storage::async_trait]
impl Storage for MemoryStorage {
    fn base_url(&self) -> &str {
        "memory://kernelci/"
    }

    async fn upload(
        &self,
        files: Vec<UploadFile>,
        dest_path: &str,
    ) -> Result<Option<UrlMap>, StorageError> {
        // The shared path rules, before anything is stored.
        let dest = validate_upload(&files, dest_path)?;
        let mut received = Vec::new();
        for file in files {
            let path = dest.join(&RelPath::parse_file(&file.remote)?).to_string();
            let mut bytes = Vec::new();
            let mut reader = file.source.open().await?;
            reader
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| StorageError::io(format!("reading {path}"), e))?;
            received.push((path, bytes));
        }
        // Only a fully received request becomes visible.
        let mut map = self
            .files
            .lock()
            .map_err(|_| StorageError::Config("poisoned lock".into()))?;
        map.extend(received);
        Ok(None)
    }

    async fn exists(&self, dest_path: &str, remote: &str) -> Result<bool, StorageError> {
        let path = RelPath::parse(dest_path)?.join(&RelPath::parse_file(remote)?);
        Ok(self.get(&path.to_string()).is_some())
    }
}

#[tokio::main]
async fn main() {
    let storage = std::sync::Arc::new(MemoryStorage::default());
    let url = storage
        .upload_single(UploadFile::from_bytes(b"hi".to_vec(), "hello.txt"), "demo")
        .await
        .expect("upload");
    println!("stored at {url}");

    let reader = storage.clone();
    kernelci::testsuite::storage::storage_suite(&*storage, move |path| {
        let reader = reader.clone();
        async move { reader.get(&path) }
    })
    .await;
    println!("MemoryStorage passes the kernelci storage conformance suite");
}
