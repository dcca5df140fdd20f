//! Chaining: operators joined by a forward edge with the same parallelism, where the upstream
//! feeds nobody else and the downstream reads nothing else, run in one task and call each other
//! directly, with no channel between them (Flink's operator chaining).

use serde::{Deserialize, Serialize};
use sluice_core::{JobPlan, NodeKind, Partitioning, Result};

/// One task: a chain of operators, head first, run by `parallelism` subtasks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskPlan {
    pub id: usize,
    pub nodes: Vec<usize>,
    pub parallelism: usize,
    /// "Source: a -> Map -> Sink: b", for logs and the web UI.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    pub tasks: Vec<TaskPlan>,
    /// For each node: (task id, position in that task's chain).
    pub placement: Vec<(usize, usize)>,
}

impl ExecutionPlan {
    pub fn task_of(&self, node: usize) -> &TaskPlan {
        &self.tasks[self.placement[node].0]
    }

    /// Total subtasks, i.e. slots the job needs without slot sharing.
    pub fn subtasks(&self) -> usize {
        self.tasks.iter().map(|t| t.parallelism).sum()
    }
}

/// Validates `plan` and groups its operators into chained tasks.
pub fn build_execution_plan(plan: &JobPlan) -> Result<ExecutionPlan> {
    plan.validate()?;
    let order = plan.topological_order()?;
    let consumers = plan.consumers();
    let mut placement = vec![(usize::MAX, 0usize); plan.nodes.len()];
    let mut tasks: Vec<TaskPlan> = Vec::new();
    for id in order {
        let node = &plan.nodes[id];
        let chained_to = match node.inputs.as_slice() {
            [edge] if node.kind != NodeKind::Source => {
                let up = &plan.nodes[edge.from];
                let chainable = edge.partitioning == Partitioning::Forward
                    && up.parallelism == node.parallelism
                    && consumers[edge.from].len() == 1
                    && up.kind != NodeKind::Sink;
                chainable.then_some(edge.from)
            }
            _ => None,
        };
        match chained_to {
            Some(up) => {
                let (task, pos) = placement[up];
                debug_assert_eq!(
                    pos + 1,
                    tasks[task].nodes.len(),
                    "chains only grow at the tail"
                );
                tasks[task].nodes.push(id);
                tasks[task].name.push_str(&format!(" -> {}", node.name));
                placement[id] = (task, pos + 1);
            }
            None => {
                let task = tasks.len();
                tasks.push(TaskPlan {
                    id: task,
                    nodes: vec![id],
                    parallelism: node.parallelism,
                    name: node.name.clone(),
                });
                placement[id] = (task, 0);
            }
        }
    }
    Ok(ExecutionPlan { tasks, placement })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::{EdgePlan, NodePlan};

    fn node(id: usize, kind: NodeKind, p: usize, inputs: &[(usize, Partitioning)]) -> NodePlan {
        NodePlan {
            id,
            uid: format!("n{id}"),
            name: format!("N{id}"),
            kind,
            parallelism: p,
            keyed: false,
            inputs: inputs
                .iter()
                .map(|&(from, partitioning)| EdgePlan { from, partitioning })
                .collect(),
        }
    }

    #[test]
    fn forward_equal_parallelism_chains_and_keyed_edges_break_chains() {
        use Partitioning::*;
        let plan = JobPlan {
            name: "wc".into(),
            max_parallelism: 128,
            nodes: vec![
                node(0, NodeKind::Source, 2, &[]),
                node(1, NodeKind::Operator, 2, &[(0, Forward)]),
                node(2, NodeKind::Operator, 2, &[(1, Hash)]),
                node(3, NodeKind::Sink, 2, &[(2, Forward)]),
                node(4, NodeKind::Sink, 1, &[(1, Rebalance)]),
            ],
            config: Default::default(),
        };
        let exec = build_execution_plan(&plan).unwrap();
        // Node 1 feeds two consumers, so neither consumer chains to it; 0 -> 1 chain.
        let chains: Vec<Vec<usize>> = exec.tasks.iter().map(|t| t.nodes.clone()).collect();
        assert!(chains.contains(&vec![0, 1]), "{chains:?}");
        assert!(chains.contains(&vec![2, 3]), "{chains:?}");
        assert!(chains.contains(&vec![4]), "{chains:?}");
        assert_eq!(exec.subtasks(), 5);
    }
}
