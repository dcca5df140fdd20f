//! The logical graph the API builds: one node per transformation, each with the type-erased
//! runtime factories that deploy it, and a plan that the master can schedule without them.

use std::sync::Arc;

use sluice_core::{EdgePlan, JobPlan, NodeKind, NodePlan, Partitioning, Result, SluiceError};
use sluice_worker::Data;
use sluice_worker::node::{EdgeRuntime, NodeRuntime, PlainEdge};

/// How an edge wants records distributed; `Default` is forward when both sides have the same
/// parallelism and rebalance otherwise (Flink's default).
#[derive(Clone)]
pub(crate) enum EdgeKind {
    Default,
    Rebalance,
    Broadcast,
    Keyed(Arc<dyn EdgeRuntime>),
}

#[derive(Clone)]
pub(crate) struct EdgeDef {
    pub from: usize,
    pub kind: EdgeKind,
    /// Builds a plain (forward / rebalance / broadcast) edge for the record type.
    pub plain: fn(Partitioning) -> Arc<dyn EdgeRuntime>,
}

pub(crate) fn plain_edge<T: Data>(p: Partitioning) -> Arc<dyn EdgeRuntime> {
    Arc::new(PlainEdge::<T>::new(p))
}

pub(crate) struct NodeDef {
    pub name: String,
    pub kind: NodeKind,
    pub uid: Option<String>,
    pub parallelism: Option<usize>,
    /// Sources that cannot run in parallel (a collection, a socket) force parallelism 1.
    pub max_node_parallelism: Option<usize>,
    pub keyed: bool,
    pub inputs: Vec<EdgeDef>,
    pub runtime: Arc<dyn NodeRuntime>,
}

#[derive(Default)]
pub(crate) struct Graph {
    pub nodes: Vec<NodeDef>,
}

/// The graph resolved for one execution: the plan plus each edge's runtime.
pub(crate) struct ResolvedGraph {
    pub plan: JobPlan,
    /// `edges[node][input]`, parallel to `plan.nodes[node].inputs`.
    pub edges: Vec<Vec<Arc<dyn EdgeRuntime>>>,
    pub runtimes: Vec<Arc<dyn NodeRuntime>>,
}

impl Graph {
    pub fn add(&mut self, node: NodeDef) -> usize {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// Deterministic default uid from the graph position, used when the user set none.
    fn default_uid(&self, id: usize) -> String {
        let slug: String = self.nodes[id]
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        format!("{}-{id}", slug.trim_matches('-'))
    }

    pub fn resolve(
        &self,
        job_name: &str,
        default_parallelism: usize,
        max_parallelism: usize,
    ) -> Result<ResolvedGraph> {
        let mut nodes = Vec::with_capacity(self.nodes.len());
        let mut edges = Vec::with_capacity(self.nodes.len());
        let mut parallelism = Vec::with_capacity(self.nodes.len());
        for (id, n) in self.nodes.iter().enumerate() {
            let uid = n.uid.clone().unwrap_or_else(|| self.default_uid(id));
            let p = n.parallelism.unwrap_or_else(|| {
                default_parallelism.min(n.max_node_parallelism.unwrap_or(usize::MAX))
            });
            if let Some(max) = n.max_node_parallelism
                && p > max
            {
                return Err(SluiceError::InvalidGraph(format!(
                    "operator '{uid}' ({}) cannot run with parallelism {p}; at most {max}",
                    n.name
                )));
            }
            parallelism.push(p);
            let mut inputs = Vec::new();
            let mut node_edges = Vec::new();
            for e in &n.inputs {
                let (partitioning, rt) = match &e.kind {
                    EdgeKind::Keyed(rt) => (Partitioning::Hash, rt.clone()),
                    EdgeKind::Rebalance => {
                        (Partitioning::Rebalance, (e.plain)(Partitioning::Rebalance))
                    }
                    EdgeKind::Broadcast => {
                        (Partitioning::Broadcast, (e.plain)(Partitioning::Broadcast))
                    }
                    EdgeKind::Default => {
                        let p = if parallelism[e.from] == p {
                            Partitioning::Forward
                        } else {
                            Partitioning::Rebalance
                        };
                        (p, (e.plain)(p))
                    }
                };
                inputs.push(EdgePlan {
                    from: e.from,
                    partitioning,
                });
                node_edges.push(rt);
            }
            nodes.push(NodePlan {
                id,
                uid,
                name: n.name.clone(),
                kind: n.kind,
                parallelism: p,
                keyed: n.keyed,
                inputs,
            });
            edges.push(node_edges);
        }
        let plan = JobPlan {
            name: job_name.to_string(),
            max_parallelism,
            nodes,
            config: Default::default(),
        };
        plan.validate()?;
        Ok(ResolvedGraph {
            plan,
            edges,
            runtimes: self.nodes.iter().map(|n| n.runtime.clone()).collect(),
        })
    }
}
