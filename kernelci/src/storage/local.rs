//! [`LocalStorage`]: files in a local directory, served under a base URL.
//!
//! Also holds [`PartFile`], the write-to-a-temporary-name-then-rename guard that the local
//! backend, archive unpacking and the server's upload endpoint share.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWriteExt};

use super::{RelPath, Storage, StorageError, UploadFile, UrlMap, plan_upload};

/// A random suffix for temporary names (unique, not secret).
pub(crate) fn random_suffix() -> String {
    crate::random::unique_hex(8)
}

/// The temporary name used for `final_name` while it is being written: a hidden sibling,
/// `.<name>.part-<random>`, so it never collides with a real name.
pub fn part_path(final_path: &Path) -> PathBuf {
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    final_path.with_file_name(format!(".{name}.part-{}", random_suffix()))
}

/// A file being written under a temporary name next to its final path. [`PartFile::commit`]
/// renames it into place; dropping it uncommitted removes the temporary file, so a failed or
/// interrupted write never leaves a truncated file at the final name.
#[derive(Debug)]
pub struct PartFile {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PartFile {
    /// Creates the parent directories of `target` and an empty temporary file next to it
    /// ([`PartFile::create_blocking`] on tokio's blocking pool).
    pub async fn create(target: &Path) -> Result<(PartFile, tokio::fs::File), StorageError> {
        let owned = target.to_path_buf();
        let (part, file) = tokio::task::spawn_blocking(move || PartFile::create_blocking(&owned))
            .await
            .map_err(|e| {
                StorageError::io(
                    format!("creating a file next to {}", target.display()),
                    std::io::Error::other(e),
                )
            })??;
        Ok((part, tokio::fs::File::from_std(file)))
    }

    /// Creates the parent directories of `target` and an empty temporary file next to it,
    /// blocking the thread.
    pub fn create_blocking(target: &Path) -> Result<(PartFile, std::fs::File), StorageError> {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| StorageError::io(format!("creating {}", parent.display()), e))?;
        }
        let temp = part_path(target);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| StorageError::io(format!("creating {}", temp.display()), e))?;
        Ok((
            PartFile {
                temp,
                target: target.to_path_buf(),
                committed: false,
            },
            file,
        ))
    }

    /// The temporary path.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Renames the temporary file to the final path (atomically replacing any old file).
    pub fn commit(mut self) -> Result<(), StorageError> {
        std::fs::rename(&self.temp, &self.target).map_err(|e| {
            StorageError::io(
                format!(
                    "renaming {} to {}",
                    self.temp.display(),
                    self.target.display()
                ),
                e,
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Streams `reader` into `target` through a [`PartFile`]; returns the number of bytes.
pub async fn write_atomically(
    target: &Path,
    reader: &mut (dyn AsyncRead + Send + Unpin),
) -> Result<u64, StorageError> {
    let (part, mut file) = PartFile::create(target).await?;
    let written = tokio::io::copy(reader, &mut file)
        .await
        .map_err(|e| StorageError::io(format!("writing {}", target.display()), e))?;
    file.flush()
        .await
        .map_err(|e| StorageError::io(format!("writing {}", target.display()), e))?;
    file.sync_all()
        .await
        .map_err(|e| StorageError::io(format!("syncing {}", target.display()), e))?;
    drop(file);
    part.commit()?;
    Ok(written)
}

/// Files in a local directory, served (by something else) under `base_url`.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    root: PathBuf,
    base_url: String,
}

impl LocalStorage {
    /// A store rooted at `root` (created if missing). `~/` at its start is the home directory.
    pub fn new(root: impl AsRef<Path>, base_url: &str) -> Result<LocalStorage, StorageError> {
        let mut root = root.as_ref().to_path_buf();
        if let Ok(rest) = root.strip_prefix("~")
            && let Some(home) = std::env::var_os("HOME")
        {
            root = PathBuf::from(home).join(rest);
        }
        url::Url::parse(base_url)
            .map_err(|e| StorageError::Config(format!("base_url {base_url:?}: {e}")))?;
        std::fs::create_dir_all(&root)
            .map_err(|e| StorageError::io(format!("creating {}", root.display()), e))?;
        Ok(LocalStorage {
            root,
            base_url: base_url.to_owned(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The local path of a validated relative path.
    pub fn local_path(&self, path: &RelPath) -> PathBuf {
        path.under(&self.root)
    }
}

#[async_trait]
impl Storage for LocalStorage {
    fn base_url(&self) -> &str {
        &self.base_url
    }

    async fn upload(
        &self,
        files: Vec<UploadFile>,
        dest_path: &str,
    ) -> Result<Option<UrlMap>, StorageError> {
        for item in plan_upload(files, dest_path)?.1 {
            let mut reader = item.source.open().await?;
            write_atomically(&self.local_path(&item.path), &mut reader).await?;
        }
        Ok(None)
    }

    async fn exists(&self, dest_path: &str, remote: &str) -> Result<bool, StorageError> {
        let path = RelPath::parse(dest_path)?.join(&RelPath::parse_file(remote)?);
        match tokio::fs::metadata(self.local_path(&path)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StorageError::io(format!("checking {path}"), e)),
        }
    }

    async fn unpack_archive(&self, archive: &Path, dest_path: &str) -> Result<bool, StorageError> {
        let dest = self.local_path(&RelPath::parse(dest_path)?);
        let archive = archive.to_path_buf();
        let report = tokio::task::spawn_blocking(move || {
            super::archive::unpack_tar_gz_file(&archive, &dest)
        })
        .await
        .map_err(|e| StorageError::backend("unpack task", crate::ErrorKind::Internal, e))??;
        report.into_result()?;
        Ok(true)
    }
}
