//! `kernelci::git` against git repositories the test makes with the `git` command line and
//! serves over `file://`: ls-remote, work-tree and mirror updates, checkout, describe (checked
//! against `git describe`), the kernel version from tags and from the Makefile, tags, commit
//! message, tip of branch, and the tarball (checked against `git archive`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use kernelci::ErrorKind;
use kernelci::git::{KernelRepo, UpdateOptions, ls_remote, tarball_name};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(kernelci::testsuite::peers::GIT.expect_program("git"))
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.org")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.org")
        .env("GIT_AUTHOR_DATE", "2024-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-01-01T00:00:00Z")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

const MAKEFILE: &str = "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 5\nSUBLEVEL = 0\nEXTRAVERSION = -rc1\nNAME = Test Kernel\n\nall:\n\t@echo built\n";

/// A small kernel-like tree: Makefile, a script, a symlink, a nested file.
fn make_upstream(dir: &Path, tag: bool) -> (String, String) {
    git(dir, &["init", "-q", "-b", "master"]);
    std::fs::write(dir.join("Makefile"), MAKEFILE).unwrap();
    std::fs::create_dir_all(dir.join("scripts/deep")).unwrap();
    std::fs::write(dir.join("scripts/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::write(dir.join("scripts/deep/notes.txt"), "notes\n").unwrap();
    let mut perm = std::fs::metadata(dir.join("scripts/run.sh"))
        .unwrap()
        .permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(dir.join("scripts/run.sh"), perm).unwrap();
    std::os::unix::fs::symlink("scripts/run.sh", dir.join("run")).unwrap();
    git(dir, &["add", "-A"]);
    git(
        dir,
        &["commit", "-q", "-m", "Linux 6.5-rc1\n\nThe first one."],
    );
    let first = git(dir, &["rev-parse", "HEAD"]);
    if tag {
        git(dir, &["tag", "-a", "v6.5-rc1", "-m", "Linux 6.5-rc1"]);
        git(dir, &["tag", "light"]);
    }
    std::fs::write(dir.join("README"), "second\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "Add README"]);
    let second = git(dir, &["rev-parse", "HEAD"]);
    (first, second)
}

fn url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

#[test]
fn ls_remote_finds_the_branch_head() {
    let up = tempfile::tempdir().unwrap();
    let (_, second) = make_upstream(up.path(), true);
    assert_eq!(
        ls_remote(&url(up.path()), "master").unwrap().as_deref(),
        Some(second.as_str())
    );
    assert_eq!(ls_remote(&url(up.path()), "nope").unwrap(), None);
    let missing = ls_remote("file:///nonexistent/repo", "master").unwrap_err();
    assert!(!missing.to_string().is_empty());
}

#[test]
fn update_checkout_describe_version_and_commit_info() {
    let up = tempfile::tempdir().unwrap();
    let (first, second) = make_upstream(up.path(), true);
    let work = tempfile::tempdir().unwrap();
    let kdir = work.path().join("linux");
    let calls = Arc::new(Mutex::new(0));
    let c2 = calls.clone();
    let opts = UpdateOptions {
        progress: Some(Arc::new(move |_url, _p| *c2.lock().unwrap() += 1)),
        progress_interval: std::time::Duration::ZERO,
        ..UpdateOptions::default()
    };
    let repo = KernelRepo::update(&kdir, "mainline", &url(up.path()), "master", &opts).unwrap();
    assert!(*calls.lock().unwrap() > 0, "progress was reported");
    // Detached at mainline/master, work tree populated.
    assert_eq!(git(&kdir, &["rev-parse", "HEAD"]), second);
    assert!(kdir.join("README").exists());
    assert_eq!(
        git(&kdir, &["remote", "get-url", "mainline"]),
        url(up.path())
    );

    // describe matches git's.
    let expected = git(&kdir, &["describe", "--always", &second]);
    assert_eq!(repo.describe(&second, "mainline").unwrap(), expected);
    assert!(expected.starts_with("v6.5-rc1-1-g"), "{expected}");
    assert_eq!(repo.describe(&first, "mainline").unwrap(), "v6.5-rc1");
    assert_eq!(repo.describe(&first, "soc").unwrap(), "v6.5-rc1");

    // Version from describe.
    let v = repo.kernel_version(&second).unwrap().unwrap();
    assert_eq!((v.version, v.patchlevel, v.sublevel), (6, 5, None));
    assert_eq!(v.extra.as_deref(), Some(&expected["v6.5".len()..]));

    // Checkout.
    repo.checkout(&first[..12]).unwrap();
    assert_eq!(git(&kdir, &["rev-parse", "HEAD"]), first);
    assert!(!kdir.join("README").exists());
    let bad = repo.checkout("not-a-commit").unwrap_err();
    assert_eq!(bad.kind(), ErrorKind::Invalid);
    let absent = repo.checkout("0123456789abcdef0123").unwrap_err();
    assert_eq!(absent.kind(), ErrorKind::NotFound);

    // Commit info.
    assert_eq!(repo.tags_at(&first).unwrap(), ["light", "v6.5-rc1"]);
    assert!(repo.tags_at(&second).unwrap().is_empty());
    assert_eq!(
        repo.commit_message(&first).unwrap(),
        "Linux 6.5-rc1\n\nThe first one."
    );
    assert!(
        repo.is_tip_of_branch("mainline", "master", &second)
            .unwrap()
    );
    assert!(!repo.is_tip_of_branch("mainline", "master", &first).unwrap());

    // A new upstream commit and an untracked file: the next update brings the tree there.
    std::fs::write(up.path().join("NEW"), "x\n").unwrap();
    git(up.path(), &["add", "-A"]);
    git(up.path(), &["commit", "-q", "-m", "third"]);
    let third = git(up.path(), &["rev-parse", "HEAD"]);
    std::fs::write(kdir.join("untracked.o"), "junk").unwrap();
    let repo = KernelRepo::update(&kdir, "mainline", &url(up.path()), "master", &opts).unwrap();
    assert_eq!(git(&kdir, &["rev-parse", "HEAD"]), third);
    assert!(!kdir.join("untracked.o").exists(), "clean -fd");
    assert!(repo.is_tip_of_branch("mainline", "master", &third).unwrap());

    // The same remote at a new URL (set-url).
    let moved = tempfile::tempdir().unwrap();
    git(
        moved.path(),
        &["clone", "-q", "--bare", &url(up.path()), "."],
    );
    KernelRepo::update(&kdir, "mainline", &url(moved.path()), "master", &opts).unwrap();
    assert_eq!(
        git(&kdir, &["remote", "get-url", "mainline"]),
        url(moved.path())
    );
}

#[test]
fn version_from_the_makefile_without_tags() {
    let up = tempfile::tempdir().unwrap();
    let (_, second) = make_upstream(up.path(), false);
    let work = tempfile::tempdir().unwrap();
    let kdir = work.path().join("linux");
    let repo = KernelRepo::update(
        &kdir,
        "next",
        &url(up.path()),
        "master",
        &UpdateOptions::default(),
    )
    .unwrap();
    let describe = repo.describe(&second, "next").unwrap();
    assert_eq!(describe, git(&kdir, &["describe", "--always", &second]));
    assert_eq!(describe.len(), 7, "abbreviated hash: {describe}");
    let v = repo.kernel_version(&second).unwrap().unwrap();
    assert_eq!((v.version, v.patchlevel, v.sublevel), (6, 5, Some(0)));
    assert_eq!(v.extra.as_deref(), Some("-rc1"));
    assert_eq!(v.name.as_deref(), Some("Test Kernel"));
}

#[test]
fn a_broken_work_tree_is_recloned() {
    let up = tempfile::tempdir().unwrap();
    let (_, second) = make_upstream(up.path(), true);
    let work = tempfile::tempdir().unwrap();
    let kdir = work.path().join("linux");
    KernelRepo::update(
        &kdir,
        "mainline",
        &url(up.path()),
        "master",
        &UpdateOptions::default(),
    )
    .unwrap();
    // Corrupt it: HEAD points nowhere.
    std::fs::write(kdir.join(".git/HEAD"), "garbage\n").unwrap();
    KernelRepo::update(
        &kdir,
        "mainline",
        &url(up.path()),
        "master",
        &UpdateOptions::default(),
    )
    .unwrap();
    assert_eq!(git(&kdir, &["rev-parse", "HEAD"]), second);
    // A branch that does not exist fails (after the retry).
    let err = KernelRepo::update(
        &kdir,
        "mainline",
        &url(up.path()),
        "nope",
        &UpdateOptions::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("mainline/nope"), "{err}");
}

#[test]
fn bare_mirror_update() {
    let up = tempfile::tempdir().unwrap();
    let (first, second) = make_upstream(up.path(), true);
    let m = tempfile::tempdir().unwrap();
    let path = m.path().join("mirror.git");
    let mirror = KernelRepo::update_mirror(
        &path,
        "mainline",
        &url(up.path()),
        &UpdateOptions::default(),
    )
    .unwrap();
    assert!(mirror.repository().is_bare());
    assert_eq!(git(&path, &["rev-parse", "mainline/master"]), second);
    assert_eq!(mirror.checkout(&first).unwrap().to_string(), first);
    assert_eq!(mirror.tags_at(&first).unwrap(), ["light", "v6.5-rc1"]);
}

type Entries = BTreeMap<String, (char, u32, Vec<u8>, String)>;

fn tar_entries(bytes: &[u8]) -> Entries {
    let mut out = BTreeMap::new();
    let mut ar = tar::Archive::new(bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let kind = match e.header().entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Regular => 'f',
            tar::EntryType::XGlobalHeader => continue,
            other => panic!("unexpected {other:?}"),
        };
        let path = e.path().unwrap().to_string_lossy().into_owned();
        let mode = e.header().mode().unwrap();
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        out.insert(
            path.trim_end_matches('/').to_owned(),
            (kind, mode, data, link),
        );
    }
    out
}

#[test]
fn tarball_matches_git_archive() {
    let up = tempfile::tempdir().unwrap();
    let (first, _) = make_upstream(up.path(), true);
    let work = tempfile::tempdir().unwrap();
    let kdir = work.path().join("linux");
    let repo = KernelRepo::update(
        &kdir,
        "mainline",
        &url(up.path()),
        "master",
        &UpdateOptions::default(),
    )
    .unwrap();
    repo.checkout(&first).unwrap();
    let describe = repo.describe(&first, "mainline").unwrap();
    let name = tarball_name("mainline", "master", &describe);
    assert_eq!(name, "linux-mainline-master-v6.5-rc1");
    let out = work.path().join("out");
    let path = repo.write_tarball(&first, &out, &name).unwrap();
    assert_eq!(path, out.join(format!("{name}.tar.gz")));
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut raw)
        .unwrap();
    let ours = tar_entries(&raw);

    let theirs_raw = Command::new(kernelci::testsuite::peers::GIT.expect_program("git"))
        .args([
            "archive",
            "--format=tar",
            &format!("--prefix={name}/"),
            &first,
        ])
        .current_dir(&kdir)
        .output()
        .unwrap()
        .stdout;
    let theirs = tar_entries(&theirs_raw);
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>()
    );
    assert_eq!(ours, theirs, "same kinds, modes, contents and link targets");
    assert!(ours.contains_key(&format!("{name}/scripts/deep/notes.txt")));
    // No partial file left behind.
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1);
}
