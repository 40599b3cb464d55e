//! The demo kernel tree: a tiny git repository shaped like a Linux tree, so the whole pipeline
//! (trigger → tarball → build → tests → report) runs offline in seconds.
//!
//! The tree has what the pipeline looks at in a real kernel tree:
//! - a top-level `Makefile` with `VERSION`, `PATCHLEVEL`, `SUBLEVEL` and `EXTRAVERSION`, whose
//!   `<name>_defconfig` target writes `.config` and whose default target "builds" a kernel
//!   image (`arch/<karch>/boot/bzImage`, or `Image` for arm64) in well under a second;
//! - `kernel/configs/*.config` fragments;
//! - a kselftest-style script printing KTAP results (`tools/testing/selftests/demo/run.sh`),
//!   one of which fails, so the report has something to say;
//! - a version tag (`v6.18`) on the first commit, so `git describe` gives a kernel-like name.

use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Repository, Signature};

/// An error while creating or changing the demo tree.
#[derive(Debug, thiserror::Error)]
#[error("demo tree at {path}: {message}")]
pub struct DemoError {
    /// The repository path.
    pub path: PathBuf,
    /// What failed.
    pub message: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> DemoError {
    DemoError {
        path: path.to_owned(),
        message: e.to_string(),
    }
}

/// The kernel-style Makefile of the demo tree.
pub const MAKEFILE: &str = r##"# SPDX-License-Identifier: GPL-2.0
# A tiny stand-in for the Linux top-level Makefile: same version variables, same target names.
VERSION = 6
PATCHLEVEL = 18
SUBLEVEL = 0
EXTRAVERSION = -demo
NAME = Baby Opossum Posse

ARCH ?= x86_64
O ?= .
KARCH := $(if $(filter x86_64 i386,$(ARCH)),x86,$(ARCH))
IMAGE := $(if $(filter arm64,$(ARCH)),Image,bzImage)

.PHONY: all kernelversion kernelrelease modules clean defconfig

all: $(O)/arch/$(KARCH)/boot/$(IMAGE) modules

kernelversion:
	@echo $(VERSION).$(PATCHLEVEL).$(SUBLEVEL)$(EXTRAVERSION)

kernelrelease: kernelversion

defconfig: x86_64_defconfig

%_defconfig:
	@mkdir -p $(O)
	@echo "# Linux/$(KARCH) $(VERSION).$(PATCHLEVEL).$(SUBLEVEL)$(EXTRAVERSION) Kernel Configuration" > $(O)/.config
	@cat kernel/configs/base.config >> $(O)/.config
	@echo "  GEN     $(O)/.config ($@)"

$(O)/arch/$(KARCH)/boot/$(IMAGE): $(O)/.config init/main.c
	@mkdir -p $(dir $@)
	@echo "  CC      init/main.o"
	@echo "  LD      vmlinux"
	@cat init/main.c $(O)/.config > $(O)/vmlinux
	@echo "  BUILD   $@"
	@gzip -c $(O)/vmlinux > $@
	@echo "Kernel: $@ is ready"

$(O)/.config:
	@echo "*** No .config: run 'make <name>_defconfig' first" >&2; exit 2

modules: $(O)/.config
	@mkdir -p $(O)/modules
	@echo "demo module" > $(O)/modules/demo.ko
	@echo "  LD [M]  modules/demo.ko"

clean:
	rm -rf $(O)/.config $(O)/vmlinux $(O)/arch/*/boot $(O)/modules
"##;

/// The KTAP test script; `FLIP` decides whether `demo_flaky` passes (first commit) or fails.
fn selftest(flaky_ok: bool) -> String {
    let flaky = if flaky_ok {
        "ok 3 demo_flaky"
    } else {
        "not ok 3 demo_flaky"
    };
    format!(
        r#"#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
# Demo kselftest: prints KTAP results like tools/testing/selftests/kselftest.h does.
echo "KTAP version 1"
echo "1..4"
echo "ok 1 demo_boot"
echo "  KTAP version 1"
echo "  # Subtest: demo_math"
echo "  1..2"
echo "  ok 1 demo_math_add"
echo "  not ok 2 demo_math_overflow"
echo "not ok 2 demo_math"
echo "{flaky}"
echo "ok 4 demo_optional # SKIP not supported on this platform"
"#
    )
}

fn write(root: &Path, rel: &str, content: &str, executable: bool) -> Result<(), DemoError> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| err(root, e))?;
    }
    std::fs::write(&path, content).map_err(|e| err(root, e))?;
    #[cfg(unix)]
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| err(root, e))?;
    }
    #[cfg(not(unix))]
    let _ = executable;
    Ok(())
}

fn commit_all(repo: &Repository, root: &Path, message: &str) -> Result<String, DemoError> {
    let mut index = repo.index().map_err(|e| err(root, e))?;
    index
        .add_all(["*"], IndexAddOption::DEFAULT, None)
        .map_err(|e| err(root, e))?;
    index.write().map_err(|e| err(root, e))?;
    let tree_id = index.write_tree().map_err(|e| err(root, e))?;
    let tree = repo.find_tree(tree_id).map_err(|e| err(root, e))?;
    let sig = Signature::now("KernelCI Demo", "demo@kernelci.invalid").map_err(|e| err(root, e))?;
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
    let oid = repo
        .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .map_err(|e| err(root, e))?;
    Ok(oid.to_string())
}

/// Creates the demo tree at `dir` (a new git repository on branch `master`) and returns the
/// first commit's sha. The first commit is tagged `v6.18`.
pub fn create_tree(dir: &Path) -> Result<String, DemoError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let mut opts = git2::RepositoryInitOptions::new();
    opts.initial_head("master");
    let repo = Repository::init_opts(dir, &opts).map_err(|e| err(dir, e))?;
    write(dir, "Makefile", MAKEFILE, false)?;
    write(
        dir,
        "README",
        "A tiny kernel-style tree for the KernelCI demo.\n",
        false,
    )?;
    write(
        dir,
        "init/main.c",
        "// SPDX-License-Identifier: GPL-2.0\nint start_kernel(void) { return 0; }\n",
        false,
    )?;
    write(
        dir,
        "kernel/configs/base.config",
        "CONFIG_DEMO=y\nCONFIG_PRINTK=y\n",
        false,
    )?;
    write(
        dir,
        "kernel/configs/kselftest.config",
        "CONFIG_KSELFTEST_DEMO=y\n",
        false,
    )?;
    write(
        dir,
        "tools/testing/selftests/demo/run.sh",
        &selftest(true),
        true,
    )?;
    let sha = commit_all(&repo, dir, "Linux 6.18\n\nThe demo tree's first release.")?;
    let object = repo.revparse_single(&sha).map_err(|e| err(dir, e))?;
    let sig = Signature::now("KernelCI Demo", "demo@kernelci.invalid").map_err(|e| err(dir, e))?;
    repo.tag("v6.18", &object, &sig, "Linux 6.18", false)
        .map_err(|e| err(dir, e))?;
    Ok(sha)
}

/// Adds a commit to the demo tree that makes the `demo_flaky` test fail (a regression for the
/// tracker to find) and returns its sha.
pub fn add_regression_commit(dir: &Path) -> Result<String, DemoError> {
    let repo = Repository::open(dir).map_err(|e| err(dir, e))?;
    write(
        dir,
        "tools/testing/selftests/demo/run.sh",
        &selftest(false),
        true,
    )?;
    write(
        dir,
        "init/main.c",
        "// SPDX-License-Identifier: GPL-2.0\nint start_kernel(void) { return 1; }\n",
        false,
    )?;
    commit_all(
        &repo,
        dir,
        "init: return early from start_kernel\n\nThis breaks demo_flaky.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_tree_has_a_tagged_kernel_layout_and_a_regression_commit() {
        let dir = tempfile::tempdir().unwrap();
        let first = create_tree(dir.path()).unwrap();
        let repo = Repository::open(dir.path()).unwrap();
        let described = repo
            .describe(git2::DescribeOptions::new().describe_tags())
            .unwrap()
            .format(None)
            .unwrap();
        assert_eq!(described, "v6.18");
        assert!(
            std::fs::read_to_string(dir.path().join("Makefile"))
                .unwrap()
                .contains("PATCHLEVEL = 18")
        );
        let second = add_regression_commit(dir.path()).unwrap();
        assert_ne!(first, second);
        let head = repo.head().unwrap().peel_to_commit().unwrap();
        assert_eq!(head.id().to_string(), second);
        assert_eq!(head.parent_id(0).unwrap().to_string(), first);
        let script =
            std::fs::read_to_string(dir.path().join("tools/testing/selftests/demo/run.sh"))
                .unwrap();
        assert!(script.contains("not ok 3 demo_flaky"));
    }

    #[test]
    fn demo_makefile_builds_a_kernel_image_out_of_tree() {
        if kernelci::testsuite::peers::MAKE.find("make").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        create_tree(dir.path()).unwrap();
        let out = dir.path().join("build");
        let make = |args: &[&str]| {
            let status = std::process::Command::new("make")
                .arg("-C")
                .arg(dir.path())
                .arg(format!("O={}", out.display()))
                .args(args)
                .status()
                .unwrap();
            assert!(status.success(), "make {args:?} failed");
        };
        make(&["x86_64_defconfig"]);
        make(&[]);
        assert!(out.join("arch/x86/boot/bzImage").is_file());
        assert!(out.join("modules/demo.ko").is_file());
        let config = std::fs::read_to_string(out.join(".config")).unwrap();
        assert!(config.contains("6.18.0-demo") && config.contains("CONFIG_DEMO=y"));
    }
}
