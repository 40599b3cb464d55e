//! The nodes a mapping looks at ([`NodeIndex`]) and the objects a batch collects
//! ([`ObjectSet`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::objects::{Object, ObjectType};
use crate::models::{Node, ObjectId};

/// The nodes a mapping can look at: the nodes to map and their ancestors, and which of them
/// have children.
#[derive(Debug, Clone, Default)]
pub struct NodeIndex {
    nodes: HashMap<ObjectId, Node>,
    parents: HashSet<ObjectId>,
}

impl NodeIndex {
    /// An empty index.
    pub fn new() -> NodeIndex {
        NodeIndex::default()
    }

    /// Adds (or replaces) a node; its parent is noted as having children.
    pub fn insert(&mut self, node: Node) {
        if let Some(p) = node.parent {
            self.parents.insert(p);
        }
        if let Some(id) = node.id {
            self.nodes.insert(id, node);
        }
    }

    /// A node.
    pub fn get(&self, id: &ObjectId) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// Whether the node is known.
    pub fn contains(&self, id: &ObjectId) -> bool {
        self.nodes.contains_key(id)
    }

    /// Whether any known node has `id` as its parent.
    pub fn has_children(&self, id: &ObjectId) -> bool {
        self.parents.contains(id)
    }

    /// How many nodes it holds.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The ancestors of `node` that are in the index, nearest first (stops at the first
    /// missing one).
    pub fn ancestors<'a>(&'a self, node: &Node) -> impl Iterator<Item = &'a Node> + 'a {
        let mut next = node.parent;
        let mut hops = 0;
        std::iter::from_fn(move || {
            hops += 1;
            if hops > 64 {
                return None;
            }
            let n = self.nodes.get(&next?)?;
            next = n.parent;
            Some(n)
        })
    }

    /// The id of the first missing ancestor of `node`, if its chain is not complete up to the
    /// root or to a checkout.
    pub fn missing_ancestor(&self, node: &Node) -> Option<ObjectId> {
        let mut next = node.parent;
        for _ in 0..64 {
            let id = next?;
            match self.nodes.get(&id) {
                Some(n) if n.kind == "checkout" => return None,
                Some(n) => next = n.parent,
                None => return Some(id),
            }
        }
        None
    }
}

/// Objects from several nodes, de-duplicated by type and id (a dummy build comes with every
/// test hanging from the same checkout; the first one is kept), each with the nodes it came
/// from.
#[derive(Debug, Clone, Default)]
pub struct ObjectSet {
    objects: Vec<(Object, Vec<ObjectId>)>,
    seen: BTreeMap<(ObjectType, String), usize>,
}

impl ObjectSet {
    /// An empty set.
    pub fn new() -> ObjectSet {
        ObjectSet::default()
    }

    /// Adds an object made from `node`; a duplicate only records the node.
    pub fn add(&mut self, object: Object, node: ObjectId) {
        let key = (object.object_type(), object.id().to_owned());
        match self.seen.get(&key) {
            Some(&i) => {
                if let Some((_, nodes)) = self.objects.get_mut(i)
                    && !nodes.contains(&node)
                {
                    nodes.push(node);
                }
            }
            None => {
                self.seen.insert(key, self.objects.len());
                self.objects.push((object, vec![node]));
            }
        }
    }

    /// The objects with their source nodes.
    pub fn into_inner(self) -> Vec<(Object, Vec<ObjectId>)> {
        self.objects
    }

    /// How many objects.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}
