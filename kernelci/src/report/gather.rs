//! Building a [`Report`] from the API (upstream `test_report._get_results_data`).

use super::{JobSummary, Report, ReportError};
use crate::client::Api;
use crate::models::{Node, ObjectId};

fn revision_str(node: &Node, field: &str) -> Result<String, ReportError> {
    node.data_str(&format!("kernel_revision.{field}"))
        .map(str::to_owned)
        .ok_or_else(|| {
            ReportError::Invalid(format!(
                "node {} has no data.kernel_revision.{field}",
                node.id.map(|i| i.to_string()).unwrap_or_default()
            ))
        })
}

fn query(base: &[(&str, &str)], extra: &[(&str, &str)]) -> Vec<(String, String)> {
    base.iter()
        .chain(extra)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn refs(q: &[(String, String)]) -> Vec<(&str, &str)> {
    q.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// The report of the checkout `checkout_id`:
///
/// - jobs are the distinct non-empty `group` values of every node of the same revision
///   (commit, tree, branch), in first-seen order;
/// - a job's root is the first node of the revision named like the job; its total is the
///   number of nodes in the group; its failures are the group's `result=fail` nodes, each
///   path dot-joined below the root's path (below the checkout's path for the root itself).
pub async fn gather(api: &dyn Api, checkout_id: ObjectId) -> Result<Report, ReportError> {
    let checkout = api
        .get_node(checkout_id)
        .await?
        .ok_or_else(|| ReportError::NotFound(checkout_id.to_string()))?;
    let commit = revision_str(&checkout, "commit")?;
    let tree = revision_str(&checkout, "tree")?;
    let branch = revision_str(&checkout, "branch")?;
    let url = revision_str(&checkout, "url").unwrap_or_default();
    let describe = checkout
        .data_str("kernel_revision.describe")
        .map(str::to_owned);
    let rev = [
        ("data.kernel_revision.commit", commit.as_str()),
        ("data.kernel_revision.tree", tree.as_str()),
        ("data.kernel_revision.branch", branch.as_str()),
    ];
    let nodes = api.find_all_nodes(&rev).await?;
    let mut groups: Vec<String> = Vec::new();
    for n in &nodes {
        if let Some(g) = n.group.as_deref().filter(|g| !g.is_empty())
            && !groups.iter().any(|x| x == g)
        {
            groups.push(g.to_owned());
        }
    }
    let mut jobs = Vec::with_capacity(groups.len());
    for group in groups {
        let q_root = query(&rev, &[("name", &group)]);
        let root = api
            .find_nodes(&refs(&q_root))
            .await?
            .items
            .into_iter()
            .next();
        let q_group = query(&rev, &[("group", &group)]);
        let total = api.count_nodes(&refs(&q_group)).await?;
        let q_fail = query(&rev, &[("group", &group), ("result", "fail")]);
        let failures = api.find_all_nodes(&refs(&q_fail)).await?;
        let root_len = root.as_ref().map_or(0, |r| r.path.len());
        let failures = failures
            .iter()
            .map(|f| {
                let skip = if root.as_ref().is_some_and(|r| r.id == f.id) {
                    checkout.path.len()
                } else {
                    root_len
                };
                f.path
                    .iter()
                    .skip(skip)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(".")
            })
            .collect();
        jobs.push(JobSummary {
            name: group,
            result: root.and_then(|r| r.result),
            total,
            failures,
        });
    }
    Ok(Report {
        tree,
        branch,
        describe,
        url,
        commit,
        jobs,
    })
}
