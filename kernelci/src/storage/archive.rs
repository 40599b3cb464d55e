//! Safe `.tar.gz` unpacking into a storage directory (blocking; run it in
//! `tokio::task::spawn_blocking`).
//!
//! Every member path goes through [`RelPath`]; links and special files are refused; each
//! regular file is written to a temporary name and renamed into place.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::local::PartFile;
use super::{RelPath, StorageError};

/// What an unpack did: the shape of the kernelci-storage `/v1/archive` reply.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ArchiveReport {
    /// How many members failed.
    pub failed: u64,
    /// One message per failed member.
    pub failures: Vec<String>,
    /// The files written, relative to the destination.
    #[serde(default)]
    pub files: Vec<String>,
}

impl ArchiveReport {
    /// `Ok` when nothing failed, [`StorageError::Archive`] otherwise.
    pub fn into_result(self) -> Result<ArchiveReport, StorageError> {
        if self.failed == 0 {
            Ok(self)
        } else {
            Err(StorageError::Archive {
                failed: self.failed,
                failures: self.failures,
            })
        }
    }

    fn fail(&mut self, message: String) {
        self.failed += 1;
        self.failures.push(message);
    }
}

/// Unpacks the gzip-compressed tar file at `archive` below `dest`.
pub fn unpack_tar_gz_file(archive: &Path, dest: &Path) -> Result<ArchiveReport, StorageError> {
    let file = std::fs::File::open(archive)
        .map_err(|e| StorageError::io(format!("opening {}", archive.display()), e))?;
    unpack_tar_gz(std::io::BufReader::new(file), dest)
}

/// Unpacks a gzip-compressed tar stream below `dest`. A corrupt stream is an error; a refused
/// member (bad path, link, device) is counted in the report and the rest is still unpacked.
pub fn unpack_tar_gz(reader: impl Read, dest: &Path) -> Result<ArchiveReport, StorageError> {
    let corrupt = |e: std::io::Error| {
        StorageError::io(
            "reading the archive",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    };
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(reader));
    let mut report = ArchiveReport::default();
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader
        ) {
            continue;
        }
        let rel = match RelPath::parse(&raw_path) {
            Ok(rel) => rel,
            Err(e) => {
                report.fail(format!("{raw_path}: {e}"));
                continue;
            }
        };
        let target = rel.under(dest);
        if kind.is_dir() {
            if let Err(e) = std::fs::create_dir_all(&target) {
                report.fail(format!("{raw_path}: {e}"));
            }
            continue;
        }
        if !kind.is_file() || rel.is_root() {
            report.fail(format!("{raw_path}: unsupported entry type {kind:?}"));
            continue;
        }
        let written = PartFile::create_blocking(&target).and_then(|(part, mut file)| {
            std::io::copy(&mut entry, &mut file)
                .and_then(|_| file.sync_all())
                .map_err(|e| StorageError::io(format!("writing {}", target.display()), e))?;
            drop(file);
            part.commit()
        });
        match written {
            Ok(()) => report.files.push(rel.to_string()),
            Err(e) => report.fail(format!("{raw_path}: {e}")),
        }
    }
    Ok(report)
}
