//! The KCIDB bridge (upstream `send_kcidb`, `spec/kcidb.md`): every finished checkout, build
//! and test reaches KCIDB, valid, once.
//!
//! [`KcidbBridge::run`] follows the `node` channel with the durable subscriber id
//! `<name>:node` (promiscuous, states `available` and `done`) and works in batches:
//!
//! 1. **Start-up**: a submission that was in flight when the last run died is finished from
//!    its journal (below); then a catch-up sends every unflagged `done` node created in the
//!    last [`BridgeOptions::catchup_window`].
//! 2. **Batches**: node ids from events are collected for [`BridgeOptions::linger`] (or until
//!    [`BridgeOptions::batch_size`]); each node is re-read, and skipped if
//!    `processed_by_kcidb_bridge` is already set (so catch-up and events never send a node
//!    twice). The subtree of each job/test is read too (a result hierarchy sends one event
//!    for its root), grandchildren included, and the ancestors the mapping needs.
//! 3. **Mapping** ([`crate::kcidb::mapping`]): tests wait for `done`, a retried job is reported
//!    only at its final attempt, objects are de-duplicated within the batch.
//! 4. **Validation per object**: an invalid object is logged with its node id and field,
//!    counted (`kcidb_objects_invalid_total` in `/metrics`), and its node is marked so it is
//!    not tried again until it changes; the valid objects are sent.
//! 5. **Submission**, at most [`BridgeOptions::max_objects`] objects per document: a
//!    document KCIDB rejects (4xx other than 401/403) is split in halves until the object it
//!    refuses is found, which is then handled like an invalid one; 5xx and timeouts are
//!    retried by the submitter with backoff and jitter; a batch that still fails is kept and
//!    retried with growing delays (nothing is dropped).
//! 6. **Marking**: `processed_by_kcidb_bridge` is set only after KCIDB took the document,
//!    with one `PUT /batch/nodeset`; the nodes are then read back and a node that changed
//!    while it was being sent is unmarked, so its new version goes too.
//!
//! **Crash safety** (`kill -9` at any point): before each submission the bridge writes a
//! journal in the API's key/value store (`kcidb/<name>:outbox`: the node ids and a
//! fingerprint of each node as sent), updates it to `sent` as soon as KCIDB answered, and
//! deletes it once the nodes are marked. After a crash, a `sent` journal is finished (nodes
//! still as sent are marked; nothing is sent again), and a `pending` one is sent again (KCIDB
//! had not taken it). The one window left is between KCIDB's answer and the journal update
//! (one API call); a crash there sends that document again, which KCIDB merges by id into
//! the same rows. Crash-test steps ([`crate::pipeline::service::crash_point`]):
//! `kcidb-journaled` (journal written, not sent) and `kcidb-submitted` (sent and journaled,
//! not marked).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::service::{
    EventHandler, EventSubscription, ServiceContext, ServiceError, ServiceResult, async_trait,
    crash_point,
};
use crate::client::{Api, ReceivedEvent};
use crate::kcidb::excerpt::LogExcerpts;
use crate::kcidb::fetch::{complete_ancestors, descendants, nodes_by_id};
use crate::kcidb::mapping::{Decision, Mapper, NodeIndex, ObjectSet};
use crate::kcidb::objects::{Document, Object};
use crate::kcidb::{KcidbError, KcidbSubmitter, RetryPolicy, prepare};
use crate::models::{Node, ObjectId, Timestamp};

/// The key/value namespace of the submission journal.
pub const JOURNAL_NAMESPACE: &str = "kcidb";

/// The node field the bridge sets.
pub const PROCESSED_FIELD: &str = "processed_by_kcidb_bridge";

/// How the bridge batches, catches up and retries.
#[derive(Debug, Clone)]
pub struct BridgeOptions {
    /// Most nodes taken from events into one batch (upstream's chunk size: 500).
    pub batch_size: usize,
    /// How long to wait for more events after the first one of a batch.
    pub linger: Duration,
    /// Most objects in one document.
    pub max_objects: usize,
    /// Catch-up takes `done` nodes created this recently (upstream: 4 days).
    pub catchup_window: Duration,
    /// How often unflagged nodes are looked for besides events (upstream: 5 minutes).
    pub catchup_period: Duration,
    /// Periodic catch-ups take nodes not updated for this long (their events are handled
    /// first; upstream: 5 minutes).
    pub settle: Duration,
    /// Delays between attempts of a failed batch (attempts are unlimited).
    pub batch_retry: RetryPolicy,
    /// Download logs for `log_excerpt` with this timeout; `None` sends no excerpt.
    pub log_excerpts: Option<Duration>,
    /// Only logs on these hosts are downloaded (empty: any; see
    /// [`crate::kcidb::excerpt::storage_hosts`]).
    pub excerpt_hosts: Vec<String>,
    /// Only send nodes whose `submitter` is this (upstream does this for its production API
    /// users with `service:pipeline`); other nodes are marked and not sent.
    pub only_submitter: Option<String>,
    /// Node ids waiting between the event loop and the batches; when full, events are dropped
    /// and a catch-up finds their nodes.
    pub queue_capacity: usize,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            batch_size: 500,
            linger: Duration::from_secs(1),
            max_objects: 2000,
            catchup_window: Duration::from_secs(4 * 24 * 3600),
            catchup_period: Duration::from_secs(300),
            settle: Duration::from_secs(300),
            batch_retry: RetryPolicy {
                max_attempts: u32::MAX,
                base_delay: Duration::from_secs(5),
                max_delay: Duration::from_secs(600),
            },
            log_excerpts: Some(Duration::from_secs(60)),
            excerpt_hosts: Vec::new(),
            only_submitter: None,
            queue_capacity: 100_000,
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Objects KCIDB took.
    pub sent: usize,
    /// Objects left out as invalid or rejected.
    pub invalid: usize,
    /// Nodes marked processed.
    pub marked: usize,
    /// Nodes marked without anything sent (retries, suites, unsupported kinds, ...).
    pub skipped: usize,
    /// Documents submitted.
    pub submissions: usize,
}

impl BatchReport {
    fn absorb(&mut self, other: BatchReport) {
        self.sent += other.sent;
        self.invalid += other.invalid;
        self.marked += other.marked;
        self.skipped += other.skipped;
        self.submissions += other.submissions;
    }
}

/// The KCIDB bridge service.
#[derive(Debug, Clone)]
pub struct KcidbBridge {
    mapper: Arc<Mapper>,
    submitter: Arc<dyn KcidbSubmitter>,
    options: BridgeOptions,
    excerpts: Option<LogExcerpts>,
}

/// One object to send and the nodes it came from.
type Unit = (Object, Vec<ObjectId>);

/// A fingerprint of the node as mapped: everything but `updated` and the flag.
fn fingerprint(node: &Node) -> String {
    let mut v = node.to_value();
    if let Some(o) = v.as_object_mut() {
        o.remove("updated");
        o.remove(PROCESSED_FIELD);
    }
    let digest = Sha256::digest(v.to_string().as_bytes());
    hex::encode(&digest[..12])
}

struct Collector {
    tx: mpsc::Sender<ObjectId>,
    overflow: Arc<AtomicBool>,
}

#[async_trait]
impl EventHandler for Collector {
    async fn handle(&mut self, _ctx: &ServiceContext, event: &ReceivedEvent) -> ServiceResult<()> {
        let id = event
            .event
            .data
            .get("id")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<ObjectId>().ok());
        if let Some(id) = id
            && self.tx.try_send(id).is_err()
        {
            // The flag is the source of truth: a catch-up finds the node.
            self.overflow.store(true, Ordering::Relaxed);
        }
        Ok(())
    }
}

impl KcidbBridge {
    /// A bridge mapping with `mapper` and sending through `submitter`.
    pub fn new(
        mapper: Mapper,
        submitter: Arc<dyn KcidbSubmitter>,
        options: BridgeOptions,
    ) -> KcidbBridge {
        let excerpts = options
            .log_excerpts
            .map(|t| LogExcerpts::new(t).with_allowed_hosts(options.excerpt_hosts.clone()));
        KcidbBridge {
            mapper: Arc::new(mapper),
            submitter,
            options,
            excerpts,
        }
    }

    /// The options.
    pub fn options(&self) -> &BridgeOptions {
        &self.options
    }

    /// The events it follows: every owner's nodes becoming `available` or `done`.
    pub fn subscription(&self) -> EventSubscription {
        EventSubscription::node()
            .states(&["available", "done"])
            .promiscuous(true)
    }

    fn journal_key(ctx: &ServiceContext) -> String {
        format!("{}:outbox", ctx.name())
    }

    /// Runs until shutdown: the event loop and the batch worker.
    pub async fn run(&self, ctx: &ServiceContext) -> ServiceResult<()> {
        tracing::info!(service = %ctx.name(), to = %self.submitter.describe(),
            origin = %self.mapper.config().origin, "KCIDB bridge starting");
        let (tx, rx) = mpsc::channel(self.options.queue_capacity.max(1));
        let overflow = Arc::new(AtomicBool::new(false));
        let mut collector = Collector {
            tx,
            overflow: overflow.clone(),
        };
        let events = ctx.run_events(self.subscription(), &mut collector);
        let worker = self.work(ctx, rx, overflow);
        tokio::pin!(events, worker);
        tokio::select! {
            r = &mut events => match r {
                // A stop: let the worker finish its batch.
                Ok(()) => worker.await,
                Err(e) => Err(e),
            },
            r = &mut worker => r,
        }
    }

    async fn work(
        &self,
        ctx: &ServiceContext,
        mut rx: mpsc::Receiver<ObjectId>,
        overflow: Arc<AtomicBool>,
    ) -> ServiceResult<()> {
        let component = format!("kcidb:{}", ctx.name());
        ctx.liveness().register(&component);
        let mut pending = self.recover(ctx).await;
        let mut catchup_due = Some(None::<Duration>);
        let mut last_catchup = Instant::now();
        loop {
            if ctx.shutdown().is_triggered() {
                // What the event loop took before the stop goes out now (one attempt); the
                // rest is found by the next start's catch-up.
                let mut last = std::mem::take(&mut pending);
                while let Ok(id) = rx.try_recv() {
                    last.push(id);
                }
                if !last.is_empty() {
                    self.until_done(ctx, &component, last).await;
                }
                break;
            }
            if overflow.swap(false, Ordering::Relaxed) {
                catchup_due = Some(None);
            }
            if let Some(settle) = catchup_due.take() {
                if !pending.is_empty() {
                    let ids = std::mem::take(&mut pending);
                    self.until_done(ctx, &component, ids).await;
                }
                self.catch_up(ctx, &component, settle).await;
                last_catchup = Instant::now();
                continue;
            }
            let next_catchup = self
                .options
                .catchup_period
                .saturating_sub(last_catchup.elapsed());
            let ids = self.gather(ctx, &mut rx, next_catchup).await;
            ctx.metrics().set(
                "kcidb_queue_nodes",
                "Node ids waiting for a batch",
                rx.len() as f64,
            );
            ctx.liveness().beat(&component);
            if !ids.is_empty() {
                ctx.metrics().add(
                    "kcidb_nodes_received_total",
                    "Node ids taken from events",
                    ids.len() as u64,
                );
                self.until_done(ctx, &component, ids).await;
            } else if last_catchup.elapsed() >= self.options.catchup_period {
                catchup_due = Some(Some(self.options.settle));
            }
        }
        ctx.liveness().deregister(&component);
        Ok(())
    }

    /// Up to `batch_size` ids: waits for the first (up to `wait`), then `linger` for more.
    async fn gather(
        &self,
        ctx: &ServiceContext,
        rx: &mut mpsc::Receiver<ObjectId>,
        wait: Duration,
    ) -> Vec<ObjectId> {
        let mut ids = Vec::new();
        let first = tokio::select! {
            _ = ctx.shutdown().wait() => return ids,
            _ = tokio::time::sleep(wait) => return ids,
            id = rx.recv() => id,
        };
        let Some(first) = first else {
            return ids;
        };
        ids.push(first);
        let deadline = tokio::time::Instant::now() + self.options.linger;
        while ids.len() < self.options.batch_size.max(1) {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                id = rx.recv() => match id {
                    Some(id) => ids.push(id),
                    None => break,
                },
            }
        }
        ids
    }

    /// Processes `ids` until it succeeds or a stop is asked for, with growing delays.
    async fn until_done(&self, ctx: &ServiceContext, component: &str, ids: Vec<ObjectId>) {
        let mut attempt = 1;
        loop {
            match self.process(ctx, &ids).await {
                Ok(report) => {
                    tracing::debug!(service = %ctx.name(), nodes = ids.len(), ?report, "batch done");
                    return;
                }
                Err(e) => {
                    ctx.metrics().add(
                        "kcidb_batch_failures_total",
                        "Batches that failed and are retried",
                        1,
                    );
                    let delay = self.options.batch_retry.delay(attempt);
                    tracing::error!(service = %ctx.name(), error = %e, kind = ?e.kind(),
                        nodes = ids.len(), attempt,
                        "KCIDB batch failed; nothing marked, retrying in {delay:?}");
                    ctx.liveness().beat(component);
                    if !ctx.sleep(delay).await {
                        return;
                    }
                    ctx.liveness().beat(component);
                    attempt += 1;
                }
            }
        }
    }

    /// Sends every unflagged `done` node created within the catch-up window (and, with
    /// `settle`, not updated for that long), a batch at a time.
    async fn catch_up(&self, ctx: &ServiceContext, component: &str, settle: Option<Duration>) {
        let window = i64::try_from(self.options.catchup_window.as_secs()).unwrap_or(i64::MAX);
        let mut seen: HashSet<ObjectId> = HashSet::new();
        loop {
            let now = Timestamp::now();
            let created = now.plus_secs(-window).to_string();
            let limit = self.options.batch_size.max(1).to_string();
            let mut query = vec![
                ("state", "done".to_owned()),
                (PROCESSED_FIELD, "false".to_owned()),
                ("created__gt", created),
                ("limit", limit),
            ];
            if let Some(s) = settle {
                let secs = i64::try_from(s.as_secs()).unwrap_or(i64::MAX);
                query.push(("updated__lt", now.plus_secs(-secs).to_string()));
            }
            let q: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let found = match ctx.api().find_nodes_fast(&q).await {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(service = %ctx.name(), error = %e, "catch-up query failed");
                    return;
                }
            };
            let ids: Vec<ObjectId> = found.iter().filter_map(|n| n.id).collect();
            let fresh: Vec<ObjectId> = ids.iter().copied().filter(|id| seen.insert(*id)).collect();
            if fresh.is_empty() {
                return;
            }
            tracing::info!(service = %ctx.name(), nodes = fresh.len(), "catch-up");
            ctx.metrics().add(
                "kcidb_catchup_nodes_total",
                "Unflagged nodes found by catch-up",
                fresh.len() as u64,
            );
            self.until_done(ctx, component, fresh).await;
            ctx.liveness().beat(component);
            if ids.len() < self.options.batch_size.max(1) || ctx.shutdown().is_triggered() {
                return;
            }
        }
    }

    /// Finishes the submission a previous run left in its journal; returns node ids to send
    /// again (a submission KCIDB had not taken).
    async fn recover(&self, ctx: &ServiceContext) -> Vec<ObjectId> {
        let key = Self::journal_key(ctx);
        let journal = match ctx.api().get_kv(JOURNAL_NAMESPACE, &key).await {
            Ok(Some(j)) => j,
            Ok(None) => return Vec::new(),
            Err(e) => {
                tracing::warn!(service = %ctx.name(), error = %e, "cannot read the journal");
                return Vec::new();
            }
        };
        let journal: Value = serde_json::from_str(&journal).unwrap_or(Value::Null);
        let prints: HashMap<ObjectId, String> = journal
            .get("nodes")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default();
        let state = journal.get("state").and_then(Value::as_str).unwrap_or("");
        tracing::warn!(service = %ctx.name(), state, nodes = prints.len(),
            "a submission was interrupted; finishing it");
        let ids: Vec<ObjectId> = prints.keys().copied().collect();
        if state == "sent"
            && let Err(e) = self.mark(ctx.api(), &prints).await
        {
            tracing::warn!(service = %ctx.name(), error = %e,
                "cannot mark the nodes of the interrupted submission yet");
            return Vec::new();
        }
        if let Err(e) = ctx.api().delete_kv(JOURNAL_NAMESPACE, &key).await {
            tracing::warn!(service = %ctx.name(), error = %e, "cannot clear the journal");
        }
        if state == "sent" { Vec::new() } else { ids }
    }

    /// Reads, maps, checks, sends and marks the nodes `ids` (and the subtrees of jobs and
    /// tests among them). Errors leave the unsent nodes unmarked.
    pub async fn process(
        &self,
        ctx: &ServiceContext,
        ids: &[ObjectId],
    ) -> Result<BatchReport, KcidbError> {
        let api = ctx.api();
        let mut unique: Vec<ObjectId> = ids.to_vec();
        unique.sort();
        unique.dedup();
        let mut index = NodeIndex::new();
        let mut candidates: Vec<Node> = Vec::new();
        for node in nodes_by_id(api, &unique).await? {
            index.insert(node.clone());
            if !node.processed_by_kcidb_bridge {
                candidates.push(node);
            }
        }
        let roots: Vec<ObjectId> = candidates
            .iter()
            .filter(|n| matches!(n.kind.as_str(), "job" | "test" | "process"))
            .filter_map(|n| n.id)
            .collect();
        let mut known: HashSet<ObjectId> = candidates.iter().filter_map(|n| n.id).collect();
        for child in descendants(api, &roots, &mut index).await? {
            if !child.processed_by_kcidb_bridge
                && let Some(id) = child.id
                && known.insert(id)
            {
                candidates.push(child);
            }
        }
        complete_ancestors(api, &candidates, &mut index).await?;

        let mut report = BatchReport::default();
        let mut prints: HashMap<ObjectId, String> = HashMap::new();
        let mut skipped: HashMap<ObjectId, String> = HashMap::new();
        let mut set = ObjectSet::new();
        for node in &candidates {
            let Some(id) = node.id else { continue };
            let decision = match &self.options.only_submitter {
                Some(s) if node.submitter.as_deref() != Some(s.as_str()) => {
                    Decision::Skip(crate::kcidb::mapping::Skip::Kind(format!(
                        "{} from submitter {:?}",
                        node.kind, node.submitter
                    )))
                }
                _ => self.mapper.map(node, &index),
            };
            match decision {
                Decision::Defer => {}
                Decision::Skip(why) => {
                    tracing::debug!(node = %id, reason = %why, "marked without sending");
                    skipped.insert(id, fingerprint(node));
                }
                Decision::Send(objects) => {
                    prints.insert(id, fingerprint(node));
                    for o in objects {
                        set.add(o, id);
                    }
                }
            }
        }
        let mut units = set.into_inner();
        if let Some(ex) = &self.excerpts {
            ex.fill(units.iter_mut().map(|(o, _)| o)).await;
        }
        let prepared = prepare(units);
        let mut sent_nodes: HashSet<ObjectId> = HashSet::new();
        for nodes in &prepared.sources {
            sent_nodes.extend(nodes.iter().copied());
        }
        for bad in &prepared.invalid {
            report.invalid += 1;
            ctx.metrics().add(
                "kcidb_objects_invalid_total",
                "Objects that failed schema validation and were not sent",
                1,
            );
            let fields: Vec<String> = bad.errors.iter().map(ToString::to_string).collect();
            for node in &bad.nodes {
                tracing::error!(service = %ctx.name(), node = %node, object = %bad.id,
                    list = bad.list, errors = %fields.join("; "),
                    "invalid KCIDB object; not sent");
                if !sent_nodes.contains(node)
                    && let Some(p) = prints.remove(node)
                {
                    skipped.insert(*node, p);
                }
            }
        }
        if !skipped.is_empty() {
            report.skipped += skipped.len();
            report.marked += self.mark(api, &skipped).await?;
            ctx.metrics().add(
                "kcidb_nodes_skipped_total",
                "Nodes marked without anything sent (retries, suites, invalid, ...)",
                skipped.len() as u64,
            );
        }
        let units: Vec<Unit> = document_units(prepared.document, prepared.sources);
        for chunk in units.chunks(self.options.max_objects.max(1)) {
            report.absorb(self.send(ctx, chunk, &prints).await?);
        }
        Ok(report)
    }

    /// Sends `units` in one document, splitting it when KCIDB rejects it.
    async fn send(
        &self,
        ctx: &ServiceContext,
        units: &[Unit],
        prints: &HashMap<ObjectId, String>,
    ) -> Result<BatchReport, KcidbError> {
        let mut report = BatchReport::default();
        if units.is_empty() {
            return Ok(report);
        }
        let mut document = Document::default();
        let mut nodes: HashMap<ObjectId, String> = HashMap::new();
        for (object, sources) in units {
            document.push(object.clone());
            for n in sources {
                if let Some(p) = prints.get(n) {
                    nodes.insert(*n, p.clone());
                }
            }
        }
        let api = ctx.api();
        let key = Self::journal_key(ctx);
        let journal = |state: &str| json!({"state": state, "nodes": nodes}).to_string();
        api.set_kv(JOURNAL_NAMESPACE, &key, &journal("pending"))
            .await?;
        crash_point("kcidb-journaled").await;
        ctx.metrics().add(
            "kcidb_submissions_total",
            "Documents submitted (attempted)",
            1,
        );
        match self.submitter.submit(&document.to_value()).await {
            Ok(receipt) => {
                report.submissions += 1;
                report.sent += units.len();
                ctx.metrics().add(
                    "kcidb_objects_sent_total",
                    "Objects KCIDB took",
                    units.len() as u64,
                );
                // KCIDB has it: the bookkeeping is retried in place (never by sending again).
                let mut attempt = 1;
                loop {
                    match self.after_submit(ctx, &key, &journal("sent"), &nodes).await {
                        Ok(marked) => {
                            report.marked += marked;
                            break;
                        }
                        Err(e) => {
                            let delay = self.options.batch_retry.delay(attempt);
                            tracing::warn!(service = %ctx.name(), error = %e, attempt,
                                "cannot record a submission KCIDB took; retrying in {delay:?}");
                            if !ctx.sleep(delay).await {
                                return Err(e);
                            }
                            attempt += 1;
                        }
                    }
                }
                tracing::info!(service = %ctx.name(), submission = %receipt.id,
                    objects = units.len(), nodes = nodes.len(), "sent to KCIDB");
                Ok(report)
            }
            Err(KcidbError::Rejected { status, body }) if units.len() > 1 => {
                tracing::warn!(service = %ctx.name(), status, body = %body,
                    objects = units.len(), "KCIDB rejected a document; splitting it");
                api.delete_kv(JOURNAL_NAMESPACE, &key).await?;
                let (left, right) = units.split_at(units.len() / 2);
                report.absorb(Box::pin(self.send(ctx, left, prints)).await?);
                report.absorb(Box::pin(self.send(ctx, right, prints)).await?);
                Ok(report)
            }
            Err(KcidbError::Rejected { status, body }) => {
                let (object, sources) = &units[0];
                for node in sources {
                    tracing::error!(service = %ctx.name(), node = %node, object = %object.id(),
                        status, body = %body, "KCIDB rejected the object; not sent again");
                }
                ctx.metrics().add(
                    "kcidb_objects_rejected_total",
                    "Objects KCIDB rejected (HTTP 4xx), not sent again",
                    1,
                );
                report.invalid += 1;
                report.marked += self.mark(api, &nodes).await?;
                api.delete_kv(JOURNAL_NAMESPACE, &key).await?;
                Ok(report)
            }
            Err(e) => {
                ctx.metrics().add(
                    "kcidb_submission_failures_total",
                    "Submissions that failed after the submitter's retries",
                    1,
                );
                if let Err(d) = api.delete_kv(JOURNAL_NAMESPACE, &key).await {
                    tracing::warn!(error = %d, "cannot clear the journal");
                }
                Err(e)
            }
        }
    }

    /// After KCIDB took a document: the journal says `sent`, the nodes are marked, the journal
    /// is cleared. Returns how many nodes stay marked.
    async fn after_submit(
        &self,
        ctx: &ServiceContext,
        key: &str,
        sent: &str,
        nodes: &HashMap<ObjectId, String>,
    ) -> Result<usize, KcidbError> {
        let api = ctx.api();
        api.set_kv(JOURNAL_NAMESPACE, key, sent).await?;
        crash_point("kcidb-submitted").await;
        let marked = self.mark(api, nodes).await?;
        api.delete_kv(JOURNAL_NAMESPACE, key).await?;
        Ok(marked)
    }

    /// Sets the flag on `nodes`, then reads them back and clears it again on any node that
    /// changed since it was mapped (its fingerprint differs). Returns how many stay marked.
    async fn mark(
        &self,
        api: &dyn Api,
        nodes: &HashMap<ObjectId, String>,
    ) -> Result<usize, KcidbError> {
        let ids: Vec<ObjectId> = nodes.keys().copied().collect();
        for chunk in ids.chunks(500) {
            api.bulk_set(chunk, PROCESSED_FIELD, "true").await?;
        }
        let mut changed = Vec::new();
        let mut refused = Vec::new();
        for node in nodes_by_id(api, &ids).await? {
            let Some(id) = node.id else { continue };
            if nodes.get(&id).is_some_and(|p| *p != fingerprint(&node)) {
                changed.push(id);
            } else if !node.processed_by_kcidb_bridge {
                refused.push(id);
            }
        }
        if !refused.is_empty() {
            // The API skips nodes this token may not edit: they would be sent again.
            return Err(KcidbError::Config(format!(
                "the API did not mark {} node(s) (e.g. {}): the bridge's token must be allowed \
                 to edit every node (an admin or service token)",
                refused.len(),
                refused[0]
            )));
        }
        if !changed.is_empty() {
            tracing::info!(
                nodes = changed.len(),
                "nodes changed while being sent; unmarked"
            );
            for chunk in changed.chunks(500) {
                api.bulk_set(chunk, PROCESSED_FIELD, "false").await?;
            }
        }
        Ok(ids.len() - changed.len())
    }
}

/// The document's objects back as units, in document order.
fn document_units(document: Document, sources: Vec<Vec<ObjectId>>) -> Vec<Unit> {
    let objects = document
        .checkouts
        .into_iter()
        .map(Object::Checkout)
        .chain(document.builds.into_iter().map(Object::Build))
        .chain(document.tests.into_iter().map(Object::Test))
        .chain(document.issues.into_iter().map(Object::Issue))
        .chain(document.incidents.into_iter().map(Object::Incident));
    objects.zip(sources).collect()
}

impl From<KcidbError> for ServiceError {
    fn from(e: KcidbError) -> Self {
        match e.kind() {
            crate::ErrorKind::Invalid => ServiceError::Config(e.to_string()),
            _ => ServiceError::Invalid(e.to_string()),
        }
    }
}
