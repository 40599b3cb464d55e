//! One service wiring: `kci up` and the `kci-*` binaries read every service's options with
//! the same `from_settings`, so the same settings give the same options both ways, and the
//! defaults cannot drift apart (the trigger polls once when `poll_period` is unset, as
//! upstream, in both).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use kernelci::config::{PipelineConfig, Settings};
use kernelci::pipeline::job_retry::JobRetry;
use kernelci::pipeline::regression::RegressionTracker;
use kernelci::pipeline::reporter::Reporter;
use kernelci::pipeline::scheduler::SchedulerOptions;
use kernelci::pipeline::service::ServiceSetup;
use kernelci::pipeline::tarball::TarballOptions;
use kernelci::pipeline::timeout::{TimeoutMode, TimeoutService};
use kernelci::pipeline::trigger::TriggerOptions;
use kernelci_bins::service::ServiceArgs;
use kernelci_bins::up::{UpOptions, UpServices, service_options};

const YAML: &str = r#"
api:
  local:
    url: http://127.0.0.1:8001
storage:
  local:
    storage_type: local
    base_url: http://127.0.0.1:8001/storage/
    path: /tmp/kci-storage
trees:
  mainline:
    url: https://git.example.org/linux.git
build_configs:
  mainline:
    tree: mainline
    branch: master
"#;

/// Every key that `kci up` would otherwise default in its own way.
const SETTINGS: &str = r#"
[DEFAULT]
api_config = "local"
storage_config = "local"

[trigger]
poll_period = 3600
startup_delay = 3
timeout = 60
trees = "!kernelci"
force = true

[tarball]
kdir = "/srv/kci/linux"
output = "/srv/kci/out"
tags_from = "https://git.example.org/stable.git,https://git.example.org/next.git"
holdoff = 300

[scheduler]
output = "/srv/kci/jobs"
image_prefix = "registry.example.org/"
promisc = true
event_owner = "alice"

[timeout]
poll_period = 30

[regression_tracker]
promisc = false

[job_retry]
promisc = false

[test_report]
smtp_host = "smtp.example.org"
smtp_port = 587
email_sender = "bot@example.org"
email_recipient = "a@example.org, b@example.org"
smtp_timeout = 20
"#;

struct Fixture {
    _dir: tempfile::TempDir,
    settings: PathBuf,
    config: PathBuf,
    data: PathBuf,
}

fn fixture(settings: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("pipeline.yaml"), YAML).unwrap();
    let file = dir.path().join("kernelci.toml");
    std::fs::write(&file, settings).unwrap();
    let data = dir.path().join("kci-data");
    Fixture {
        settings: file,
        config,
        data,
        _dir: dir,
    }
}

/// What the `kci-*` binaries read, without command-line options.
fn binaries(f: &Fixture) -> UpServices {
    let args = ServiceArgs {
        settings: Some(f.settings.clone()),
        yaml_config: vec![f.config.clone()],
        ..ServiceArgs::default()
    };
    let setup = |section: &str| args.setup(section).unwrap();
    let timeout = [
        TimeoutMode::Timeout,
        TimeoutMode::Holdoff,
        TimeoutMode::Closing,
    ]
    .into_iter()
    .map(|mode| {
        let mut s = setup("timeout");
        s.set("mode", Some(mode));
        TimeoutService::from_settings(&s).unwrap()
    })
    .collect();
    UpServices {
        trigger: TriggerOptions::from_settings(&setup("trigger")).unwrap(),
        tarball: TarballOptions::from_settings(&setup("tarball")).unwrap(),
        scheduler: SchedulerOptions::from_settings(&setup("scheduler")).unwrap(),
        timeout,
        regression: RegressionTracker::from_settings(&setup("regression_tracker")).unwrap(),
        job_retry: JobRetry::from_settings(&setup("job_retry")).unwrap(),
        reporter: Reporter::from_settings(&setup("test_report"), true).unwrap(),
    }
}

/// What `kci up` reads (no `--demo`, no command-line options).
fn kci_up(f: &Fixture, opts: UpOptions) -> UpServices {
    let settings = Settings::load(Some(&f.settings)).unwrap();
    let config = PipelineConfig::load(&[&f.config]).unwrap();
    let mut setup = ServiceSetup::new(settings, config, "DEFAULT");
    service_options(&opts, &mut setup, &f.data).unwrap()
}

fn up_options(f: &Fixture) -> UpOptions {
    UpOptions {
        config: vec![f.config.clone()],
        data: f.data.clone(),
        settings: Some(f.settings.clone()),
        ..UpOptions::default()
    }
}

fn assert_same(a: &UpServices, b: &UpServices) {
    assert_eq!(a.trigger, b.trigger);
    assert_eq!(a.tarball, b.tarball);
    assert_eq!(a.scheduler, b.scheduler);
    assert_eq!(a.timeout, b.timeout);
    assert_eq!(a.regression, b.regression);
    assert_eq!(a.job_retry, b.job_retry);
    assert_eq!(
        format!("{:?}", a.reporter.smtp()),
        format!("{:?}", b.reporter.smtp())
    );
}

#[test]
fn the_same_settings_give_the_same_options_in_kci_up_and_the_binaries() {
    let f = fixture(SETTINGS);
    let bins = binaries(&f);
    let up = kci_up(&f, up_options(&f));
    assert_same(&bins, &up);
    // The settings were read, not defaulted.
    assert_eq!(up.trigger.poll_period, Duration::from_secs(3600));
    assert_eq!(up.trigger.startup_delay, Duration::from_secs(3));
    assert_eq!(up.trigger.timeout, Duration::from_secs(3600));
    assert!(up.trigger.force && !up.trigger.trees.selects("kernelci"));
    assert_eq!(up.tarball.kdir, Path::new("/srv/kci/linux"));
    assert_eq!(up.tarball.update.extra_tag_urls.len(), 2);
    assert_eq!(up.tarball.holdoff, Duration::from_secs(300));
    assert_eq!(
        up.scheduler.output.as_deref(),
        Some(Path::new("/srv/kci/jobs"))
    );
    assert_eq!(up.scheduler.event_owner.as_deref(), Some("alice"));
    assert!(up.scheduler.promiscuous);
    assert_eq!(up.scheduler.storage_config.as_deref(), Some("local"));
    assert!(
        up.timeout
            .iter()
            .all(|t| t.poll_period() == Duration::from_secs(30))
    );
    assert_eq!(
        up.timeout.iter().map(|t| t.mode()).collect::<Vec<_>>(),
        [
            TimeoutMode::Timeout,
            TimeoutMode::Holdoff,
            TimeoutMode::Closing
        ]
    );
    assert_eq!(up.regression, RegressionTracker::new(false));
    let smtp = up.reporter.smtp().expect("smtp from [test_report]");
    assert_eq!((smtp.host.as_str(), smtp.port), ("smtp.example.org", 587));
    assert_eq!(smtp.recipients, ["a@example.org", "b@example.org"]);
    assert_eq!(smtp.timeout, Duration::from_secs(20));
}

#[test]
fn without_settings_the_trigger_polls_once_in_both_as_upstream() {
    let f = fixture("");
    let bins = binaries(&f);
    let up = kci_up(&f, up_options(&f));
    assert_eq!(bins.trigger, up.trigger);
    assert_eq!(up.trigger.poll_period, Duration::ZERO);
    assert_eq!(bins.timeout, up.timeout);
    assert_eq!(up.timeout[0].poll_period(), Duration::from_secs(60));
    assert_eq!(bins.tarball.holdoff, up.tarball.holdoff);
    // kci up's own defaults: its work directories, and no mainline tag fetch.
    assert_eq!(up.tarball.kdir, f.data.join("src"));
    assert!(up.tarball.update.extra_tag_urls.is_empty());
    assert_eq!(
        bins.tarball.update.extra_tag_urls,
        [kernelci::git::MAINLINE_URL]
    );
    assert!(up.reporter.smtp().is_none() && bins.reporter.smtp().is_none());
}

#[test]
fn kci_up_command_line_and_demo_values_override_or_default() {
    let f = fixture(SETTINGS);
    let mut opts = up_options(&f);
    opts.poll_period = Some(Duration::from_secs(5));
    opts.holdoff = Some(Duration::from_secs(7));
    let up = kci_up(&f, opts);
    assert_eq!(up.trigger.poll_period, Duration::from_secs(5));
    assert_eq!(up.tarball.holdoff, Duration::from_secs(7));
    // The demo's periods are defaults: no settings file, so they apply.
    let f = fixture("");
    let mut opts = up_options(&f);
    opts.demo = true;
    let up = kci_up(&f, opts);
    assert_eq!(up.trigger.poll_period, Duration::from_secs(10));
    assert_eq!(up.tarball.holdoff, Duration::from_secs(5));
    assert_eq!(up.timeout[1].poll_period(), Duration::from_secs(2));
}

#[test]
fn a_bad_value_is_a_configuration_error_naming_the_key() {
    let f = fixture("[trigger]\npoll_period = \"soon\"\n");
    let settings = Settings::load(Some(&f.settings)).unwrap();
    let setup = ServiceSetup::new(settings, PipelineConfig::default(), "trigger");
    let err = TriggerOptions::from_settings(&setup)
        .unwrap_err()
        .to_string();
    assert!(err.contains("poll_period"), "{err}");
}
