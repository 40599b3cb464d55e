//! Git operations the pipeline needs: `ls-remote`, mirror update, checkout, `describe`, the
//! kernel version from the Makefile and the source tarball (libgit2 via `git2`, feature `git`).
//!
//! Everything here is blocking (libgit2 is); async callers run it in
//! `tokio::task::spawn_blocking`. The steps follow upstream's shell commands
//! (`spec/kernelci-pipeline.md` §2 d, §3):
//!
//! | upstream | here |
//! |---|---|
//! | `git ls-remote <url> refs/heads/<branch>` | [`ls_remote`] |
//! | `clone -o <tree>` / `remote add\|set-url` + `remote update` + `prune` + `fetch --tags` + `reset --hard; clean -fd; checkout --detach <tree>/<branch>` | [`KernelRepo::update`] |
//! | `init --bare` + the same remote sync | [`KernelRepo::update_mirror`] |
//! | `rev-parse --verify <c>^{commit}` + `checkout <c>` | [`KernelRepo::checkout`] |
//! | `describe --always [--match=v*]` | [`KernelRepo::describe`] |
//! | `describe --always --match=v[1-9]*` → version, else the Makefile | [`KernelRepo::kernel_version`] |
//! | `git archive --prefix=<name>/ HEAD \| gzip` | [`KernelRepo::write_tarball`] (tar + flate2) |
//! | `tag --points-at`, `show -s --format=%B`, `rev-parse <tree>/<branch>` | [`KernelRepo::tags_at`], [`KernelRepo::commit_message`], [`KernelRepo::is_tip_of_branch`] |

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use git2::{Direction, ObjectType, Oid, Repository};
use regex::Regex;

use crate::ErrorKind;
use crate::models::KernelVersion;

mod fetch;
mod tarball;

use fetch::fetch;
pub use fetch::{FetchProgress, MAINLINE_URL, ProgressFn, UpdateOptions};
pub use tarball::tarball_name;

/// Errors of git operations.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// libgit2 failed.
    #[error("{context}: {source}")]
    Git {
        /// What was being done.
        context: String,
        /// The libgit2 error.
        #[source]
        source: git2::Error,
    },
    /// Bad input (a commit that is not hex, a missing branch).
    #[error("{0}")]
    Invalid(String),
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl GitError {
    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            GitError::Git { source, .. } => match source.code() {
                git2::ErrorCode::NotFound => ErrorKind::NotFound,
                _ => match source.class() {
                    git2::ErrorClass::Net | git2::ErrorClass::Ssl | git2::ErrorClass::Http => {
                        ErrorKind::Unavailable
                    }
                    _ => ErrorKind::Invalid,
                },
            },
            GitError::Invalid(_) => ErrorKind::Invalid,
            GitError::Io { .. } => ErrorKind::Unavailable,
        }
    }
}

/// Result of git operations.
pub type GitResult<T> = Result<T, GitError>;

trait Context<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> GitResult<T>;
}

impl<T> Context<T> for Result<T, git2::Error> {
    fn ctx(self, context: impl FnOnce() -> String) -> GitResult<T> {
        self.map_err(|source| GitError::Git {
            context: context(),
            source,
        })
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> GitError {
    let context = context.into();
    move |source| GitError::Io { context, source }
}

/// The head commit of `refs/heads/<branch>` at `url` (`git ls-remote`), or `None` when the
/// branch does not exist there.
pub fn ls_remote(url: &str, branch: &str) -> GitResult<Option<String>> {
    let mut remote = git2::Remote::create_detached(url).ctx(|| format!("remote {url}"))?;
    let conn = remote
        .connect_auth(Direction::Fetch, None, None)
        .ctx(|| format!("ls-remote {url}"))?;
    let want = format!("refs/heads/{branch}");
    let heads = conn.list().ctx(|| format!("ls-remote {url}"))?;
    Ok(heads
        .iter()
        .find(|h| h.name() == want)
        .map(|h| h.oid().to_string()))
}

/// Checks a commit id as upstream does: 7 to 64 hex digits.
pub fn validate_commit(commit: &str) -> GitResult<()> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let ok = RE
        .get_or_init(|| Regex::new("^[0-9a-fA-F]{7,64}$").ok())
        .as_ref()
        .is_some_and(|re| re.is_match(commit));
    if ok {
        Ok(())
    } else {
        Err(GitError::Invalid(format!(
            "invalid commit id '{commit}': expected 7 to 64 hex digits"
        )))
    }
}

/// The kernel version in a `git describe` string (`v6.5-11329-g708283abf896` → 6, 5, extra
/// `-11329-g708283abf896`), with upstream's pattern `^v(\d+)\.(\d+)(\.(\d+))?(.*)?`.
pub fn parse_describe_version(describe: &str) -> Option<KernelVersion> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let re = RE
        .get_or_init(|| Regex::new(r"^v(\d+)\.(\d+)(\.(\d+))?(.*)?").ok())
        .as_ref()?;
    let caps = re.captures(describe)?;
    let extra = caps.get(5).map(|m| m.as_str()).filter(|s| !s.is_empty());
    Some(KernelVersion {
        version: caps.get(1)?.as_str().parse().ok()?,
        patchlevel: caps.get(2)?.as_str().parse().ok()?,
        sublevel: caps.get(4).and_then(|m| m.as_str().parse().ok()),
        extra: extra.map(str::to_owned),
        name: None,
    })
}

/// The kernel version in a top-level kernel Makefile (`VERSION`, `PATCHLEVEL`, `SUBLEVEL`,
/// `EXTRAVERSION`, `NAME`); `None` when `VERSION` or `PATCHLEVEL` is missing or not a number.
pub fn parse_makefile_version(makefile: &str) -> Option<KernelVersion> {
    let var = |name: &str| {
        makefile.lines().find_map(|line| {
            let (key, value) = line.split_once('=')?;
            let key = key.trim().trim_end_matches([':', '?']).trim();
            (key == name).then(|| value.trim().to_owned())
        })
    };
    Some(KernelVersion {
        version: var("VERSION")?.parse().ok()?,
        patchlevel: var("PATCHLEVEL")?.parse().ok()?,
        sublevel: var("SUBLEVEL").and_then(|s| s.parse().ok()),
        extra: var("EXTRAVERSION").filter(|s| !s.is_empty()),
        name: var("NAME").filter(|s| !s.is_empty()),
    })
}

/// A local kernel work tree (or bare mirror) opened with libgit2.
pub struct KernelRepo {
    repo: Repository,
    path: PathBuf,
}

impl fmt::Debug for KernelRepo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelRepo")
            .field("path", &self.path)
            .finish()
    }
}

impl KernelRepo {
    /// Opens an existing repository.
    pub fn open(path: &Path) -> GitResult<KernelRepo> {
        let repo = Repository::open(path).ctx(|| format!("open {}", path.display()))?;
        Ok(KernelRepo {
            repo,
            path: path.to_path_buf(),
        })
    }

    /// The underlying libgit2 repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Brings the work tree `kdir` up to date with `tree`'s `url` and leaves it detached at
    /// `<tree>/<branch>` (upstream `update_repo`): creates the repository when missing (as
    /// `clone -o <tree>`), adds or re-points the remote named `tree`, fetches it with pruning
    /// and tags, fetches the tags of [`UpdateOptions::extra_tag_urls`], then resets hard,
    /// removes untracked files and checks out `<tree>/<branch>`. When that fails on an
    /// existing repository, the directory is removed and everything is tried once more.
    pub fn update(
        kdir: &Path,
        tree: &str,
        url: &str,
        branch: &str,
        opts: &UpdateOptions,
    ) -> GitResult<KernelRepo> {
        let attempt = || -> GitResult<KernelRepo> {
            let repo = Self::open_or_init(kdir)?;
            repo.sync_remote(tree, url, opts)?;
            let target = repo.remote_branch_commit(tree, branch)?;
            repo.force_checkout(target)?;
            Ok(repo)
        };
        match attempt() {
            Ok(repo) => Ok(repo),
            Err(first) if kdir.join(".git").exists() => {
                tracing::warn!(kdir = %kdir.display(), error = %first,
                    "repository update failed; removing it and trying again");
                std::fs::remove_dir_all(kdir)
                    .map_err(io_err(format!("remove {}", kdir.display())))?;
                attempt()
            }
            Err(e) => Err(e),
        }
    }

    /// The repository with its work tree at `kdir`, created (`git init`) when missing.
    fn open_or_init(kdir: &Path) -> GitResult<KernelRepo> {
        let repo = if kdir.join(".git").exists() {
            Repository::open(kdir).ctx(|| format!("open {}", kdir.display()))?
        } else {
            std::fs::create_dir_all(kdir).map_err(io_err(format!("create {}", kdir.display())))?;
            Repository::init(kdir).ctx(|| format!("init {}", kdir.display()))?
        };
        Ok(KernelRepo {
            repo,
            path: kdir.to_path_buf(),
        })
    }

    /// Brings the bare mirror at `path` up to date with `tree`'s `url` (upstream
    /// `update_mirror`): `init --bare` when missing, then the same remote sync as
    /// [`KernelRepo::update`].
    pub fn update_mirror(
        path: &Path,
        tree: &str,
        url: &str,
        opts: &UpdateOptions,
    ) -> GitResult<KernelRepo> {
        let repo = match Repository::open_bare(path) {
            Ok(r) => r,
            Err(_) => {
                std::fs::create_dir_all(path)
                    .map_err(io_err(format!("create {}", path.display())))?;
                Repository::init_bare(path).ctx(|| format!("init --bare {}", path.display()))?
            }
        };
        let me = KernelRepo {
            repo,
            path: path.to_path_buf(),
        };
        me.sync_remote(tree, url, opts)?;
        Ok(me)
    }

    fn sync_remote(&self, tree: &str, url: &str, opts: &UpdateOptions) -> GitResult<()> {
        let exists = self.repo.find_remote(tree).is_ok();
        if exists {
            self.repo
                .remote_set_url(tree, url)
                .ctx(|| format!("remote set-url {tree} {url}"))?;
        }
        let mut remote = if exists {
            self.repo.find_remote(tree)
        } else {
            self.repo.remote(tree, url)
        }
        .ctx(|| format!("remote {tree} {url}"))?;
        // `remote update` + `remote prune` + `fetch --tags <url>`: the configured refspecs,
        // pruning stale remote branches, with every tag.
        let none: [&str; 0] = [];
        fetch(&mut remote, &none, true, true, opts)?;
        for extra in &opts.extra_tag_urls {
            let outcome = self
                .repo
                .remote_anonymous(extra)
                .ctx(|| format!("remote {extra}"))
                .and_then(|mut r| fetch(&mut r, &["+refs/tags/*:refs/tags/*"], false, false, opts));
            if let Err(e) = outcome {
                tracing::warn!(url = %extra, error = %e, "could not fetch tags");
            }
        }
        Ok(())
    }

    fn remote_branch_commit(&self, tree: &str, branch: &str) -> GitResult<Oid> {
        let name = format!("refs/remotes/{tree}/{branch}");
        let reference = self
            .repo
            .find_reference(&name)
            .ctx(|| format!("branch {tree}/{branch}"))?;
        reference
            .peel_to_commit()
            .map(|c| c.id())
            .ctx(|| format!("branch {tree}/{branch}"))
    }

    fn force_checkout(&self, oid: Oid) -> GitResult<()> {
        let object = self
            .repo
            .find_object(oid, None)
            .ctx(|| format!("object {oid}"))?;
        let mut cb = git2::build::CheckoutBuilder::new();
        cb.force().remove_untracked(true);
        self.repo
            .checkout_tree(&object, Some(&mut cb))
            .ctx(|| format!("checkout {oid}"))?;
        self.repo
            .set_head_detached(oid)
            .ctx(|| format!("detach HEAD at {oid}"))
    }

    /// Resolves a commit id (validated: 7 to 64 hex digits) to a commit in this repository.
    pub fn resolve(&self, commit: &str) -> GitResult<Oid> {
        validate_commit(commit)?;
        let object = self
            .repo
            .revparse_single(&format!("{commit}^{{commit}}"))
            .ctx(|| format!("rev-parse --verify {commit}^{{commit}}"))?;
        Ok(object.id())
    }

    /// Checks `commit` out (detached HEAD, work tree forced to it, untracked files removed).
    pub fn checkout(&self, commit: &str) -> GitResult<Oid> {
        let oid = self.resolve(commit)?;
        if !self.repo.is_bare() {
            self.force_checkout(oid)?;
        }
        Ok(oid)
    }

    /// The abbreviation length `git` would choose here (`core.abbrev`, or `auto`: half the
    /// bits of the object count, at least 7 — 12 on a Linux clone).
    pub fn abbrev_len(&self) -> u32 {
        if let Ok(cfg) = self.repo.config()
            && let Ok(n) = cfg.get_i32("core.abbrev")
            && (4..=40).contains(&n)
        {
            return n.unsigned_abs();
        }
        let count = approximate_object_count(self.repo.path());
        if count == 0 {
            return 7;
        }
        let bits = 64 - count.leading_zeros(); // msb + 1
        bits.div_ceil(2).max(7)
    }

    fn describe_with(&self, commit: &str, pattern: Option<&str>) -> GitResult<String> {
        let oid = self.resolve(commit)?;
        let object = self
            .repo
            .find_object(oid, None)
            .ctx(|| format!("object {commit}"))?;
        let mut opts = git2::DescribeOptions::new();
        opts.show_commit_oid_as_fallback(true);
        if let Some(p) = pattern {
            opts.pattern(p);
        }
        let mut fmt = git2::DescribeFormatOptions::new();
        fmt.abbreviated_size(self.abbrev_len());
        object
            .describe(&opts)
            .and_then(|d| d.format(Some(&fmt)))
            .ctx(|| format!("describe {commit}"))
    }

    /// `git describe --always` of `commit` (with `--match=v*` for the tree `soc`), with `/`
    /// replaced by `_`.
    pub fn describe(&self, commit: &str, tree: &str) -> GitResult<String> {
        let pattern = (tree == "soc").then_some("v*");
        Ok(self.describe_with(commit, pattern)?.replace('/', "_"))
    }

    /// The kernel version of `commit`: from `git describe --always --match=v[1-9]*` when a
    /// release tag is reachable, otherwise from the top-level Makefile of the commit.
    pub fn kernel_version(&self, commit: &str) -> GitResult<Option<KernelVersion>> {
        let described = self.describe_with(commit, Some("v[1-9]*"))?;
        if let Some(v) = parse_describe_version(&described) {
            return Ok(Some(v));
        }
        self.makefile_version(commit)
    }

    /// The version in the top-level Makefile of `commit` (`None` without one).
    pub fn makefile_version(&self, commit: &str) -> GitResult<Option<KernelVersion>> {
        let oid = self.resolve(commit)?;
        let tree = self
            .repo
            .find_commit(oid)
            .and_then(|c| c.tree())
            .ctx(|| format!("tree of {commit}"))?;
        let Some(entry) = tree.get_name("Makefile") else {
            return Ok(None);
        };
        let blob = self
            .repo
            .find_blob(entry.id())
            .ctx(|| format!("Makefile of {commit}"))?;
        Ok(parse_makefile_version(&String::from_utf8_lossy(
            blob.content(),
        )))
    }

    /// The tags pointing at `commit` (lightweight, or annotated tags of it), sorted by name
    /// (`git tag --points-at`).
    pub fn tags_at(&self, commit: &str) -> GitResult<Vec<String>> {
        let oid = self.resolve(commit)?;
        let names = self.repo.tag_names(None).ctx(|| "tag -l".to_owned())?;
        let mut out: Vec<String> = names
            .iter()
            .filter_map(|n| n.ok().flatten())
            .filter(|name| {
                self.repo
                    .find_reference(&format!("refs/tags/{name}"))
                    .and_then(|r| r.peel(ObjectType::Commit))
                    .is_ok_and(|o| o.id() == oid)
            })
            .map(str::to_owned)
            .collect();
        out.sort();
        Ok(out)
    }

    /// The message of `commit`, stripped of surrounding white space (`show -s --format=%B`).
    pub fn commit_message(&self, commit: &str) -> GitResult<String> {
        let oid = self.resolve(commit)?;
        let c = self
            .repo
            .find_commit(oid)
            .ctx(|| format!("commit {commit}"))?;
        Ok(String::from_utf8_lossy(c.message_bytes()).trim().to_owned())
    }

    /// Whether `commit` is the head of `<tree>/<branch>`.
    pub fn is_tip_of_branch(&self, tree: &str, branch: &str, commit: &str) -> GitResult<bool> {
        let oid = self.resolve(commit)?;
        Ok(self.remote_branch_commit(tree, branch)? == oid)
    }
}

/// The number of objects in a repository's packs plus its loose objects (git's estimate for
/// the abbreviation length). `git_dir` is the `.git` directory (or the bare repository).
fn approximate_object_count(git_dir: &Path) -> u64 {
    let objects = git_dir.join("objects");
    let mut count = 0u64;
    if let Ok(entries) = std::fs::read_dir(objects.join("pack")) {
        for entry in entries.flatten() {
            let p = entry.path();
            if p.extension().is_some_and(|e| e == "idx") {
                count += pack_index_count(&p).unwrap_or(0);
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(&objects) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.len() == 2 && name.chars().all(|c| c.is_ascii_hexdigit()) {
                count += std::fs::read_dir(entry.path())
                    .map(|d| d.count() as u64)
                    .unwrap_or(0);
            }
        }
    }
    count
}

/// The object count of a pack index: the last fan-out entry (v2: after an 8-byte header).
fn pack_index_count(idx: &Path) -> Option<u64> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(idx).ok()?;
    let mut head = [0u8; 8];
    f.read_exact(&mut head).ok()?;
    let offset = if head[..4] == [0xff, b't', b'O', b'c'] {
        8 + 255 * 4
    } else {
        255 * 4
    };
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut n = [0u8; 4];
    f.read_exact(&mut n).ok()?;
    Some(u64::from(u32::from_be_bytes(n)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_versions() {
        let v = parse_describe_version("v6.5-11329-g708283abf896").unwrap();
        assert_eq!((v.version, v.patchlevel, v.sublevel), (6, 5, None));
        assert_eq!(v.extra.as_deref(), Some("-11329-g708283abf896"));
        let v = parse_describe_version("v6.1.55").unwrap();
        assert_eq!(v.sublevel, Some(55));
        assert_eq!(v.extra, None);
        let v = parse_describe_version("v6.6-rc3").unwrap();
        assert_eq!(v.extra.as_deref(), Some("-rc3"));
        assert!(parse_describe_version("708283abf896").is_none());
        assert!(parse_describe_version("next-20240101").is_none());
    }

    #[test]
    fn makefile_versions() {
        let mk = "# SPDX\nVERSION = 6\nPATCHLEVEL = 7\nSUBLEVEL = 0\nEXTRAVERSION = -rc2\nNAME = Hurr durr I'ma ninja sloth\n\nall:\n\t@echo ok\n";
        let v = parse_makefile_version(mk).unwrap();
        assert_eq!((v.version, v.patchlevel, v.sublevel), (6, 7, Some(0)));
        assert_eq!(v.extra.as_deref(), Some("-rc2"));
        assert_eq!(v.name.as_deref(), Some("Hurr durr I'ma ninja sloth"));
        let v =
            parse_makefile_version("VERSION = 5\nPATCHLEVEL = 10\nSUBLEVEL = 1\nEXTRAVERSION =\n")
                .unwrap();
        assert_eq!(v.extra, None);
        assert!(parse_makefile_version("all:\n").is_none());
        assert!(parse_makefile_version("VERSION = x\nPATCHLEVEL = 1\n").is_none());
    }

    #[test]
    fn names_and_commits() {
        assert_eq!(
            tarball_name("mainline", "for-next/core", "v6.5-1-gabc"),
            "linux-mainline-for-next_core-v6.5-1-gabc"
        );
        assert!(validate_commit("708283abf896").is_ok());
        assert!(validate_commit("abc").is_err());
        assert!(validate_commit("708283abf896; rm -rf /").is_err());
        assert_eq!(
            validate_commit("zzzzzzz").unwrap_err().kind(),
            ErrorKind::Invalid
        );
    }
}
