//! The tarball service: source tarballs for new checkouts (`spec/kernelci-pipeline.md` §1.2,
//! §3).
//!
//! For each `created` event of a `running` node of kind `checkout` named `checkout` (patchset
//! nodes, also kind `checkout`, are left to the patchset service), [`Tarball`]:
//!
//! 1. finds the build target of the node's tree and branch (or a NIPA target of the tree);
//! 2. updates the local work tree `kdir` ([`KernelRepo::update`], progress logged);
//! 3. checks the commit out, runs `describe` and finds the kernel version (tags, else the
//!    Makefile);
//! 4. writes `linux-<tree>-<branch>-<describe>.tar.gz`, uploads it to the storage root and
//!    deletes the local file;
//! 5. reads the tags, the message and whether the commit is the branch tip;
//! 6. PUTs the node `available`/`pass` with `artifacts.tarball`, `holdoff` (now + 10 min) and
//!    `data.kernel_revision.{describe, version, commit_tags, commit_message, tip_of_branch}`.
//!
//! Failures are recorded on the node: `done`/`fail` with `data.error_code`
//! `git_checkout_failure` (repository update or checkout) or `git_commit_error` (commit
//! information). Differences from upstream: a failed repository update does not exit the
//! process (the node is marked and the service goes on), and a node that is no longer
//! `running` when its event arrives (a replayed event) is left alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::service::{
    EventHandler, EventSubscription, ServiceContext, ServiceError, ServiceResult, async_trait,
};
use super::setup::ServiceSetup;
use super::trigger::BuildTarget;
use crate::client::{Api, ReceivedEvent};
use crate::git::{KernelRepo, MAINLINE_URL, UpdateOptions, tarball_name};
use crate::models::{Node, ResultValue, State, Timestamp};
use crate::storage::{Storage, UploadFile};

/// Tarball options (`[tarball]` settings).
#[derive(Clone)]
pub struct TarballOptions {
    /// The local kernel work tree (`kdir`).
    pub kdir: PathBuf,
    /// Where tarballs are written before the upload (`output`).
    pub output: PathBuf,
    /// How the work tree is fetched (extra tag sources, progress).
    pub update: UpdateOptions,
    /// How long the checkout stays `available` before the holdoff timer may close it.
    pub holdoff: Duration,
}

impl std::fmt::Debug for TarballOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TarballOptions")
            .field("kdir", &self.kdir)
            .field("output", &self.output)
            .field("update", &self.update)
            .field("holdoff", &self.holdoff)
            .finish()
    }
}

impl TarballOptions {
    /// Reads the options from `setup` (section `tarball`): `kdir` (default `data/src/linux`),
    /// `output` (default `data/output`), `tags_from` (comma-separated repositories whose tags
    /// are fetched too; default upstream's mainline, `none` for none) and `holdoff` (seconds
    /// a new checkout stays `available`, default 600 as upstream's fixed 10 minutes).
    pub fn from_settings(setup: &ServiceSetup) -> ServiceResult<TarballOptions> {
        let tags = setup
            .get(None, "tags_from")
            .unwrap_or_else(|| MAINLINE_URL.to_owned());
        Ok(TarballOptions {
            kdir: setup
                .get(None, "kdir")
                .unwrap_or_else(|| "data/src/linux".into())
                .into(),
            output: setup
                .get(None, "output")
                .unwrap_or_else(|| "data/output".into())
                .into(),
            update: UpdateOptions {
                extra_tag_urls: tags
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty() && *t != "none")
                    .map(str::to_owned)
                    .collect(),
                ..UpdateOptions::default()
            },
            holdoff: setup.seconds("holdoff", 600.0)?,
        })
    }
}

impl PartialEq for TarballOptions {
    /// Equal when every setting is (the progress callback is not compared).
    fn eq(&self, other: &TarballOptions) -> bool {
        self.kdir == other.kdir
            && self.output == other.output
            && self.update.extra_tag_urls == other.update.extra_tag_urls
            && self.update.progress_interval == other.update.progress_interval
            && self.holdoff == other.holdoff
    }
}

/// The tarball service.
#[derive(Debug, Clone)]
pub struct Tarball {
    targets: Vec<BuildTarget>,
    storage: Arc<dyn Storage>,
    options: TarballOptions,
}

/// What the git steps produced for one checkout.
#[derive(Debug, Clone, PartialEq)]
struct GitOutcome {
    describe: String,
    version: Option<crate::models::KernelVersion>,
    tarball: PathBuf,
    name: String,
}

/// A git step failure: the error code and message recorded on the node.
#[derive(Debug)]
struct Failure {
    code: &'static str,
    message: String,
}

impl Tarball {
    /// A tarball service for `targets`, uploading to `storage`.
    pub fn new(
        targets: Vec<BuildTarget>,
        storage: Arc<dyn Storage>,
        options: TarballOptions,
    ) -> Tarball {
        Tarball {
            targets,
            storage,
            options,
        }
    }

    /// The events it handles: `created` checkouts named `checkout`, still `running`.
    pub fn subscription() -> EventSubscription {
        EventSubscription::node()
            .ops(&["created"])
            .kinds(&["checkout"])
            .states(&["running"])
            .names(&["checkout"])
    }

    /// Runs until shutdown. Unless the options have a progress callback, long fetches beat
    /// the event loop's liveness component, so `/health` stays `200` during a first clone.
    pub async fn run(&self, ctx: &ServiceContext) -> ServiceResult<()> {
        let mut handler = self.clone();
        if handler.options.update.progress.is_none() {
            let (live, component) = (ctx.liveness().clone(), ctx.events_component("node"));
            handler.options.update.progress = Some(Arc::new(
                move |_url: &str, _p: &crate::git::FetchProgress| live.beat(&component),
            ));
        }
        ctx.run_events(Tarball::subscription(), &mut handler).await
    }

    /// The target for `tree`/`branch`: the exact build config, else a NIPA (URL branch) one of
    /// the same tree.
    pub fn target_for(&self, tree: &str, branch: &str) -> Option<BuildTarget> {
        self.targets
            .iter()
            .find(|t| t.tree == tree && t.branch == branch)
            .cloned()
            .or_else(|| {
                self.targets
                    .iter()
                    .find(|t| t.tree == tree && t.branch.starts_with("http"))
                    .map(|t| BuildTarget {
                        branch: branch.to_owned(),
                        ..t.clone()
                    })
            })
    }

    /// Processes one checkout node (the work of one event). Returns the updated node, or
    /// `None` when the node was not for this service.
    pub async fn process(&self, api: &dyn Api, node: Node) -> ServiceResult<Option<Node>> {
        if node.state != State::Running {
            tracing::info!(node = ?node.id, state = %node.state, "checkout already handled");
            return Ok(None);
        }
        let (Some(tree), Some(branch)) = (
            node.data_str("kernel_revision.tree").map(str::to_owned),
            node.data_str("kernel_revision.branch").map(str::to_owned),
        ) else {
            tracing::warn!(node = ?node.id, "checkout without tree/branch; ignored");
            return Ok(None);
        };
        let Some(target) = self.target_for(&tree, &branch) else {
            tracing::info!(%tree, %branch, "no build config for this tree/branch; ignored");
            return Ok(None);
        };
        let commit = node
            .data_str("kernel_revision.commit")
            .map(str::to_owned)
            .unwrap_or_default();
        tracing::info!(node = ?node.id, %tree, %branch, %commit, "making the tarball");

        let opts = self.options.clone();
        let t = target.clone();
        let c = commit.clone();
        let git = tokio::task::spawn_blocking(move || git_steps(&opts, &t, &c))
            .await
            .map_err(|e| ServiceError::Invalid(format!("git task: {e}")))?;
        let outcome = match git {
            Ok(o) => o,
            Err(f) => return self.fail(api, node, f).await.map(Some),
        };

        let file = UploadFile::from_path(&outcome.tarball, format!("{}.tar.gz", outcome.name));
        let url = self.storage.upload_single(file, "").await;
        let _ = tokio::fs::remove_file(&outcome.tarball).await;
        let url = url?;
        tracing::info!(%url, "tarball uploaded");

        let opts = self.options.clone();
        let t = target.clone();
        let c = commit.clone();
        let info = tokio::task::spawn_blocking(move || commit_info(&opts, &t, &c))
            .await
            .map_err(|e| ServiceError::Invalid(format!("git task: {e}")))?;
        let (tags, message, tip) = match info {
            Ok(i) => i,
            Err(f) => return self.fail(api, node, f).await.map(Some),
        };

        let mut node = node;
        let data = node.data.get_or_insert_with(Default::default);
        let revision = data.entry("kernel_revision").or_insert_with(|| json!({}));
        if let Some(rev) = revision.as_object_mut() {
            rev.insert("describe".into(), Value::String(outcome.describe));
            rev.insert(
                "version".into(),
                outcome
                    .version
                    .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
                    .unwrap_or(Value::Null),
            );
            rev.insert("commit_tags".into(), json!(tags));
            rev.insert("commit_message".into(), Value::String(message));
            rev.insert("tip_of_branch".into(), Value::Bool(tip));
        }
        node.state = State::Available;
        node.result = Some(ResultValue::Pass);
        node.artifacts = Some(
            json!({"tarball": url})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        );
        let holdoff = i64::try_from(self.options.holdoff.as_secs()).unwrap_or(i64::MAX);
        node.holdoff = Some(Timestamp::now().plus_secs(holdoff));
        let updated = api.update_node(&node, false).await?;
        tracing::info!(node = ?updated.id, "checkout available");
        Ok(Some(updated))
    }

    async fn fail(&self, api: &dyn Api, mut node: Node, f: Failure) -> ServiceResult<Node> {
        tracing::error!(node = ?node.id, code = f.code, error = %f.message, "checkout failed");
        node.state = State::Done;
        node.result = Some(ResultValue::Fail);
        let data = node.data.get_or_insert_with(Default::default);
        data.insert("error_code".into(), Value::String(f.code.into()));
        data.insert("error_msg".into(), Value::String(f.message));
        Ok(api.update_node(&node, false).await?)
    }
}

fn git_steps(
    opts: &TarballOptions,
    target: &BuildTarget,
    commit: &str,
) -> Result<GitOutcome, Failure> {
    let checkout_failure = |message: String| Failure {
        code: "git_checkout_failure",
        message,
    };
    let repo = KernelRepo::update(
        &opts.kdir,
        &target.tree,
        &target.url,
        &target.branch,
        &opts.update,
    )
    .map_err(|e| {
        tracing::error!(error = %e, "repository update failed");
        checkout_failure("Failed to init/update git repo".into())
    })?;
    if commit.is_empty() {
        return Err(checkout_failure(
            "Failed to checkout commit: no commit".into(),
        ));
    }
    repo.checkout(commit)
        .map_err(|e| checkout_failure(format!("Failed to checkout commit: {e}")))?;
    let describe = repo
        .describe(commit, &target.tree)
        .map_err(|e| checkout_failure(format!("Failed to describe commit: {e}")))?;
    let version = repo
        .kernel_version(commit)
        .map_err(|e| checkout_failure(format!("Failed to read the kernel version: {e}")))?;
    let name = tarball_name(&target.tree, &target.branch, &describe);
    let tarball = repo
        .write_tarball(commit, &opts.output, &name)
        .map_err(|e| checkout_failure(format!("Failed to make the tarball: {e}")))?;
    Ok(GitOutcome {
        describe,
        version,
        tarball,
        name,
    })
}

fn commit_info(
    opts: &TarballOptions,
    target: &BuildTarget,
    commit: &str,
) -> Result<(Vec<String>, String, bool), Failure> {
    let fail = |e: crate::git::GitError| Failure {
        code: "git_commit_error",
        message: format!("Failed to get commit information: {e}"),
    };
    let repo = KernelRepo::open(&opts.kdir).map_err(fail)?;
    let tags = repo.tags_at(commit).map_err(fail)?;
    let message = repo.commit_message(commit).map_err(fail)?;
    let tip = repo
        .is_tip_of_branch(&target.tree, &target.branch, commit)
        .map_err(fail)?;
    Ok((tags, message, tip))
}

#[async_trait]
impl EventHandler for Tarball {
    async fn handle(&mut self, ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()> {
        let Some(node) = ctx.event_node(event).await? else {
            return Ok(());
        };
        self.process(ctx.api(), node).await.map(|_| ())
    }
}
