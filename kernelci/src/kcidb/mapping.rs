//! The node → KCIDB mapping (`spec/kcidb.md` §1.3, §2): which nodes are sent, and the
//! checkout, build, test and dummy-build objects made from them.
//!
//! The mapping is a pure function of the node, its ancestors and the pipeline configuration:
//! [`Mapper::map`] looks ancestors up in a [`NodeIndex`] the caller filled (the bridge fetches
//! them from the API, `kci kcidb export` fetches a whole checkout tree, the benchmark builds
//! one in memory), so the same node always maps to the same objects.

use std::collections::HashMap;

use serde_json::{Map, Value};

pub use super::index::{NodeIndex, ObjectSet};
use super::objects::{Build, Checkout, Object, Resource, Status, Test, TestEnvironment};
use super::{KcidbError, KcidbResult};
use crate::config::PipelineConfig;
use crate::models::{Node, ObjectId, ResultValue, State, Timestamp};

/// The origin upstream's production bridge uses.
pub const DEFAULT_ORIGIN: &str = "maestro";

/// The `retry_counter` of the last attempt job-retry makes: only that attempt of a retried
/// job is reported.
pub const FINAL_RETRY: i64 = 3;

/// Test `error_code`s that make an incomplete test `ERROR`.
const ERROR_CODES: [&str; 5] = [
    "Canceled",
    "Infrastructure",
    "LAVATimeout",
    "MultinodeTimeout",
    "Test",
];

/// Test `error_code`s that make an incomplete test `MISS`.
const MISS_CODES: [&str; 10] = [
    "Bug",
    "Configuration",
    "invalid_job_params",
    "Job",
    "job_generation_error",
    "ObjectNotPersisted",
    "RequestBodyTooLarge",
    "submit_error",
    "Unexisting permission codename.",
    "kbuild_internal_error",
];

/// The `data.*` fields copied into a test's `misc`.
const TEST_MISC_FIELDS: [&str; 6] = [
    "test_source",
    "test_revision",
    "compiler",
    "kernel_type",
    "arch",
    "runtime",
];

/// The `data.*` fields copied into a build's `misc`.
const BUILD_MISC_FIELDS: [&str; 7] = [
    "platform",
    "runtime",
    "job_id",
    "job_context",
    "kernel_type",
    "error_code",
    "error_msg",
];

/// A runtime that is a lab (LAVA or pull-labs): its name goes into `misc.lab`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    /// Whether it is a LAVA lab (job URLs can be made).
    pub lava: bool,
    /// The lab's URL (LAVA), to build `job_url`.
    pub url: Option<String>,
}

/// What the mapping needs from the configuration.
#[derive(Debug, Clone, Default)]
pub struct MappingConfig {
    /// The KCIDB origin (`^[a-z0-9_]+$`).
    pub origin: String,
    /// The API URL for `misc.maestro_viewer` (`<url>/viewer?node_id=<id>`); none leaves it out.
    pub api_url: Option<String>,
    /// Job name → `(kind, kcidb_test_suite)`.
    pub jobs: HashMap<String, (String, Option<String>)>,
    /// Platform name → its `compatible` list.
    pub platforms: HashMap<String, Option<Vec<String>>>,
    /// Runtime name → lab (only LAVA and pull-labs runtimes).
    pub labs: HashMap<String, Lab>,
}

impl MappingConfig {
    /// A configuration for `origin` (checked against `^[a-z0-9_]+$`), without jobs,
    /// platforms or labs.
    pub fn new(origin: &str) -> KcidbResult<MappingConfig> {
        if origin.is_empty()
            || !origin
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            return Err(KcidbError::Config(format!(
                "origin {origin:?} must match ^[a-z0-9_]+$ (lowercase letters, digits, _)"
            )));
        }
        Ok(MappingConfig {
            origin: origin.to_owned(),
            ..MappingConfig::default()
        })
    }

    /// The jobs, platforms and lab runtimes of a pipeline configuration.
    pub fn with_pipeline(mut self, config: &PipelineConfig) -> MappingConfig {
        self.jobs = config
            .jobs
            .iter()
            .map(|(name, j)| (name.clone(), (j.kind.clone(), j.kcidb_test_suite.clone())))
            .collect();
        self.platforms = config
            .platforms
            .iter()
            .map(|(name, p)| (name.clone(), p.compatible.clone()))
            .collect();
        self.labs = config
            .runtimes
            .iter()
            .filter(|(_, r)| matches!(r.lab_type.as_str(), "lava" | "pull_labs"))
            .map(|(name, r)| {
                let lava = r.lab_type == "lava";
                let url = r
                    .settings
                    .get("url")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (name.clone(), Lab { lava, url })
            })
            .collect();
        self
    }

    /// With the API URL used for `misc.maestro_viewer`.
    pub fn with_api_url(mut self, url: &str) -> MappingConfig {
        self.api_url = Some(url.trim_end_matches('/').to_owned());
        self
    }
}

/// Why a node is marked processed without anything being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// A retried job's earlier attempt (only `retry_counter` 3 is reported).
    NotFinalRetry,
    /// A kind KCIDB has no object for (`regression`, ...).
    Kind(String),
    /// A checkout that timed out before its tarball was made.
    CheckoutTimedOut,
    /// A test with no kbuild or checkout above it.
    NoBuild,
    /// A test whose path cannot be made (a job without `kcidb_test_suite`, an empty path).
    NoPath,
    /// A LAVA `setup` step (path containing `setup` but not `os-release`).
    Setup(String),
    /// A test node with children (a suite): only the job and the leaf tests are sent.
    Suite,
    /// Every object made from it failed validation.
    Invalid(String),
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Skip::NotFinalRetry => write!(f, "not the final retry"),
            Skip::Kind(k) => write!(f, "kind {k} is not sent"),
            Skip::CheckoutTimedOut => write!(f, "checkout timed out"),
            Skip::NoBuild => write!(f, "no kbuild or checkout ancestor"),
            Skip::NoPath => write!(f, "path information is missing"),
            Skip::Setup(p) => write!(f, "setup step {p}"),
            Skip::Suite => write!(f, "test suite node (its leaves are sent)"),
            Skip::Invalid(e) => write!(f, "invalid: {e}"),
        }
    }
}

/// What to do with one node.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not final yet (a test not `done`, a checkout still `running`): not marked, it comes
    /// again with its next event.
    Defer,
    /// Marked processed, nothing sent.
    Skip(Skip),
    /// These objects are sent (a test can bring its dummy build).
    Send(Vec<Object>),
}

/// The node → KCIDB mapping.
#[derive(Debug, Clone)]
pub struct Mapper {
    config: MappingConfig,
}

/// KCIDB's timestamp form of a naive-UTC node time: RFC 3339 with `+00:00`.
pub fn kcidb_time(t: &Timestamp) -> String {
    format!("{t}+00:00")
}

fn opt_str(node: &Node, dotted: &str) -> Option<String> {
    node.data_str(dotted).map(str::to_owned)
}

fn is_kind(node: &Node, kinds: &[&str]) -> bool {
    kinds.contains(&node.kind.as_str())
}

/// `{name, url}` entries for `artifacts`, except `excluded` keys and non-string values; `/`
/// in names becomes `_`.
fn resources(artifacts: &Map<String, Value>, excluded: &[&str]) -> Option<Vec<Resource>> {
    let files: Vec<Resource> = artifacts
        .iter()
        .filter(|(k, _)| !excluded.contains(&k.as_str()))
        .filter_map(|(k, v)| {
            v.as_str().map(|url| Resource {
                name: k.replace('/', "_"),
                url: url.to_owned(),
            })
        })
        .collect();
    (!files.is_empty()).then_some(files)
}

impl Mapper {
    /// A mapper for `config`.
    pub fn new(config: MappingConfig) -> Mapper {
        Mapper { config }
    }

    /// The configuration.
    pub fn config(&self) -> &MappingConfig {
        &self.config
    }

    /// `<origin>:<id>`.
    pub fn kcidb_id(&self, id: impl std::fmt::Display) -> String {
        format!("{}:{id}", self.config.origin)
    }

    fn viewer(&self, id: &ObjectId) -> Option<String> {
        self.config
            .api_url
            .as_ref()
            .map(|u| format!("{u}/viewer?node_id={id}"))
    }

    /// What to do with `node` (whose ancestors should be in `index`).
    pub fn map(&self, node: &Node, index: &NodeIndex) -> Decision {
        let Some(id) = node.id else {
            return Decision::Skip(Skip::Kind("node without id".into()));
        };
        let waits_for_done = is_kind(node, &["job", "test", "process"]);
        let ready = match node.state {
            State::Done => true,
            State::Available => !waits_for_done,
            _ => false,
        };
        if !ready {
            return Decision::Defer;
        }
        if is_kind(node, &["kbuild", "job"])
            && node.result == Some(ResultValue::Incomplete)
            && node.retry_counter != FINAL_RETRY
        {
            return Decision::Skip(Skip::NotFinalRetry);
        }
        if node.result == Some(ResultValue::Fail)
            && node.name.starts_with("baseline")
            && node.retry_counter != FINAL_RETRY
        {
            return Decision::Skip(Skip::NotFinalRetry);
        }
        match node.kind.as_str() {
            "checkout" => match self.checkout(node, id) {
                Some(c) => Decision::Send(vec![Object::Checkout(c)]),
                None => Decision::Skip(Skip::CheckoutTimedOut),
            },
            "kbuild" => Decision::Send(vec![Object::Build(self.build(node, id, index))]),
            "test" | "job" | "process" => self.test(node, id, index),
            other => Decision::Skip(Skip::Kind(other.to_owned())),
        }
    }

    /// The checkout object; `None` for a checkout that timed out.
    pub fn checkout(&self, node: &Node, id: ObjectId) -> Option<Checkout> {
        if node.result == Some(ResultValue::Incomplete)
            && node.data_str("error_code") == Some("node_timeout")
        {
            return None;
        }
        let rev = |k: &str| node.data_path(&format!("kernel_revision.{k}"));
        let rev_str = |k: &str| rev(k).and_then(Value::as_str).map(str::to_owned);
        let mut misc = Map::new();
        misc.insert("submitted_by".into(), "kernelci-pipeline".into());
        Some(Checkout {
            id: self.kcidb_id(id),
            origin: self.config.origin.clone(),
            tree_name: rev_str("tree"),
            // KCIDB accepts https repositories only; other URLs are left out rather than
            // making the whole checkout invalid.
            git_repository_url: rev_str("url").filter(|u| u.starts_with("https://")),
            git_commit_hash: rev_str("commit"),
            git_commit_name: rev_str("describe"),
            git_repository_branch: rev_str("branch"),
            git_repository_branch_tip: rev("tip_of_branch").and_then(Value::as_bool),
            git_commit_tags: rev("commit_tags").and_then(Value::as_array).map(|tags| {
                tags.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            }),
            git_commit_message: rev_str("commit_message"),
            patchset_hash: Some(String::new()),
            start_time: Some(kcidb_time(&node.created)),
            misc: Some(misc),
            ..Checkout::default()
        })
    }

    /// The build object of a `kbuild` node.
    pub fn build(&self, node: &Node, id: ObjectId, index: &NodeIndex) -> Build {
        let checkout = index
            .ancestors(node)
            .find(|n| n.kind == "checkout")
            .and_then(|n| n.id)
            .or(node.parent);
        let mut status = match node.result {
            Some(ResultValue::Incomplete)
                if node.data_str("error_code") == Some("node_timeout") =>
            {
                Some(Status::Miss)
            }
            Some(ResultValue::Pass) => Some(Status::Pass),
            Some(ResultValue::Fail) => Some(Status::Fail),
            Some(ResultValue::Incomplete) => Some(Status::Error),
            _ => None,
        };
        if status != Some(Status::Miss)
            && node.data_str("error_code").is_some_and(|c| !c.is_empty())
        {
            status = Some(Status::Error);
        }
        let mut misc = Map::new();
        for k in BUILD_MISC_FIELDS {
            if let Some(v) = node.data_path(k).filter(|v| !v.is_null()) {
                misc.insert(k.into(), v.clone());
            }
        }
        if let Some(runtime) = node.data_str("runtime")
            && self.config.labs.contains_key(runtime)
        {
            misc.insert("lab".into(), runtime.into());
        }
        if let Some(v) = self.viewer(&id) {
            misc.insert("maestro_viewer".into(), v.into());
        }
        let artifacts = node.artifacts.clone().unwrap_or_default();
        let artifact = |k: &str| artifacts.get(k).and_then(Value::as_str).map(str::to_owned);
        Build {
            id: self.kcidb_id(id),
            checkout_id: checkout.map(|c| self.kcidb_id(c)).unwrap_or_default(),
            origin: self.config.origin.clone(),
            comment: opt_str(node, "kernel_revision.describe"),
            start_time: Some(kcidb_time(&node.created)),
            architecture: opt_str(node, "arch"),
            compiler: opt_str(node, "compiler"),
            config_name: opt_str(node, "config_full"),
            status,
            output_files: resources(&artifacts, &["build_log", "_config"]),
            config_url: artifact("_config"),
            log_url: artifact("build_log"),
            misc: (!misc.is_empty()).then_some(misc),
            ..Build::default()
        }
    }

    /// The dummy build for tests hanging from `checkout` directly.
    pub fn dummy_build(&self, checkout: &Node, checkout_id: ObjectId, arch: Option<&str>) -> Build {
        let id = match arch {
            Some(a) => self.kcidb_id(format!("dummy_{checkout_id}_{a}")),
            None => self.kcidb_id(format!("dummy_{checkout_id}")),
        };
        Build {
            id,
            checkout_id: self.kcidb_id(checkout_id),
            origin: self.config.origin.clone(),
            comment: Some("Dummy build for tests hanging from checkout".into()),
            start_time: Some(kcidb_time(&checkout.created)),
            architecture: arch.map(str::to_owned),
            ..Build::default()
        }
    }

    /// The dotted KCIDB test path of `node` (`spec/kcidb.md` §2.5); `None` when it cannot be
    /// made. `from_checkout`: the nearest build ancestor is the checkout (dummy build).
    pub fn test_path(&self, node: &Node, from_checkout: bool) -> Option<String> {
        let drop = if from_checkout { 1 } else { 2 };
        let mut parts: Vec<String> = node.path.iter().skip(drop).cloned().collect();
        if parts.len() >= 2 && parts[0] == parts[1] {
            parts.remove(0);
        }
        parts.retain(|p| !p.is_empty());
        let mut mapped = Vec::with_capacity(parts.len());
        for part in parts {
            match self.config.jobs.get(&part) {
                Some((kind, _)) if kind == "kbuild" => {}
                Some((_, Some(suite))) => mapped.push(suite.clone()),
                Some((_, None)) => return None,
                None => mapped.push(part),
            }
        }
        mapped.retain(|p| !p.is_empty());
        if mapped.len() >= 2 && mapped[0] == mapped[1] {
            mapped.remove(0);
        }
        let joined: String = mapped
            .join(".")
            .chars()
            .map(|c| {
                if c == '.' || c == '-' || c == '_' || c.is_ascii_alphanumeric() {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut path = String::with_capacity(joined.len());
        for c in joined.chars() {
            if !(c == '.' && path.ends_with('.')) {
                path.push(c);
            }
        }
        let path = path.trim_matches('.');
        (!path.is_empty()).then(|| path.to_owned())
    }

    /// The status of a test node.
    pub fn test_status(&self, node: &Node, index: &NodeIndex) -> Option<Status> {
        let own = node.data_str("error_code").filter(|c| !c.is_empty());
        let passed = matches!(node.result, Some(ResultValue::Pass | ResultValue::Skip));
        let inherited = || {
            index
                .ancestors(node)
                .find_map(|n| n.data_str("error_code").filter(|c| !c.is_empty()))
        };
        if own == Some("Infrastructure")
            || (own.is_none() && !passed && inherited() == Some("Infrastructure"))
        {
            return Some(Status::Error);
        }
        match node.result {
            Some(ResultValue::Incomplete) => match own {
                Some(c) if ERROR_CODES.contains(&c) => Some(Status::Error),
                Some(c) if MISS_CODES.contains(&c) => Some(Status::Miss),
                _ => None,
            },
            Some(ResultValue::Pass) => Some(Status::Pass),
            Some(ResultValue::Fail) => Some(Status::Fail),
            Some(ResultValue::Skip) => Some(Status::Skip),
            None => None,
        }
    }

    fn test(&self, node: &Node, id: ObjectId, index: &NodeIndex) -> Decision {
        if node.kind == "test" && index.has_children(&id) {
            return Decision::Skip(Skip::Suite);
        }
        let Some(build_node) = index
            .ancestors(node)
            .find(|n| n.kind == "kbuild" || n.kind == "checkout")
        else {
            return Decision::Skip(Skip::NoBuild);
        };
        let Some(build_node_id) = build_node.id else {
            return Decision::Skip(Skip::NoBuild);
        };
        let from_checkout = build_node.kind == "checkout";
        let Some(path) = self.test_path(node, from_checkout) else {
            return Decision::Skip(Skip::NoPath);
        };
        if path.contains("setup") && !path.contains("os-release") {
            return Decision::Skip(Skip::Setup(path));
        }
        let mut objects = Vec::with_capacity(2);
        let build_id = if from_checkout {
            let dummy = self.dummy_build(build_node, build_node_id, node.data_str("arch"));
            let id = dummy.id.clone();
            objects.push(Object::Build(dummy));
            id
        } else {
            self.kcidb_id(build_node_id)
        };
        let platform = node.data_str("platform");
        let runtime = node.data_str("runtime");
        let lineage = || std::iter::once(node).chain(index.ancestors(node));
        let status = self.test_status(node, index);

        let mut env_misc = Map::new();
        if let Some(p) = platform {
            env_misc.insert("platform".into(), p.into());
        }
        if let Some(m) = node.data_path("misc.measurement").filter(|v| !v.is_null()) {
            env_misc.insert("measurement".into(), m.clone());
        }
        let compatible = platform.and_then(|p| match self.config.platforms.get(p) {
            Some(c) => c.clone(),
            None => {
                tracing::debug!(node = %id, platform = p, "unknown platform: no compatible");
                None
            }
        });
        let mut misc = Map::new();
        for k in TEST_MISC_FIELDS {
            if let Some(v) = node.data_path(k).filter(|v| !v.is_null()) {
                misc.insert(k.into(), v.clone());
            }
        }
        if let Some(r) = runtime
            && self.config.labs.contains_key(r)
        {
            misc.insert("lab".into(), r.into());
        }
        if let Some(v) = self.viewer(&id) {
            misc.insert("maestro_viewer".into(), v.into());
        }
        let mut test = Test {
            id: self.kcidb_id(id),
            build_id,
            origin: self.config.origin.clone(),
            path: Some(path),
            comment: Some(format!(
                "{} on {} in {}",
                node.name,
                platform.unwrap_or("None"),
                runtime.unwrap_or("None")
            )),
            start_time: Some(kcidb_time(&node.created)),
            status,
            environment: None,
            ..Test::default()
        };
        let mut environment = TestEnvironment {
            comment: Some(format!("Runtime: {}", runtime.unwrap_or("None"))),
            compatible,
            misc: None,
        };
        if status != Some(Status::Skip) {
            if let Some(job) = lineage().find(|n| n.data_str("job_id").is_some())
                && let Some(job_id) = job.data_str("job_id")
            {
                env_misc.insert("job_id".into(), job_id.into());
                if let Some(ctx) = job.data_path("job_context").filter(|v| !v.is_null()) {
                    env_misc.insert("job_context".into(), ctx.clone());
                }
                if let Some(lab) = job
                    .data_str("runtime")
                    .and_then(|r| self.config.labs.get(r))
                    && lab.lava
                    && let Some(base) = lab.url.as_deref().and_then(|u| url::Url::parse(u).ok())
                    && let Some(host) = base.host_str()
                {
                    let port = base.port().map(|p| format!(":{p}")).unwrap_or_default();
                    env_misc.insert(
                        "job_url".into(),
                        format!("{}://{host}{port}/scheduler/job/{job_id}", base.scheme()).into(),
                    );
                }
            }
            if !passed_or_skipped(node)
                && let Some(err) = lineage().find(|n| n.data_str("error_code").is_some())
            {
                misc.insert("error_code".into(), err.data_str("error_code").into());
                if let Some(msg) = err.data_path("error_msg").filter(|v| !v.is_null()) {
                    misc.insert("error_msg".into(), msg.clone());
                }
            }
            if let Some(artifacts) = lineage()
                .filter_map(|n| n.artifacts.as_ref())
                .find(|a| !a.is_empty())
            {
                let log_key = ["lava_log", "test_log", "log"]
                    .into_iter()
                    .find(|k| artifacts.get(*k).is_some_and(Value::is_string));
                test.log_url = log_key
                    .and_then(|k| artifacts.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let mut excluded = vec!["lava_log", "test_log"];
                if let Some(k) = log_key {
                    excluded.push(k);
                }
                test.output_files = resources(artifacts, &excluded);
            }
        }
        environment.misc = (!env_misc.is_empty()).then_some(env_misc);
        test.environment = Some(environment);
        test.misc = (!misc.is_empty()).then_some(misc);
        objects.push(Object::Test(test));
        Decision::Send(objects)
    }
}

fn passed_or_skipped(node: &Node) -> bool {
    matches!(node.result, Some(ResultValue::Pass | ResultValue::Skip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::NodeKind;
    use serde_json::json;

    fn node(kind: NodeKind, name: &str, parent: Option<&Node>) -> Node {
        let mut n = Node::new(kind, name);
        n.id = Some(ObjectId::new());
        if let Some(p) = parent {
            n.parent = p.id;
            n.path = p.path.clone();
            n.path.push(name.into());
        }
        n.state = State::Done;
        n
    }

    fn mapper() -> Mapper {
        let mut c = MappingConfig::new("maestro")
            .unwrap()
            .with_api_url("http://api/");
        c.jobs.insert("kbuild-x86".into(), ("kbuild".into(), None));
        c.jobs
            .insert("baseline-x86".into(), ("job".into(), Some("boot".into())));
        c.jobs.insert("nosuite".into(), ("job".into(), None));
        Mapper::new(c)
    }

    #[test]
    fn origins_are_lowercase() {
        assert!(MappingConfig::new("Maestro").is_err());
        assert!(MappingConfig::new("").is_err());
        assert!(MappingConfig::new("kernelci_api").is_ok());
    }

    #[test]
    fn test_paths_use_the_job_suites() {
        let m = mapper();
        let mut n = Node::new(NodeKind::Test, "crit");
        n.path = [
            "checkout",
            "kbuild-x86",
            "baseline-x86",
            "baseline",
            "dmesg",
            "crit",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            m.test_path(&n, false).as_deref(),
            Some("boot.baseline.dmesg.crit")
        );
        n.path = ["checkout", "baseline-x86"].map(String::from).to_vec();
        assert_eq!(m.test_path(&n, true).as_deref(), Some("boot"));
        n.path = ["checkout", "kbuild-x86", "nosuite", "a"]
            .map(String::from)
            .to_vec();
        assert_eq!(m.test_path(&n, false), None, "a job without a suite");
        n.path = [
            "checkout",
            "kbuild-x86",
            "baseline-x86",
            "we ird..name/",
            "",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(m.test_path(&n, false).as_deref(), Some("boot.we_ird.name_"));
    }

    #[test]
    fn retries_suites_and_unfinished_tests_are_not_sent() {
        let m = mapper();
        let checkout = node(NodeKind::Checkout, "checkout", None);
        let kbuild = node(NodeKind::Kbuild, "kbuild-x86", Some(&checkout));
        let mut job = node(NodeKind::Job, "baseline-x86", Some(&kbuild));
        let suite = node(NodeKind::Test, "baseline", Some(&job));
        let leaf = node(NodeKind::Test, "login", Some(&suite));
        let mut index = NodeIndex::new();
        for n in [&checkout, &kbuild, &job, &suite, &leaf] {
            index.insert(n.clone());
        }
        assert_eq!(m.map(&suite, &index), Decision::Skip(Skip::Suite));
        let Decision::Send(objects) = m.map(&leaf, &index) else {
            panic!("leaf not sent");
        };
        let Object::Test(t) = &objects[0] else {
            panic!("{objects:?}")
        };
        assert_eq!(t.path.as_deref(), Some("boot.baseline.login"));
        assert_eq!(t.build_id, format!("maestro:{}", kbuild.id.unwrap()));
        job.result = Some(ResultValue::Incomplete);
        job.retry_counter = 1;
        assert_eq!(m.map(&job, &index), Decision::Skip(Skip::NotFinalRetry));
        job.retry_counter = 3;
        job.data = json!({"error_code": "Infrastructure"}).as_object().cloned();
        let Decision::Send(objects) = m.map(&job, &index) else {
            panic!("final retry not sent");
        };
        let Object::Test(t) = &objects[0] else {
            panic!("{objects:?}")
        };
        assert_eq!(t.status, Some(Status::Error));
        job.state = State::Running;
        assert_eq!(m.map(&job, &index), Decision::Defer);
    }
}
