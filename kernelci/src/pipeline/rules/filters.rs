//! The rules of scheduler entries, jobs, runtimes and platforms ([`should_create_node`]),
//! the retry filters and the job node the scheduler creates ([`job_node`]).

use super::*;

/// Python `str()` of a scalar, for comparing rule values.
fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(true) => Some("True".into()),
        Value::Bool(false) => Some("False".into()),
        Value::Null => None,
        Value::Array(_) | Value::Object(_) => None,
    }
}

#[derive(Default)]
struct Split<'a> {
    allow: Vec<&'a str>,
    deny: Vec<&'a str>,
    allow_combo: Vec<(&'a str, &'a str)>,
    deny_combo: Vec<(&'a str, &'a str)>,
}

fn split_values(values: &[String], combos: bool) -> Split<'_> {
    let mut s = Split::default();
    for v in values {
        let (denied, v) = match v.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, v.as_str()),
        };
        match v.split_once(':').filter(|_| combos) {
            Some(pair) if denied => s.deny_combo.push(pair),
            Some(pair) => s.allow_combo.push(pair),
            None if denied => s.deny.push(v),
            None => s.allow.push(v),
        }
    }
    s
}

fn kernel_version(node: &Node) -> Option<(i64, i64)> {
    let v = node.data_path("kernel_revision.version")?;
    let num = |k: &str| match v.get(k)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    };
    Some((num("version")?, num("patchlevel")?))
}

/// Upstream `should_create_node(rules, node)`: whether `node` passes `rules`.
///
/// - `tree` and `branch` (read from the container of `tree`, normally
///   `data.kernel_revision`, in the node or its ancestors): an allowed `tree:branch` combo
///   accepts both at once; a denied combo, a denied value, only combos without plain allows,
///   or a value missing from the plain allows rejects.
/// - `*_version`: `min_*` rejects older kernels, `max_*` newer ones (`(version, patchlevel)`
///   of `data.kernel_revision.version`; a node without a version is rejected).
/// - any other key, read from its container in the node or its ancestors: a missing key is
///   rejected when there are allowed values; a list (e.g. `fragments`) is rejected when any
///   element is denied or, with allowed values, when no element is allowed; a scalar is
///   rejected when denied or not allowed.
pub async fn should_create_node(
    rules: Option<&Rules>,
    node: &Node,
    lookup: &dyn NodeLookup,
) -> bool {
    let Some(rules) = rules else { return true };
    if rules.0.is_empty() {
        return true;
    }
    if rules.0.contains_key("tree") || rules.0.contains_key("branch") {
        let container = find_container_up("tree", node, lookup).await;
        let get = |k: &str| {
            container
                .as_ref()
                .and_then(|c| c.get(k))
                .and_then(value_str)
        };
        let tree = get("tree");
        let branch = get("branch");
        for key in ["tree", "branch"] {
            let values = rules.values(key);
            if !rules.0.contains_key(key) {
                continue;
            }
            let s = split_values(values, true);
            let matches_combo = |(t, b): &(&str, &str)| {
                tree.as_deref() == Some(*t) && branch.as_deref() == Some(*b)
            };
            if s.allow_combo.iter().any(matches_combo) {
                break;
            }
            if s.deny_combo.iter().any(matches_combo) {
                return false;
            }
            let value = if key == "tree" { &tree } else { &branch };
            let value = value.as_deref();
            if value.is_some_and(|v| s.deny.contains(&v)) {
                return false;
            }
            if !s.allow_combo.is_empty() && s.allow.is_empty() {
                return false;
            }
            if !s.allow.is_empty() && !value.is_some_and(|v| s.allow.contains(&v)) {
                return false;
            }
        }
    }
    for (key, entry) in &rules.0 {
        if key == "tree" || key == "branch" {
            continue;
        }
        match entry {
            RuleEntry::Version(rule) => {
                let Some(kver) = kernel_version(node) else {
                    return false;
                };
                let limit = (i64::from(rule.version), i64::from(rule.patchlevel));
                if key.starts_with("min_") && kver < limit {
                    return false;
                }
                if key.starts_with("max_") && kver > limit {
                    return false;
                }
            }
            RuleEntry::Values(values) => {
                let s = split_values(values, false);
                let container = find_container_up(key, node, lookup).await;
                let Some(value) = container.as_ref().and_then(|c| c.get(key)) else {
                    if s.allow.is_empty() {
                        continue;
                    }
                    return false;
                };
                match value {
                    Value::Array(items) => {
                        let items: Vec<String> = items.iter().filter_map(value_str).collect();
                        if items.iter().any(|i| s.deny.contains(&i.as_str())) {
                            return false;
                        }
                        if !s.allow.is_empty()
                            && !items.iter().any(|i| s.allow.contains(&i.as_str()))
                        {
                            return false;
                        }
                    }
                    scalar => {
                        let v = value_str(scalar);
                        let v = v.as_deref();
                        if v.is_some_and(|v| s.deny.contains(&v)) {
                            return false;
                        }
                        if !s.allow.is_empty() && !v.is_some_and(|v| s.allow.contains(&v)) {
                            return false;
                        }
                    }
                }
            }
        }
    }
    true
}

/// The retry job filter: with a non-empty `jobfilter` that does not name `job`, the job is
/// allowed only when an entry `X+` has `X` equal to the job name or to an element of `path`
/// (the new node's path: everything below `X` is allowed).
pub fn jobfilter_allows(jobfilter: Option<&[String]>, job: &str, path: &[String]) -> bool {
    let Some(filter) = jobfilter.filter(|f| !f.is_empty()) else {
        return true;
    };
    if filter.iter().any(|f| f == job) {
        return true;
    }
    filter.iter().any(|f| {
        f.strip_suffix('+')
            .is_some_and(|x| x == job || path.iter().any(|p| p == x))
    })
}

/// The retry platform filter: a non-empty filter must include the platform.
pub fn platform_filter_allows(platform_filter: Option<&[String]>, platform: &str) -> bool {
    match platform_filter {
        Some(f) if !f.is_empty() => f.iter().any(|p| p == platform),
        _ => true,
    }
}

fn escape_commit_messages(value: &mut Value) {
    match value {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "commit_message" {
                    if let Value::String(s) = v {
                        *s = s.replace('{', "{{").replace('}', "}}");
                    }
                } else {
                    escape_commit_messages(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(escape_commit_messages),
        _ => {}
    }
}

/// Upstream `APIHelper.create_job_node`, without the POST: the job node for `job` below
/// `input` on `runtime` and `platform`, or `None` when the retry filters or the job, runtime or
/// platform rules reject it.
///
/// The node is `running` with the API default timeout, `submitter` and `treeid` copied from
/// the input, `data.kernel_revision` from the input (plus `kernel_type`, `arch`, `defconfig`,
/// `config_full`, `compiler` for kind `job`), `data.runtime`, `data.platform`, and every
/// string of `data` formatted with the platform attributes, `krev` and the job params.
pub async fn job_node(
    input: &Node,
    job: &JobConfig,
    runtime: &RuntimeConfig,
    platform: &PlatformConfig,
    retry_counter: i64,
    lookup: &dyn NodeLookup,
) -> Option<Node> {
    let mut path = input.path.clone();
    path.push(job.name.clone());
    if !jobfilter_allows(input.jobfilter.as_deref(), &job.name, &path) {
        return None;
    }
    let mut node = Node::new(crate::models::NodeKind::Job, job.name.clone());
    node.kind = job.kind.clone();
    node.parent = input.id;
    node.path = path;
    node.group = Some(job.name.clone());
    node.artifacts = Some(Map::new());
    node.treeid = input.treeid.clone();
    node.submitter = input.submitter.clone();
    node.retry_counter = retry_counter;
    node.state = State::Running;
    node.jobfilter = input.jobfilter.clone();
    node.platform_filter = input.platform_filter.clone().or_else(|| Some(Vec::new()));
    let mut data = Map::new();
    if let Some(krev) = input.data_path("kernel_revision") {
        data.insert("kernel_revision".into(), krev.clone());
    }
    node.data = Some(data.clone());
    if !should_create_node(job.rules.as_ref(), &node, lookup).await {
        return None;
    }
    if job.kind == "job" {
        for key in [
            "kernel_type",
            "arch",
            "defconfig",
            "config_full",
            "compiler",
        ] {
            if let Some(v) = input.data_path(key) {
                data.insert(key.into(), v.clone());
            }
        }
    }
    data.insert("runtime".into(), Value::String(runtime.name.clone()));
    node.data = Some(data.clone());
    if !should_create_node(runtime.rules.as_ref(), &node, lookup).await {
        return None;
    }
    if job.kind == "job"
        && !platform_filter_allows(input.platform_filter.as_deref(), &platform.name)
    {
        return None;
    }
    data.insert("platform".into(), Value::String(platform.name.clone()));
    node.data = Some(data.clone());
    if !should_create_node(platform.rules.as_ref(), &node, lookup).await {
        return None;
    }
    let mut data = Value::Object(data);
    escape_commit_messages(&mut data);
    let mut extra = job.params.clone();
    if let Some((v, p)) = kernel_version(input) {
        extra.insert("krev".into(), Value::String(format!("{v}.{p}")));
    }
    if let Value::Object(formatted) = platform.format_params(&data, &extra) {
        node.data = Some(formatted);
    }
    Some(node)
}
