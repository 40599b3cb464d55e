//! Building a [`Report`] from the API (upstream `test_report._get_results_data`).

use super::{JobSummary, Report, ReportError};
use crate::client::Api;
use crate::models::{Node, ObjectId, ResultValue};
use crate::store::results::{ResultTally, display_path};

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

/// The report of the checkout `checkout_id`:
///
/// - jobs are the distinct non-empty `group` values of every node of the same revision
///   (commit, tree, branch), in first-seen order;
/// - a job's root is the first node of the revision named like the job, and its result is the
///   job's;
/// - a job's total and failures count what the views and `/metrics` count
///   ([`crate::store::results`]): its builds and its leaf test cases (not the job node above
///   its results, nor groups of tests); a failure is listed by its path below the job
///   ([`display_path`]), once.
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
    Ok(Report {
        tree,
        branch,
        describe,
        url,
        commit,
        jobs: summarize(&nodes),
    })
}

/// The jobs of a revision's nodes (see [`gather`]).
pub fn summarize(nodes: &[Node]) -> Vec<JobSummary> {
    let tally = ResultTally::new(nodes);
    let mut groups: Vec<&str> = Vec::new();
    for n in nodes {
        if let Some(g) = n.group.as_deref().filter(|g| !g.is_empty())
            && !groups.contains(&g)
        {
            groups.push(g);
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let root = nodes.iter().find(|n| n.name == group);
            let counted: Vec<&Node> = nodes
                .iter()
                .filter(|n| n.group.as_deref() == Some(group) && tally.category(n).is_some())
                .collect();
            let failures = counted
                .iter()
                .filter(|n| n.result == Some(ResultValue::Fail))
                .map(|n| display_path(n))
                .collect();
            JobSummary {
                name: group.to_owned(),
                result: root.and_then(|r| r.result),
                total: counted.len() as u64,
                failures,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::NodeKind;

    #[test]
    fn a_failing_case_is_counted_and_listed_once() {
        let mut nodes: Vec<Node> = Vec::new();
        let mut add = |kind, path: &[&str], parent: Option<usize>, group: &str, result| {
            let mut n = Node::new(kind, *path.last().unwrap_or(&""));
            n.id = Some(ObjectId::new());
            n.path = path.iter().map(|s| (*s).to_owned()).collect();
            n.parent = parent.and_then(|i| nodes[i].id);
            n.group = (!group.is_empty()).then(|| group.to_owned());
            n.result = Some(result);
            nodes.push(n);
            nodes.len() - 1
        };
        use ResultValue::{Fail, Pass, Skip};
        let c = add(NodeKind::Checkout, &["checkout"], None, "", Pass);
        let b = add(NodeKind::Kbuild, &["checkout", "kb"], Some(c), "kb", Pass);
        let j = add(
            NodeKind::Job,
            &["checkout", "kb", "ks"],
            Some(b),
            "ks",
            Fail,
        );
        let g = add(
            NodeKind::Test,
            &["checkout", "kb", "ks", "math"],
            Some(j),
            "ks",
            Fail,
        );
        add(
            NodeKind::Test,
            &["checkout", "kb", "ks", "math", "add"],
            Some(g),
            "ks",
            Pass,
        );
        add(
            NodeKind::Test,
            &["checkout", "kb", "ks", "math", "overflow"],
            Some(g),
            "ks",
            Fail,
        );
        add(
            NodeKind::Test,
            &["checkout", "kb", "ks", "optional"],
            Some(j),
            "ks",
            Skip,
        );
        let jobs = summarize(&nodes);
        assert_eq!(jobs.len(), 2);
        assert_eq!((jobs[0].name.as_str(), jobs[0].total), ("kb", 1));
        assert!(jobs[0].failures.is_empty());
        assert_eq!((jobs[1].name.as_str(), jobs[1].total), ("ks", 3));
        assert_eq!(jobs[1].result, Some(Fail));
        assert_eq!(jobs[1].failures, vec!["math.overflow".to_owned()]);
    }
}
