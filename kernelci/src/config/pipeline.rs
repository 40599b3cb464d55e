//! The typed pipeline configuration (upstream `config/*.yaml`): loading, merging, typing each
//! section, and the errors and warnings found on the way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::entries::{ApiConfig, BuildConfig, Fragment, Tree};
use super::jobs::{JobConfig, PlatformConfig, RuntimeConfig, SchedulerEntry};
use super::rules::kind_of;
use super::source::{self, KeyPath, KeySeg, Sources};
use super::{ConfigError, ConfigErrorKind, ConfigErrors, Origin, validate};
use crate::storage::StorageConfig;

/// The whole pipeline configuration, typed.
///
/// Sections only used to hold anchors (`_anchors`), the legacy `build_environments`,
/// `build_variants` and `build_configs_defaults`, and any other top-level key are kept in
/// [`PipelineConfig::raw`] and otherwise ignored.
#[derive(Debug, Default)]
pub struct PipelineConfig {
    /// API instances by name.
    pub api: BTreeMap<String, ApiConfig>,
    /// Kernel trees by name.
    pub trees: BTreeMap<String, Tree>,
    /// Config fragments by name.
    pub fragments: BTreeMap<String, Fragment>,
    /// Build configs (tree/branch pairs to follow) by id.
    pub build_configs: BTreeMap<String, BuildConfig>,
    /// Jobs by name.
    pub jobs: BTreeMap<String, JobConfig>,
    /// Platforms by name.
    pub platforms: BTreeMap<String, PlatformConfig>,
    /// Runtimes by name.
    pub runtimes: BTreeMap<String, RuntimeConfig>,
    /// Scheduler entries, in file order.
    pub scheduler: Vec<SchedulerEntry>,
    /// Storage configs by name (`storage:` and the deprecated `storage_configs:`).
    pub storage: BTreeMap<String, StorageConfig>,
    /// The raw `rootfs:` map (`params.rootfs_ref` points into it).
    pub rootfs: Map<String, Value>,
    /// The merged document every section was read from.
    pub raw: Map<String, Value>,
    sources: Sources,
    warnings: Vec<ConfigError>,
}

impl PipelineConfig {
    /// Loads every `*.yaml` under each path (a directory, recursively, or a single file), with
    /// upstream's merge rules, and validates it. All errors are returned together; what
    /// upstream's loader and scheduler accept but this deployment cannot use (a scheduler entry
    /// for a runtime that is not defined here) is a [warning](PipelineConfig::warnings).
    pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<PipelineConfig, ConfigErrors> {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let (doc, sources, mut errors) = source::load_paths(&paths);
        let config = PipelineConfig::build(doc, sources, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Loads one YAML document given as text (`name` is used in error messages).
    pub fn from_yaml_str(name: &str, text: &str) -> Result<PipelineConfig, ConfigErrors> {
        let mut data = Map::new();
        let mut sources = Sources::default();
        let mut errors = Vec::new();
        source::add_document(&mut data, &mut sources, &mut errors, Path::new(name), text);
        let config = PipelineConfig::build(data, sources, &mut errors);
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Like [`PipelineConfig::load`], but returns the configuration with whatever could be
    /// typed, plus every error (for `kci config validate`).
    pub fn load_lenient<P: AsRef<Path>>(paths: &[P]) -> (PipelineConfig, Vec<ConfigError>) {
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let (doc, sources, mut errors) = source::load_paths(&paths);
        let config = PipelineConfig::build(doc, sources, &mut errors);
        (config, errors)
    }

    fn build(
        raw: Map<String, Value>,
        sources: Sources,
        errors: &mut Vec<ConfigError>,
    ) -> PipelineConfig {
        let mut c = PipelineConfig {
            sources,
            ..PipelineConfig::default()
        };
        c.api = typed_map(&raw, "api", &c.sources, errors);
        c.trees = typed_map(&raw, "trees", &c.sources, errors);
        c.fragments = typed_map(&raw, "fragments", &c.sources, errors);
        c.build_configs = typed_map(&raw, "build_configs", &c.sources, errors);
        c.jobs = typed_map(&raw, "jobs", &c.sources, errors);
        c.platforms = typed_map(&raw, "platforms", &c.sources, errors);
        c.runtimes = typed_map(&raw, "runtimes", &c.sources, errors);
        c.storage = typed_map(&raw, "storage_configs", &c.sources, errors);
        c.storage.extend(typed_map::<StorageConfig>(
            &raw, "storage", &c.sources, errors,
        ));
        for (name, v) in c.api.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.trees.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.fragments.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.build_configs.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.platforms.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.runtimes.iter_mut() {
            v.name = name.clone();
        }
        for (name, v) in c.jobs.iter_mut() {
            v.name = name.clone();
            self_format_job(v);
        }
        match raw.get("scheduler") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let path = KeyPath::keys(["scheduler"]).index(i);
                    if let Some(entry) =
                        typed_value::<SchedulerEntry>(item, &path, &c.sources, errors)
                    {
                        c.scheduler.push(entry);
                    }
                }
            }
            Some(other) => errors.push(c.sources.error(
                ConfigErrorKind::Schema,
                &KeyPath::keys(["scheduler"]),
                format!("expected a list of entries, found {}", kind_of(other)),
            )),
        }
        match raw.get("rootfs") {
            None | Some(Value::Null) => {}
            Some(Value::Object(m)) => c.rootfs = m.clone(),
            Some(other) => errors.push(c.sources.error(
                ConfigErrorKind::Schema,
                &KeyPath::keys(["rootfs"]),
                format!("expected a mapping, found {}", kind_of(other)),
            )),
        }
        c.raw = raw;
        let mut warnings = Vec::new();
        validate::cross_check(&c, errors, &mut warnings);
        // Errors in file order, then line order.
        errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        warnings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        c.warnings = warnings;
        c
    }

    /// Where the entry at `path` (e.g. `jobs.kbuild-gcc-14-x86` or `scheduler[3]`) was
    /// defined.
    pub fn origin(&self, path: &KeyPath) -> Option<Origin> {
        self.sources.origin(path)
    }

    /// An error about `path`, located in its file.
    pub fn error_at(
        &self,
        kind: ConfigErrorKind,
        path: &KeyPath,
        message: impl Into<String>,
    ) -> ConfigError {
        self.sources.error(kind, path, message)
    }

    /// What upstream accepts but this deployment cannot use, found while loading: scheduler
    /// entries whose runtime is not defined here (upstream's scheduler skips them too, as does
    /// ours). `kci config validate` prints them; `--strict` makes them errors.
    pub fn warnings(&self) -> &[ConfigError] {
        &self.warnings
    }

    /// The files that were read, in merge order.
    pub fn files(&self) -> Vec<&Path> {
        self.sources
            .files
            .iter()
            .map(|f| f.path.as_path())
            .collect()
    }

    /// The number of entries per section, for summaries.
    pub fn counts(&self) -> BTreeMap<&'static str, usize> {
        BTreeMap::from([
            ("api", self.api.len()),
            ("trees", self.trees.len()),
            ("fragments", self.fragments.len()),
            ("build_configs", self.build_configs.len()),
            ("jobs", self.jobs.len()),
            ("platforms", self.platforms.len()),
            ("runtimes", self.runtimes.len()),
            ("scheduler", self.scheduler.len()),
            ("storage", self.storage.len()),
            ("rootfs", self.rootfs.len()),
        ])
    }

    /// The build config following `tree`/`branch`, if any.
    pub fn build_config_for(&self, tree: &str, branch: &str) -> Option<&BuildConfig> {
        self.build_configs
            .values()
            .find(|b| b.tree == tree && b.branch == branch)
    }

    /// The platform called `name`; the bare names `shell`, `docker`, `kubernetes` and `lava`
    /// are only found when defined (as upstream's `platforms.yaml` does).
    pub fn platform(&self, name: &str) -> Option<&PlatformConfig> {
        self.platforms.get(name)
    }
}

fn self_format_job(job: &mut JobConfig) {
    let mut map = Map::new();
    map.insert("name".into(), Value::String(job.name.clone()));
    map.insert("template".into(), Value::String(job.template.clone()));
    map.insert("kind".into(), Value::String(job.kind.clone()));
    if let Some(b) = &job.base_name {
        map.insert("base_name".into(), Value::String(b.clone()));
    }
    if let Some(i) = &job.image {
        map.insert("image".into(), Value::String(i.clone()));
    }
    for (k, v) in &job.params {
        map.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if let Value::Object(p) = super::format_params(&Value::Object(job.params.clone()), &map) {
        job.params = p;
    }
}

fn typed_map<T: DeserializeOwned>(
    raw: &Map<String, Value>,
    section: &str,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    match raw.get(section) {
        None | Some(Value::Null) => {}
        Some(Value::Object(entries)) => {
            for (name, value) in entries {
                let path = KeyPath::keys([section, name.as_str()]);
                if let Some(v) = typed_value::<T>(value, &path, sources, errors) {
                    out.insert(name.clone(), v);
                }
            }
        }
        Some(other) => errors.push(sources.error(
            ConfigErrorKind::Schema,
            &KeyPath::keys([section]),
            format!("expected a mapping of entries, found {}", kind_of(other)),
        )),
    }
    out
}

fn typed_value<T: DeserializeOwned>(
    value: &Value,
    path: &KeyPath,
    sources: &Sources,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    // A bare `name:` entry (e.g. `docker:` in platforms.yaml) is an empty mapping.
    let value = if value.is_null() {
        Value::Object(Map::new())
    } else {
        value.clone()
    };
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut at = path.join(&KeyPath::from_serde(e.path()));
            let msg = e.inner().to_string();
            // `unknown field `parms`, expected ...`: point at the unknown key itself.
            if let Some(field) = msg
                .strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                && at.0.last() != Some(&KeySeg::Key(field.to_owned()))
            {
                at = at.key(field);
            }
            errors.push(sources.error(ConfigErrorKind::Schema, &at, msg));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Priority, VersionRule};

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/config")
            .join(name)
    }

    #[test]
    fn upstream_like_fixture_loads() {
        let c = match PipelineConfig::load(&[fixture("upstream-like")]) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let x86 = &c.jobs["kbuild-gcc-14-x86"];
        assert_eq!(x86.kind, "kbuild");
        assert_eq!(x86.params["arch"], "x86_64");
        assert_eq!(x86.rules.as_ref().map(|r| r.values("tree").len()), Some(3));
        let dbg = &c.jobs["kbuild-gcc-14-x86-kcidebug"];
        assert_eq!(dbg.priority, Some(Priority::Low));
        assert_eq!(
            dbg.params["compiler"], "gcc-14",
            "merged from the params anchor"
        );
        assert_eq!(
            dbg.rules.as_ref().and_then(|r| r.version("min_version")),
            Some(VersionRule {
                version: 6,
                patchlevel: 1
            })
        );
        assert_eq!(
            c.jobs["kunit-x86_64"].frequency(),
            Some(std::time::Duration::from_secs(43_200))
        );
        assert_eq!(c.platforms["docker"], PlatformConfig::bare("docker"));
        assert_eq!(c.platforms["qemu-arm64"].device_type(), "qemu");
        assert_eq!(c.platforms["qemu-arm64"].boot_method, "qemu");
        assert_eq!(
            c.platforms["imx8mp-evk"].dtb.as_ref().map(Vec::len),
            Some(2)
        );
        assert_eq!(c.runtimes["lava-collabora"].lab_type, "lava");
        assert_eq!(c.runtimes["lava-collabora"].settings["priority_min"], 40);
        assert_eq!(c.runtimes["k8s-all"].name, "k8s-all");
        assert_eq!(c.scheduler.len(), 11);
        assert_eq!(c.scheduler[0].channel(), Some("node"));
        assert_eq!(c.storage.len(), 3, "storage and storage_configs");
        assert_eq!(c.storage["docker-host"].port, 8022);
        assert_eq!(c.build_configs["next_master"].variants.len(), 1);
        assert_eq!(
            c.build_config_for("stable", "linux-6.6.y")
                .and_then(|b| b.priority),
            Some(Priority::Value(60))
        );
        assert!(
            c.files()
                .iter()
                .all(|f| !f.to_string_lossy().contains("debos"))
        );
        let origin = c
            .origin(&KeyPath::keys(["jobs", "kselftest-dt"]))
            .expect("known origin");
        assert!(origin.file.ends_with("jobs-tests.yaml"));
        assert_eq!(origin.line, Some(30));
        let origin = c
            .origin(&KeyPath::keys(["scheduler"]).index(8))
            .expect("known origin");
        assert!(origin.file.ends_with("scheduler.yaml"), "{origin:?}");
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let p = dir.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn same_path_updates_and_cross_path_deep_merge() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = tmp.path().join("a");
        let b = tmp.path().join("b");
        // Within one path: `jobs` entries are replaced whole (dict update), lists extended.
        write(
            &a,
            "1-jobs.yaml",
            "jobs:\n  j1:\n    template: one.jinja2\n    params: {x: 1, y: 1}\n  j2:\n    template: two.jinja2\nscheduler:\n- job: j1\n  event: {channel: node}\n  runtime: {name: shell}\n",
        );
        write(
            &a,
            "sub/2-jobs.yaml",
            "jobs:\n  j1:\n    template: one-bis.jinja2\n    params: {x: 2}\nruntimes:\n  shell: {lab_type: shell}\nplatforms:\n  shell:\n",
        );
        write(&a, "debos/skip.yaml", "jobs: [not, a, mapping\n");
        // Across paths: deep merge (j2 gains params, lists concatenate, scalars replaced).
        write(
            &b,
            "jobs.yaml",
            "jobs:\n  j2:\n    params: {z: 3}\n    kind: test\nscheduler:\n- job: j2\n  event: {channel: node}\n  runtime: {name: shell}\n",
        );
        let c = match PipelineConfig::load(&[&a, &b]) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.jobs["j1"].template, "one-bis.jinja2");
        assert_eq!(
            Value::Object(c.jobs["j1"].params.clone()),
            serde_json::json!({"x": 2}),
            "same-path update replaces the entry"
        );
        assert_eq!(c.jobs["j2"].template, "two.jinja2");
        assert_eq!(c.jobs["j2"].kind, "test");
        assert_eq!(c.jobs["j2"].params["z"], 3);
        assert_eq!(
            c.scheduler
                .iter()
                .map(|s| s.job.as_str())
                .collect::<Vec<_>>(),
            ["j1", "j2"]
        );
        let o = c
            .origin(&KeyPath::keys(["scheduler"]).index(1))
            .expect("origin");
        assert_eq!((o.file, o.line), (b.join("jobs.yaml"), Some(6)));
        let o = c.origin(&KeyPath::keys(["jobs", "j1"])).expect("origin");
        assert_eq!((o.file, o.line), (a.join("sub/2-jobs.yaml"), Some(2)));
        assert_eq!(c.files().len(), 3, "debos/ is skipped");
        // A missing path is an error, and loading goes on with the others.
        let (c, errors) = PipelineConfig::load_lenient(&[tmp.path().join("nope"), b.clone()]);
        assert_eq!(
            errors.len(),
            2,
            "not found, j2 without template: {errors:?}"
        );
        assert!(errors.iter().any(|e| e.kind == ConfigErrorKind::NotFound));
        assert!(
            errors
                .iter()
                .any(|e| e.key.as_deref() == Some("jobs.j2") && e.message.contains("template"))
        );
        // A runtime this deployment does not define is a warning, located all the same.
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            (w[0].line, w[0].key.as_deref()),
            (Some(8), Some("scheduler[0].runtime.name"))
        );
        assert!(c.jobs.is_empty());
    }
}
