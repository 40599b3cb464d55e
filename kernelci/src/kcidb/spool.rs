//! [`SpoolSubmitter`]: one JSON file per document in a directory, written atomically.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;

use super::{KcidbError, KcidbResult, KcidbSubmitter, SubmitReceipt, async_trait};

/// Writes each document to `<dir>/submission-<id>.json`: first to a `.json.temp` file in the
/// same directory, flushed to disk, then renamed into place (and the directory synced), so a
/// reader never sees a partial document — the layout kcidb-ng's REST server uses for its
/// spool. Ids sort by submission time.
#[derive(Debug)]
pub struct SpoolSubmitter {
    dir: PathBuf,
    counter: AtomicU64,
}

impl SpoolSubmitter {
    /// A spool in `dir` (created when missing).
    pub fn new(dir: impl Into<PathBuf>) -> KcidbResult<SpoolSubmitter> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| KcidbError::Io {
            context: format!("creating the spool directory {}", dir.display()),
            source,
        })?;
        Ok(SpoolSubmitter {
            dir,
            counter: AtomicU64::new(0),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The documents written so far (`submission-*.json`), oldest first.
    pub fn documents(&self) -> KcidbResult<Vec<PathBuf>> {
        let entries = std::fs::read_dir(&self.dir).map_err(|source| KcidbError::Io {
            context: format!("reading {}", self.dir.display()),
            source,
        })?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("submission-") && n.ends_with(".json"))
            })
            .collect();
        files.sort();
        Ok(files)
    }
}

fn write_atomically(dir: &Path, id: &str, bytes: &[u8]) -> std::io::Result<()> {
    let temp = dir.join(format!("submission-{id}.json.temp"));
    let target = dir.join(format!("submission-{id}.json"));
    let mut file = std::fs::File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temp, &target)?;
    // The rename itself must survive a crash.
    std::fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl KcidbSubmitter for SpoolSubmitter {
    async fn submit(&self, document: &Value) -> KcidbResult<SubmitReceipt> {
        let bytes = serde_json::to_vec_pretty(document)
            .map_err(|e| KcidbError::Config(format!("document does not serialise: {e}")))?;
        let micros = crate::models::Timestamp::now().micros();
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut rand = [0u8; 4];
        let _ = getrandom::fill(&mut rand);
        let id = format!("{micros:016}-{n:06}-{}", hex::encode(rand));
        let (dir, id2) = (self.dir.clone(), id.clone());
        tokio::task::spawn_blocking(move || write_atomically(&dir, &id2, &bytes))
            .await
            .map_err(|e| KcidbError::Io {
                context: "spool writer".into(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| KcidbError::Io {
                context: format!("writing a document into {}", self.dir.display()),
                source,
            })?;
        tracing::info!(dir = %self.dir.display(), %id, "document written to the spool");
        Ok(SubmitReceipt { id })
    }

    fn describe(&self) -> String {
        format!("KCIDB spool {}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn documents_land_whole_in_submission_order() {
        let dir = tempfile::tempdir().unwrap();
        let spool = SpoolSubmitter::new(dir.path().join("kcidb")).unwrap();
        let a = spool.submit(&serde_json::json!({"n": 1})).await.unwrap();
        let b = spool.submit(&serde_json::json!({"n": 2})).await.unwrap();
        assert!(a.id < b.id);
        let docs = spool.documents().unwrap();
        assert_eq!(docs.len(), 2);
        let first: Value = serde_json::from_slice(&std::fs::read(&docs[0]).unwrap()).unwrap();
        assert_eq!(first["n"], 1);
        let leftovers = std::fs::read_dir(spool.dir())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "temp"))
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
