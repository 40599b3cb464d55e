//! The trigger service: new revisions on kernel trees become checkout nodes
//! (`spec/kernelci-pipeline.md` §1.1, §2).
//!
//! Each pass goes through the [`BuildTarget`]s (a build config with its tree's URL), in the
//! order of the `trees` section then the build configs, and for each one:
//!
//! 1. skips trees excluded by `--trees` ([`TreeSelection`]);
//! 2. unless forced, skips a target whose `frequency` says a checkout of the same tree and
//!    branch was made too recently;
//! 3. resolves a NIPA branch URL (`branch: https://...` → the latest branch in its JSON);
//! 4. asks the remote for the branch head (`git ls-remote`);
//! 5. skips the commit when three or more checkouts of it ended `incomplete`, or when a
//!    checkout of it exists (unless forced);
//! 6. creates the `checkout` node (`running`, `timeout`, `treeid`, `submitter`,
//!    `data.kernel_revision`, `data.architecture_filter`).
//!
//! Differences from upstream: the "exists" and "frequency" counts use the submitter this
//! trigger writes (upstream always counts `service:pipeline`, so a trigger running as any
//! other user never saw its own checkouts).

use std::time::Duration;

use serde_json::{Map, Value, json};
use sha2::Digest;

use super::service::{SERVICE_PIPELINE, ServiceContext, ServiceError, ServiceResult};
use super::setup::ServiceSetup;
use crate::client::Api;
use crate::config::PipelineConfig;
use crate::models::{Node, NodeKind, Timestamp, UserRead};

/// One build config to poll, with its tree's URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildTarget {
    /// The build config name.
    pub build_config: String,
    /// The tree name.
    pub tree: String,
    /// The tree URL.
    pub url: String,
    /// The branch (or a NIPA JSON URL).
    pub branch: String,
    /// `data.architecture_filter` of the checkouts, when set.
    pub architectures: Option<Vec<String>>,
    /// `[Nd][Nh][Nm]`: at most one checkout per period.
    pub frequency: Option<String>,
}

impl BuildTarget {
    /// Every build config of `config`, in upstream's order: by tree (the `trees` keys), then
    /// by build config name. Build configs whose tree is not defined are left out.
    pub fn from_config(config: &PipelineConfig) -> Vec<BuildTarget> {
        let mut out = Vec::new();
        for (tree_name, tree) in &config.trees {
            for (name, bc) in &config.build_configs {
                if bc.tree != *tree_name {
                    continue;
                }
                out.push(BuildTarget {
                    build_config: name.clone(),
                    tree: tree_name.clone(),
                    url: tree.url.clone(),
                    branch: bc.branch.clone(),
                    architectures: bc.architectures.clone(),
                    frequency: bc.frequency.clone(),
                });
            }
        }
        out
    }
}

/// The `--trees` option: `a,b` polls only those trees, `!a,b` all but those; a value of one
/// character or less selects everything (as upstream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeSelection {
    exclude: bool,
    names: Vec<String>,
}

impl TreeSelection {
    /// Parses the option.
    pub fn parse(option: Option<&str>) -> TreeSelection {
        let Some(s) = option.map(str::trim).filter(|s| s.len() > 1) else {
            return TreeSelection::default();
        };
        let (exclude, list) = match s.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        TreeSelection {
            exclude,
            names: list
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Whether `tree` is polled.
    pub fn selects(&self, tree: &str) -> bool {
        if self.names.is_empty() && !self.exclude {
            return true;
        }
        let listed = self.names.iter().any(|n| n == tree);
        if self.exclude { !listed } else { listed }
    }
}

/// Trigger options (`[trigger]` settings and flags).
#[derive(Debug, Clone, PartialEq)]
pub struct TriggerOptions {
    /// `--trees`.
    pub trees: TreeSelection,
    /// `--force`: ignore the frequency and the existing check.
    pub force: bool,
    /// The checkout timeout (upstream `timeout`, in minutes).
    pub timeout: Duration,
    /// Time between passes; zero runs one pass.
    pub poll_period: Duration,
    /// Wait before the first pass.
    pub startup_delay: Duration,
}

impl Default for TriggerOptions {
    fn default() -> Self {
        TriggerOptions {
            trees: TreeSelection::default(),
            force: false,
            timeout: Duration::from_secs(180 * 60),
            poll_period: Duration::ZERO,
            startup_delay: Duration::ZERO,
        }
    }
}

impl TriggerOptions {
    /// Reads the options from `setup` (section `trigger`; overrides, then `[trigger]`, then
    /// `[DEFAULT]`): `trees`, `force`, `timeout` (minutes, default 180), `poll_period`
    /// (seconds; 0 or unset runs one pass and stops, as upstream) and `startup_delay`
    /// (seconds, default 0).
    pub fn from_settings(setup: &ServiceSetup) -> ServiceResult<TriggerOptions> {
        let minutes = setup.get_parsed::<f64>(None, "timeout")?.unwrap_or(180.0);
        let timeout = Duration::try_from_secs_f64(minutes.max(0.0) * 60.0).map_err(|_| {
            ServiceError::Config(format!(
                "[{}] timeout = {minutes}: not a number of minutes",
                setup.section
            ))
        })?;
        Ok(TriggerOptions {
            trees: TreeSelection::parse(setup.get(None, "trees").as_deref()),
            force: setup.flag(false, "force")?,
            timeout,
            poll_period: setup.seconds("poll_period", 0.0)?,
            startup_delay: setup.seconds("startup_delay", 0.0)?,
        })
    }
}

/// What a pass did with one target.
#[derive(Debug, Clone, PartialEq)]
pub enum TriggerOutcome {
    /// A checkout node was created.
    Created(Box<Node>),
    /// The tree is not selected.
    NotSelected,
    /// A checkout of this tree and branch is younger than the frequency.
    TooRecent,
    /// The branch has no head (missing branch, unreachable remote).
    NoHead,
    /// A checkout of the commit exists.
    Exists(String),
    /// Three or more checkouts of the commit ended `incomplete`.
    TooManyIncomplete(String),
}

/// The trigger service.
#[derive(Debug, Clone)]
pub struct Trigger {
    targets: Vec<BuildTarget>,
    options: TriggerOptions,
}

impl Trigger {
    /// A trigger polling `targets`.
    pub fn new(targets: Vec<BuildTarget>, options: TriggerOptions) -> Trigger {
        Trigger { targets, options }
    }

    /// The submitter value of the nodes this user creates: `service:pipeline` for the
    /// production and staging users, `user:<email>` otherwise (upstream's rule).
    pub fn submitter(me: &UserRead) -> String {
        if me.username == "staging.kernelci.org" || me.username == "production" {
            SERVICE_PIPELINE.to_owned()
        } else {
            format!("user:{}", me.email)
        }
    }

    /// Runs until shutdown: `whoami`, the startup delay, then a pass every poll period (one
    /// pass when the period is zero).
    pub async fn run(&self, ctx: &ServiceContext) -> ServiceResult<()> {
        let me = ctx.api().whoami().await?;
        tracing::info!(user = %me.username, targets = self.targets.len(), "trigger starting");
        if !self.options.startup_delay.is_zero() && !ctx.sleep(self.options.startup_delay).await {
            return Ok(());
        }
        ctx.run_periodic("trigger", self.options.poll_period, || async {
            self.pass(ctx.api(), &me).await.map(|_| ())
        })
        .await
    }

    /// One pass over every target.
    pub async fn pass(
        &self,
        api: &dyn Api,
        me: &UserRead,
    ) -> ServiceResult<Vec<(String, TriggerOutcome)>> {
        let mut out = Vec::with_capacity(self.targets.len());
        for target in &self.targets {
            let outcome = self.check(api, me, target).await?;
            match &outcome {
                TriggerOutcome::Created(node) => tracing::info!(
                    build_config = %target.build_config,
                    node = %node.id.map(|i| i.to_string()).unwrap_or_default(),
                    commit = %node.data_str("kernel_revision.commit").unwrap_or(""),
                    "new revision: checkout created"),
                other => tracing::debug!(build_config = %target.build_config, ?other, "skipped"),
            }
            out.push((target.build_config.clone(), outcome));
        }
        Ok(out)
    }

    async fn check(
        &self,
        api: &dyn Api,
        me: &UserRead,
        target: &BuildTarget,
    ) -> ServiceResult<TriggerOutcome> {
        if !self.options.trees.selects(&target.tree) {
            return Ok(TriggerOutcome::NotSelected);
        }
        let submitter = Trigger::submitter(me);
        if !self.options.force
            && let Some(freq) = target.frequency.as_deref()
        {
            match crate::config::parse_frequency(freq) {
                Ok(period) if period >= Duration::from_secs(60) => {
                    // Capped at 100 years: a longer period means "once", and the cast must
                    // not wrap into a future instant.
                    let secs = period.as_secs().min(100 * 365 * 86_400);
                    let since = Timestamp::now().plus_secs(-i64::try_from(secs).unwrap_or(0));
                    let since = since.to_string();
                    let n = api
                        .count_nodes(&[
                            ("kind", "checkout"),
                            ("data.kernel_revision.tree", &target.tree),
                            ("data.kernel_revision.branch", &target.branch),
                            ("owner", &me.username),
                            ("submitter", &submitter),
                            ("created__gte", &since),
                        ])
                        .await?;
                    if n > 0 {
                        return Ok(TriggerOutcome::TooRecent);
                    }
                }
                Ok(_) => tracing::warn!(build_config = %target.build_config, frequency = freq,
                    "frequency below one minute ignored"),
                Err(e) => tracing::warn!(build_config = %target.build_config, frequency = freq,
                    error = %e, "bad frequency ignored"),
            }
        }
        let branch = if target.branch.starts_with("http") {
            match nipa_branch(&target.branch).await {
                Some(b) => b,
                None => return Ok(TriggerOutcome::NoHead),
            }
        } else {
            target.branch.clone()
        };
        let (url, br) = (target.url.clone(), branch.clone());
        let head = tokio::task::spawn_blocking(move || crate::git::ls_remote(&url, &br))
            .await
            .map_err(|e| ServiceError::Invalid(format!("ls-remote task: {e}")))?;
        let commit = match head {
            Ok(Some(c)) => c,
            Ok(None) => {
                tracing::warn!(tree = %target.tree, %branch, "branch not found on the remote");
                return Ok(TriggerOutcome::NoHead);
            }
            Err(e) => {
                tracing::warn!(tree = %target.tree, %branch, error = %e, "ls-remote failed");
                return Ok(TriggerOutcome::NoHead);
            }
        };
        let base = [
            ("kind", "checkout"),
            ("data.kernel_revision.commit", commit.as_str()),
            ("owner", me.username.as_str()),
            ("submitter", submitter.as_str()),
        ];
        let n = api.count_nodes(&base).await?;
        let mut q = base.to_vec();
        q.push(("result", "incomplete"));
        let ni = api.count_nodes(&q).await?;
        if ni >= 3 {
            tracing::warn!(%commit, incomplete = ni, "too many incomplete checkouts; skipping");
            return Ok(TriggerOutcome::TooManyIncomplete(commit));
        }
        if n > 0 && ni != n {
            if !self.options.force {
                return Ok(TriggerOutcome::Exists(commit));
            }
            tracing::info!(%commit, "Resubmitting existing revision");
        }
        let node = self.checkout_node(target, &branch, &commit, &submitter);
        let created = api.create_node(&node).await?;
        super::service::crash_point("checkout-created").await;
        Ok(TriggerOutcome::Created(Box::new(created)))
    }

    /// The checkout node for `commit` of `target`.
    pub fn checkout_node(
        &self,
        target: &BuildTarget,
        branch: &str,
        commit: &str,
        submitter: &str,
    ) -> Node {
        let mut node = Node::new(NodeKind::Checkout, "checkout");
        let mut data = Map::new();
        data.insert(
            "kernel_revision".into(),
            json!({"tree": target.tree, "url": target.url, "branch": branch, "commit": commit}),
        );
        if let Some(archs) = &target.architectures {
            data.insert("architecture_filter".into(), json!(archs));
        }
        node.data = Some(data);
        let timeout = i64::try_from(self.options.timeout.as_secs()).unwrap_or(i64::MAX);
        node.timeout = Timestamp::now().plus_secs(timeout);
        let seed = format!(
            "{}{}{}",
            target.url,
            branch,
            chrono::Local::now().format("%Y-%m-%d %H:%M:%S%.6f")
        );
        node.treeid = Some(hex::encode(sha2::Sha256::digest(seed.as_bytes())));
        node.submitter = Some(submitter.to_owned());
        node
    }
}

/// The latest branch named by a NIPA JSON list (`[{branch, date, ...}]`) at `url`.
async fn nipa_branch(url: &str) -> Option<String> {
    let reply = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .and_then(|r| r.error_for_status());
    let items: Vec<Value> = match reply {
        Ok(r) => match r.json().await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(%url, error = %e, "branch list is not JSON");
                return None;
            }
        },
        Err(e) => {
            tracing::warn!(%url, error = %e, "cannot fetch the branch list");
            return None;
        }
    };
    items
        .iter()
        .filter_map(|i| {
            Some((
                i.get("date")?.as_str()?.to_owned(),
                i.get("branch")?.as_str()?.to_owned(),
            ))
        })
        .max()
        .map(|(_, b)| b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_selection() {
        let all = TreeSelection::parse(None);
        assert!(all.selects("mainline"));
        assert!(TreeSelection::parse(Some("!")).selects("x"), "too short");
        let only = TreeSelection::parse(Some("kernelci,next"));
        assert!(only.selects("next") && !only.selects("mainline"));
        let not = TreeSelection::parse(Some("!kernelci,next"));
        assert!(!not.selects("kernelci") && !not.selects("next") && not.selects("mainline"));
    }

    #[test]
    fn submitter_rule() {
        let mut me: UserRead = serde_json::from_value(json!({
            "id": "65265305c74695807499037f", "email": "bot@example.org",
            "is_active": true, "is_superuser": false, "is_verified": true,
            "username": "production", "groups": []
        }))
        .unwrap();
        assert_eq!(Trigger::submitter(&me), "service:pipeline");
        me.username = "alice".into();
        assert_eq!(Trigger::submitter(&me), "user:bot@example.org");
    }
}
