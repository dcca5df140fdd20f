//! The job plan: a serialisable description of a job's operators and edges. The master
//! schedules from it without the user's code; the job binary builds it from the user's program.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

use crate::error::{Result, SluiceError};

/// How records travel along an edge from one operator's subtasks to the next one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Partitioning {
    /// Subtask i sends to subtask i; requires equal parallelism.
    Forward,
    /// Round-robin over all downstream subtasks.
    Rebalance,
    /// By key group of the record's key.
    Hash,
    /// Every record to every downstream subtask.
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NodeKind {
    Source,
    Operator,
    Sink,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgePlan {
    /// Index of the upstream node in [`JobPlan::nodes`].
    pub from: usize,
    pub partitioning: Partitioning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub id: usize,
    /// Stable identity of the operator across job versions; state is matched by it.
    pub uid: String,
    /// Human-readable operator name ("Map", "Window(Tumbling 10s)", ...).
    pub name: String,
    pub kind: NodeKind,
    pub parallelism: usize,
    /// Whether the operator keeps keyed state (its input edges are hash-partitioned).
    pub keyed: bool,
    pub inputs: Vec<EdgePlan>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPlan {
    pub name: String,
    pub max_parallelism: usize,
    pub nodes: Vec<NodePlan>,
    /// The job's effective configuration (dotted keys), for the master and the plan printout.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

impl JobPlan {
    /// Rejects plans that cannot run: cycles, dangling edges, duplicate uids, parallelism out of
    /// bounds, forward edges between different parallelisms. Every message names the operator.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SluiceError::InvalidGraph(m));
        if self.max_parallelism == 0 || self.max_parallelism > 32768 {
            return bad(format!(
                "max parallelism {} of job '{}' must be in 1..=32768",
                self.max_parallelism, self.name
            ));
        }
        if self.nodes.is_empty() {
            return bad(format!("job '{}' has no operators", self.name));
        }
        let mut uids = HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.id != i {
                return bad(format!(
                    "operator '{}' has id {} at position {i}",
                    n.uid, n.id
                ));
            }
            if n.uid.is_empty() {
                return bad(format!("operator #{i} ('{}') has an empty uid", n.name));
            }
            if !uids.insert(n.uid.as_str()) {
                return bad(format!(
                    "duplicate uid '{}' (operator '{}'); every operator needs a unique uid",
                    n.uid, n.name
                ));
            }
            if n.parallelism == 0 {
                return bad(format!("operator '{}' has parallelism 0", n.uid));
            }
            if n.parallelism > self.max_parallelism {
                return bad(format!(
                    "operator '{}' has parallelism {} above the job's max parallelism {} \
                     (set pipeline.max-parallelism higher)",
                    n.uid, n.parallelism, self.max_parallelism
                ));
            }
            if n.kind == NodeKind::Source && !n.inputs.is_empty() {
                return bad(format!("source '{}' has inputs", n.uid));
            }
            if n.kind != NodeKind::Source && n.inputs.is_empty() {
                return bad(format!("operator '{}' has no input", n.uid));
            }
            for e in &n.inputs {
                let Some(up) = self.nodes.get(e.from) else {
                    return bad(format!(
                        "operator '{}' reads from unknown operator #{}",
                        n.uid, e.from
                    ));
                };
                if e.partitioning == Partitioning::Forward && up.parallelism != n.parallelism {
                    return bad(format!(
                        "forward edge from '{}' (parallelism {}) to '{}' (parallelism {}) needs equal parallelism",
                        up.uid, up.parallelism, n.uid, n.parallelism
                    ));
                }
            }
        }
        self.topological_order().map(|_| ())
    }

    /// Node ids in an order where every node comes after its inputs; an error names a node on a cycle.
    pub fn topological_order(&self) -> Result<Vec<usize>> {
        let n = self.nodes.len();
        let mut indegree = vec![0usize; n];
        let mut consumers = vec![Vec::new(); n];
        for node in &self.nodes {
            for e in &node.inputs {
                indegree[node.id] += 1;
                consumers[e.from].push(node.id);
            }
        }
        let mut ready: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut order = Vec::with_capacity(n);
        while let Some(i) = ready.pop() {
            order.push(i);
            for &c in &consumers[i] {
                indegree[c] -= 1;
                if indegree[c] == 0 {
                    ready.push(c);
                }
            }
        }
        if order.len() != n {
            let on_cycle = (0..n)
                .find(|&i| indegree[i] > 0)
                .expect("a node with inputs left");
            return Err(SluiceError::InvalidGraph(format!(
                "the job graph has a cycle through operator '{}'",
                self.nodes[on_cycle].uid
            )));
        }
        Ok(order)
    }

    /// For each node, the ids of the nodes that read from it.
    pub fn consumers(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.nodes.len()];
        for node in &self.nodes {
            for e in &node.inputs {
                out[e.from].push(node.id);
            }
        }
        out
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serialises")
    }

    /// Identifies the graph (name, operators, parallelism, edges; not the configuration), so
    /// a master can tell that a worker process built the same job it planned.
    pub fn fingerprint(&self) -> u64 {
        let graph = serde_json::to_vec(&(&self.name, self.max_parallelism, &self.nodes))
            .expect("a plan always serialises");
        xxhash_rust::xxh3::xxh3_64(&graph)
    }

    /// Parses the JSON printed by [`JobPlan::to_json`] and validates it.
    pub fn from_json(json: &str) -> Result<JobPlan> {
        let plan: JobPlan = serde_json::from_str(json)
            .map_err(|e| SluiceError::InvalidGraph(format!("the job plan does not parse: {e}")))?;
        plan.validate()?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: usize, uid: &str, kind: NodeKind, p: usize, inputs: &[usize]) -> NodePlan {
        NodePlan {
            id,
            uid: uid.into(),
            name: uid.into(),
            kind,
            parallelism: p,
            keyed: false,
            inputs: inputs
                .iter()
                .map(|&from| EdgePlan {
                    from,
                    partitioning: Partitioning::Rebalance,
                })
                .collect(),
        }
    }

    fn plan(nodes: Vec<NodePlan>) -> JobPlan {
        JobPlan {
            name: "t".into(),
            max_parallelism: 128,
            nodes,
            config: Default::default(),
        }
    }

    #[test]
    fn rejects_cycle_naming_an_operator() {
        let p = plan(vec![
            node(0, "src", NodeKind::Source, 1, &[]),
            node(1, "a", NodeKind::Operator, 1, &[0, 2]),
            node(2, "b", NodeKind::Operator, 1, &[1]),
        ]);
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("cycle") && (e.contains("'a'") || e.contains("'b'")),
            "{e}"
        );
    }

    #[test]
    fn rejects_duplicate_uid_and_excess_parallelism() {
        let p = plan(vec![
            node(0, "src", NodeKind::Source, 1, &[]),
            node(1, "src", NodeKind::Sink, 1, &[0]),
        ]);
        assert!(
            p.validate()
                .unwrap_err()
                .to_string()
                .contains("duplicate uid 'src'")
        );
        let p = plan(vec![
            node(0, "src", NodeKind::Source, 1, &[]),
            node(1, "wide", NodeKind::Sink, 200, &[0]),
        ]);
        let e = p.validate().unwrap_err().to_string();
        assert!(
            e.contains("'wide'") && e.contains("200") && e.contains("128"),
            "{e}"
        );
    }

    #[test]
    fn plan_round_trips_as_json() {
        let p = plan(vec![
            node(0, "src", NodeKind::Source, 2, &[]),
            node(1, "sink", NodeKind::Sink, 1, &[0]),
        ]);
        p.validate().unwrap();
        let back: JobPlan = serde_json::from_str(&p.to_json()).unwrap();
        assert_eq!(back, p);
    }
}
