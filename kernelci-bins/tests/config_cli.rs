//! `kci config validate|dump|list-files`, run as the real binary on the fixture configs, and
//! `kci up` started on a config with upstream's constructs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/config")
}

fn kci(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kci"))
        .args(args)
        .current_dir(fixtures())
        .env_remove("KCI_SETTINGS")
        .output()
        .expect("run kci")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_good_config_prints_counts() {
    let out = kci(&["config", "validate", "upstream-like"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.starts_with("config OK: 13 files\n"), "{stdout}");
    for line in [
        "  jobs           12",
        "  scheduler      11",
        "  runtimes       8",
        "  platforms      9",
        "  trees          7",
        "  build_configs  8",
        "  storage        3",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in\n{stdout}");
    }
}

#[test]
fn validate_reports_every_error_with_file_line_and_key() {
    let out = kci(&["config", "validate", "broken-schema"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let expected = [
        "broken-schema/base.yaml:13: runtimes.lava-lab: missing field `lab_type`",
        "broken-schema/base.yaml:21: build_configs.nowhere.tree: unknown tree \"no-such-tree\"",
        "broken-schema/base.yaml:23: build_configs.nowhere.frequency: invalid frequency \"2w\"",
        "broken-schema/jobs.yaml:9: jobs.kbuild-gcc-14-x86.parms: unknown field `parms`",
        "broken-schema/jobs.yaml:14: jobs.kbuild-urgent.priority: invalid priority \"urgent\"",
        "broken-schema/jobs.yaml:19: jobs.kbuild-weekly.params.frequency: invalid frequency \"1w\"",
        "broken-schema/jobs.yaml:20: jobs.kbuild-weekly.params.fragments[0]: unknown fragment \"kselftest\"",
        "broken-schema/jobs.yaml:25: jobs.kselftest-dt.rules: min_version: expected {version: <int>, patchlevel: <int>}",
        "broken-schema/jobs.yaml:28: jobs.no-template: missing field `template`",
        "broken-schema/jobs.yaml:34: jobs.kbuild-cip-bad.params.fragments[0]: invalid CIP fragment \"cip://6.12.y-cip\": no path after the branch",
        "broken-schema/scheduler.yaml:10: scheduler[1].job: unknown job \"kbuild-gcc-15-x86\"",
        "broken-schema/scheduler.yaml:18: scheduler[2].event: missing `channel`",
        "broken-schema/scheduler.yaml:24: scheduler[2].platforms[1]: unknown platform \"rpi-5\"",
    ];
    for want in expected {
        assert!(
            lines.iter().any(|l| l.starts_with(want)),
            "missing {want:?} in\n{stderr}"
        );
    }
    // Runtimes this deployment does not define are warnings, after the errors.
    let warnings = [
        "warning: broken-schema/scheduler.yaml:15: scheduler[1].runtime.name: runtime \"k8s-missing\" is not defined in this deployment: the entry is skipped",
        "warning: broken-schema/scheduler.yaml:21: scheduler[2].runtime.type: no runtime of lab_type \"lava\" is defined in this deployment: the entry is skipped",
    ];
    assert_eq!(
        lines[expected.len()..expected.len() + 2],
        warnings,
        "\n{stderr}"
    );
    assert_eq!(
        lines.len(),
        expected.len() + warnings.len() + 1,
        "one line per error and warning, plus the summary:\n{stderr}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("kci: error: 13 errors in the configuration")
    );
}

/// Upstream's own config folder uses `cip://` fragments and schedules jobs on labs a given
/// deployment does not have; both load (the second with a warning), as with upstream.
#[test]
fn validate_accepts_upstream_constructs_with_warnings() {
    let out = kci(&["config", "validate", "upstream-constructs"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("config OK: 3 files, 2 warnings\n"),
        "{stdout}"
    );
    assert!(stdout.contains("  jobs           3"), "{stdout}");
    assert!(stdout.contains("  scheduler      4"), "{stdout}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            "warning: upstream-constructs/scheduler.yaml:25: scheduler[2].runtime.name: runtime \"lava-kci-qualcomm\" is not defined in this deployment: the entry is skipped",
            "warning: upstream-constructs/scheduler.yaml:33: scheduler[3].runtime.type: no runtime of lab_type \"lava\" is defined in this deployment: the entry is skipped",
        ],
        "{stderr}"
    );
    assert!(
        !stderr.contains("cip://"),
        "CIP fragments are valid: {stderr}"
    );

    // --strict: the warnings are errors.
    let out = kci(&["config", "validate", "--strict", "upstream-constructs"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(
            "upstream-constructs/scheduler.yaml:25: scheduler[2].runtime.name: runtime"
        ),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().last(),
        Some("kci: error: 2 warnings in the configuration (--strict)")
    );
    assert!(text(&out.stdout).is_empty());

    // JSON: warnings listed apart; `ok` follows --strict.
    let out = kci(&["config", "validate", "--json", "upstream-constructs"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["errors"], serde_json::json!([]));
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2);
    assert_eq!(v["warnings"][0]["key"], "scheduler[2].runtime.name");
    assert_eq!(v["warnings"][0]["line"], 25);
    let out = kci(&[
        "config",
        "validate",
        "--json",
        "--strict",
        "upstream-constructs",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
}

#[test]
fn validate_json_and_syntax_errors() {
    let out = kci(&["config", "validate", "--json", "broken-syntax"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["ok"], false);
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v:#}");
    let kunit = errors
        .iter()
        .find(|e| e["kind"] == "schema")
        .expect("schema error");
    assert_eq!(kunit["file"], "broken-syntax/ok.yaml");
    assert_eq!(kunit["line"], 5);
    assert_eq!(kunit["key"], "jobs.kunit.priority");
    assert!(kunit["message"].as_str().unwrap().contains("0 to 100"));
    let syntax = errors
        .iter()
        .find(|e| e["kind"] == "syntax")
        .expect("syntax error");
    assert_eq!(syntax["file"], "broken-syntax/trees.yaml");
    let line = syntax["line"].as_u64().unwrap();
    assert!((5..=7).contains(&line), "{syntax}");

    let out = kci(&["config", "validate", "--json", "upstream-like"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["ok"].clone(), v["counts"]["jobs"].clone()),
        (true.into(), 12.into())
    );

    let out = kci(&["config", "validate", "no-such-dir"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).starts_with("no-such-dir: cannot read config path"));
}

#[test]
fn dump_and_list_files() {
    let out = kci(&[
        "config",
        "dump",
        "jobs.kbuild-gcc-14-x86-kcidebug.params",
        "-c",
        "upstream-like",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Merge keys resolved: the params anchor plus the job's own fragments.
    assert_eq!(v["compiler"], "gcc-14");
    assert_eq!(
        v["fragments"],
        serde_json::json!(["kselftest", "x86-board", "CONFIG_DEBUG_INFO=y"])
    );
    let out = kci(&["config", "dump", "scheduler.0.job", "-c", "upstream-like"]);
    assert_eq!(text(&out.stdout).trim(), "\"baseline-arm64\"");
    let out = kci(&["config", "dump", "jobs.nope", "-c", "upstream-like"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no such key \"nope\""));

    let out = kci(&["config", "list-files", "upstream-like"]);
    let files = text(&out.stdout);
    assert_eq!(files.lines().count(), 13, "{files}");
    assert!(!files.contains("debos"));
    assert!(
        files
            .lines()
            .next()
            .unwrap()
            .ends_with("upstream-like/api.yaml")
    );
}

/// `kci up -c <folder>` starts on a config with upstream's constructs: CIP fragments, entries
/// for runtimes not defined here (printed as warnings) and SSH storage.
#[test]
fn up_starts_on_upstream_constructs() {
    let data = tempfile::tempdir().unwrap();
    let port = kernelci::testsuite::peers::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kci"))
        .args([
            "up",
            "-c",
            "upstream-constructs",
            "--poll-period",
            "3600",
            "--quiet",
        ])
        .arg("--data")
        .arg(data.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .current_dir(fixtures())
        .env("KCI_INITIAL_PASSWORD", "up-test-password")
        .env_remove("KCI_SETTINGS")
        .env_remove("KCI_API_URL")
        .env_remove("KCI_API_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run kci up");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let started = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.starts_with("services:");
                seen.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let status = child.try_wait().expect("try_wait");
    if status.is_none() {
        child.kill().expect("stop kci up");
    }
    let _ = child.wait();
    let seen = seen.join("\n");
    assert!(started, "kci up did not start (exit {status:?}):\n{seen}");
    assert!(
        seen.contains(
            "config warning: upstream-constructs/scheduler.yaml:25: scheduler[2].runtime.name: runtime \"lava-kci-qualcomm\" is not defined"
        ),
        "{seen}"
    );
    assert!(
        seen.contains(
            "config: upstream-constructs (1 trees, 3 jobs, 1 runtimes, 4 scheduler entries)"
        ),
        "{seen}"
    );
    assert!(seen.contains("scheduler: runtimes shell"), "{seen}");
}
