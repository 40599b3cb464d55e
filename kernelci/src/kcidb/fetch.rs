//! Reading node trees from the API for the mapping: nodes by id, whole subtrees, the
//! ancestors a mapping looks at, and a whole checkout tree as one document
//! ([`export_checkout`], behind `kci kcidb export`). Queries go by batches with `id__in` and
//! `parent__in` (this server's `__in` operator).

use std::collections::HashSet;

use super::excerpt::LogExcerpts;
use super::mapping::{Decision, Mapper, NodeIndex, ObjectSet, Skip};
use super::{KcidbError, KcidbResult, Prepared, prepare};
use crate::client::Api;
use crate::models::{Node, ObjectId};

/// How many ids go into one `id__in` / `parent__in` query.
pub const QUERY_BATCH: usize = 100;

fn joined(ids: &[ObjectId]) -> String {
    ids.iter()
        .map(ObjectId::to_hex)
        .collect::<Vec<_>>()
        .join(",")
}

/// The nodes with these ids (missing ones are left out).
pub async fn nodes_by_id(api: &dyn Api, ids: &[ObjectId]) -> KcidbResult<Vec<Node>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(QUERY_BATCH) {
        out.extend(
            api.find_nodes_fast(&[("id__in", &joined(chunk))])
                .await
                .map_err(KcidbError::from)?,
        );
    }
    Ok(out)
}

/// Every node below `roots`, level by level, added to `index`; returns them.
pub async fn descendants(
    api: &dyn Api,
    roots: &[ObjectId],
    index: &mut NodeIndex,
) -> KcidbResult<Vec<Node>> {
    let mut out = Vec::new();
    let mut level: Vec<ObjectId> = roots.to_vec();
    let mut seen: HashSet<ObjectId> = roots.iter().copied().collect();
    while !level.is_empty() {
        let mut next = Vec::new();
        for chunk in level.chunks(QUERY_BATCH) {
            let children = api
                .find_nodes_fast(&[("parent__in", &joined(chunk))])
                .await
                .map_err(KcidbError::from)?;
            for child in children {
                let Some(id) = child.id else { continue };
                if seen.insert(id) {
                    next.push(id);
                    index.insert(child.clone());
                    out.push(child);
                }
            }
        }
        level = next;
    }
    Ok(out)
}

/// Fetches the ancestors of `nodes` missing from `index`, up to their checkout or root.
pub async fn complete_ancestors(
    api: &dyn Api,
    nodes: &[Node],
    index: &mut NodeIndex,
) -> KcidbResult<()> {
    let mut asked: HashSet<ObjectId> = HashSet::new();
    for _ in 0..64 {
        let mut missing: Vec<ObjectId> = nodes
            .iter()
            .filter_map(|n| index.missing_ancestor(n))
            .filter(|id| !asked.contains(id))
            .collect();
        missing.sort();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        asked.extend(missing.iter().copied());
        for node in nodes_by_id(api, &missing).await? {
            index.insert(node);
        }
    }
    Ok(())
}

/// What `kci kcidb export` prints: every node of one checkout's tree that would be sent,
/// mapped, checked, in one document (log excerpts filled when `excerpts` is given). Nodes the
/// bridge would skip or defer are left out; invalid objects are in [`Prepared::invalid`].
pub async fn export_checkout(
    api: &dyn Api,
    mapper: &Mapper,
    checkout: ObjectId,
    excerpts: Option<&LogExcerpts>,
) -> KcidbResult<(Prepared, Vec<(ObjectId, Skip)>)> {
    let root = nodes_by_id(api, &[checkout])
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| KcidbError::Config(format!("no node {checkout}")))?;
    if root.kind != "checkout" {
        return Err(KcidbError::Config(format!(
            "node {checkout} is a {}, not a checkout",
            root.kind
        )));
    }
    let mut index = NodeIndex::new();
    index.insert(root.clone());
    let mut nodes = vec![root];
    nodes.extend(descendants(api, &[checkout], &mut index).await?);
    let mut set = ObjectSet::new();
    let mut skipped = Vec::new();
    for node in &nodes {
        let Some(id) = node.id else { continue };
        match mapper.map(node, &index) {
            Decision::Send(objects) => {
                for o in objects {
                    set.add(o, id);
                }
            }
            Decision::Skip(why) => skipped.push((id, why)),
            Decision::Defer => {}
        }
    }
    let mut units = set.into_inner();
    if let Some(ex) = excerpts {
        ex.fill(units.iter_mut().map(|(o, _)| o)).await;
    }
    Ok((prepare(units), skipped))
}
