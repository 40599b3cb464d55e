//! Source tarballs: `git archive --prefix=<name>/ <commit> | gzip`, written with tar and
//! flate2.

use std::io::Write;
use std::path::{Path, PathBuf};

use git2::ObjectType;

use super::{Context, GitError, GitResult, KernelRepo, io_err};

/// The tarball name (without `.tar.gz`): `linux-<tree>-<branch>-<describe>`, every `/`
/// replaced by `_`.
pub fn tarball_name(tree: &str, branch: &str, describe: &str) -> String {
    format!("linux-{tree}-{branch}-{describe}").replace('/', "_")
}

impl KernelRepo {
    /// Writes `<dir>/<name>.tar.gz`: the tree of `commit` below the prefix `<name>/`, as
    /// `git archive --format=tar --prefix=<name>/ <commit> | gzip` does (file modes 0664/0775,
    /// symbolic links kept, submodules as empty directories, every mtime the commit time).
    /// The file appears complete or not at all.
    pub fn write_tarball(&self, commit: &str, dir: &Path, name: &str) -> GitResult<PathBuf> {
        let oid = self.resolve(commit)?;
        let c = self
            .repo
            .find_commit(oid)
            .ctx(|| format!("commit {commit}"))?;
        let mtime = u64::try_from(c.time().seconds()).unwrap_or(0);
        let tree = c.tree().ctx(|| format!("tree of {commit}"))?;
        std::fs::create_dir_all(dir).map_err(io_err(format!("create {}", dir.display())))?;
        let path = dir.join(format!("{name}.tar.gz"));
        let partial = dir.join(format!(".{name}.tar.gz.part"));
        let file = std::fs::File::create(&partial)
            .map_err(io_err(format!("create {}", partial.display())))?;
        let result = (|| {
            let gz = flate2::write::GzEncoder::new(
                std::io::BufWriter::new(file),
                flate2::Compression::default(),
            );
            let mut tar = tar::Builder::new(gz);
            let prefix = format!("{name}/");
            append_dir(&mut tar, &prefix, mtime)?;
            self.append_tree(&mut tar, &tree, &prefix, mtime)?;
            let gz = tar
                .into_inner()
                .map_err(io_err(format!("write {}", partial.display())))?;
            let mut w = gz
                .finish()
                .map_err(io_err(format!("write {}", partial.display())))?;
            w.flush()
                .map_err(io_err(format!("write {}", partial.display())))?;
            Ok::<(), GitError>(())
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &path)
            .map_err(io_err(format!("rename to {}", path.display())))?;
        Ok(path)
    }

    fn append_tree<W: Write>(
        &self,
        tar: &mut tar::Builder<W>,
        tree: &git2::Tree<'_>,
        prefix: &str,
        mtime: u64,
    ) -> GitResult<()> {
        for entry in tree.iter() {
            let Ok(name) = entry.name() else {
                tracing::warn!("skipping a file whose name is not UTF-8");
                continue;
            };
            let path = format!("{prefix}{name}");
            let mode = entry.filemode();
            match entry.kind() {
                Some(ObjectType::Tree) => {
                    let sub = self
                        .repo
                        .find_tree(entry.id())
                        .ctx(|| format!("tree {path}"))?;
                    let dir = format!("{path}/");
                    append_dir(tar, &dir, mtime)?;
                    self.append_tree(tar, &sub, &dir, mtime)?;
                }
                Some(ObjectType::Blob) => {
                    let blob = self
                        .repo
                        .find_blob(entry.id())
                        .ctx(|| format!("blob {path}"))?;
                    let mut header = tar::Header::new_gnu();
                    header.set_mtime(mtime);
                    header.set_uid(0);
                    header.set_gid(0);
                    if mode == 0o120000 {
                        let target = String::from_utf8_lossy(blob.content()).into_owned();
                        header.set_entry_type(tar::EntryType::Symlink);
                        header.set_mode(0o777);
                        header.set_size(0);
                        tar.append_link(&mut header, &path, &target)
                            .map_err(io_err(format!("archive {path}")))?;
                    } else {
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_mode(if mode & 0o111 != 0 { 0o775 } else { 0o664 });
                        header.set_size(blob.content().len() as u64);
                        tar.append_data(&mut header, &path, blob.content())
                            .map_err(io_err(format!("archive {path}")))?;
                    }
                }
                // Submodules: git archive writes an empty directory.
                Some(ObjectType::Commit) => append_dir(tar, &format!("{path}/"), mtime)?,
                _ => {}
            }
        }
        Ok(())
    }
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str, mtime: u64) -> GitResult<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o775);
    header.set_mtime(mtime);
    header.set_uid(0);
    header.set_gid(0);
    header.set_size(0);
    tar.append_data(&mut header, path, std::io::empty())
        .map_err(io_err(format!("archive {path}")))
}
