//! Typed streams and their transformations. Each call adds a node to the environment's graph;
//! `uid`, `name` and `set_parallelism` adjust the node just added, like Flink's fluent API.

use std::fmt::Display;
use std::marker::PhantomData;
use std::ops::AddAssign;
use std::sync::Arc;
use std::time::Duration;

use sluice_core::{NodeKind, Result};
use sluice_worker::connectors::collect::CollectHandle;
use sluice_worker::connectors::file_sink::{FileSink, JsonEncoder, RollingPolicy, TextEncoder};
use sluice_worker::connectors::print::PrintSink;
use sluice_worker::key::{FieldKey, KeySelector, OwnedKey};
use sluice_worker::node::{KeyedEdge, NodeRuntime, OperatorRuntime};
use sluice_worker::operators::basic::{Filter, FlatMap, Identity, Map};
use sluice_worker::operators::keyed::KeyedMerge;
use sluice_worker::operators::process::{KeyedProcessFunction, KeyedProcessOperator};
use sluice_worker::operators::watermarks::BoundedOutOfOrderness;
use sluice_worker::operators::window::{
    AggregateFunction, CountAggregate, ReduceAggregate, SumAggregate, WindowAssigner,
    WindowOperator, Windowed,
};
use sluice_worker::{Collector, Data, Key, Operator};

use crate::env::StreamEnv;
use crate::graph::{EdgeDef, EdgeKind, NodeDef, plain_edge};

/// A stream of `T` records.
pub struct DataStream<T> {
    env: StreamEnv,
    node: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        DataStream {
            env: self.env.clone(),
            node: self.node,
            _t: PhantomData,
        }
    }
}

fn edge<T: Data>(from: usize, kind: EdgeKind) -> EdgeDef {
    EdgeDef {
        from,
        kind,
        plain: plain_edge::<T>,
    }
}

impl<T: Data> DataStream<T> {
    pub(crate) fn new(env: StreamEnv, node: usize) -> Self {
        DataStream {
            env,
            node,
            _t: PhantomData,
        }
    }

    fn add<O, Op, F>(
        &self,
        name: &str,
        kind: NodeKind,
        inputs: Vec<EdgeDef>,
        keyed: bool,
        factory: F,
    ) -> DataStream<O>
    where
        O: Data,
        Op: Operator<In = T, Out = O>,
        F: Fn() -> Op + Send + Sync + 'static,
    {
        let runtime: Arc<dyn NodeRuntime> = Arc::new(OperatorRuntime::new(factory));
        let id = self.env.add_node(NodeDef {
            name: name.to_string(),
            kind,
            uid: None,
            parallelism: None,
            max_node_parallelism: None,
            keyed,
            inputs,
            runtime,
        });
        DataStream::new(self.env.clone(), id)
    }

    /// Applies any [`Operator`] made fresh per subtask by `factory`.
    pub fn transform<O: Data, Op, F>(&self, name: &str, factory: F) -> DataStream<O>
    where
        Op: Operator<In = T, Out = O>,
        F: Fn() -> Op + Send + Sync + 'static,
    {
        self.add(
            name,
            NodeKind::Operator,
            vec![edge::<T>(self.node, EdgeKind::Default)],
            false,
            factory,
        )
    }

    /// Sets the stable identity of the operator just added; state is matched to operators by it.
    pub fn uid(self, uid: &str) -> Self {
        self.env.graph.borrow_mut().nodes[self.node].uid = Some(uid.to_string());
        self
    }

    pub fn name(self, name: &str) -> Self {
        self.env.graph.borrow_mut().nodes[self.node].name = name.to_string();
        self
    }

    pub fn set_parallelism(self, parallelism: usize) -> Self {
        self.env.graph.borrow_mut().nodes[self.node].parallelism = Some(parallelism);
        self
    }

    pub fn map<O: Data, F>(&self, f: F) -> DataStream<O>
    where
        F: Fn(T) -> O + Clone + Send + Sync + 'static,
    {
        self.transform("Map", move || Map::new(f.clone()))
    }

    pub fn filter<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(&T) -> bool + Clone + Send + Sync + 'static,
    {
        self.transform("Filter", move || Filter::new(f.clone()))
    }

    /// Zero or more outputs per record, from any iterable.
    pub fn flat_map<O: Data, I, F>(&self, f: F) -> DataStream<O>
    where
        I: IntoIterator<Item = O>,
        F: Fn(T) -> I + Clone + Send + Sync + 'static,
    {
        self.transform("FlatMap", move || {
            let f = f.clone();
            FlatMap::new(move |r: T, out: &mut Collector<O>| {
                for o in f(r) {
                    out.collect(o);
                }
                Ok(())
            })
        })
    }

    /// Flink-style flat map into a collector; an error fails the job (and triggers recovery).
    pub fn try_flat_map<O: Data, F>(&self, f: F) -> DataStream<O>
    where
        F: Fn(T, &mut Collector<O>) -> Result<()> + Clone + Send + Sync + 'static,
    {
        self.transform("FlatMap", move || FlatMap::new(f.clone()))
    }

    /// Merges this stream with others of the same type.
    pub fn union(&self, others: &[DataStream<T>]) -> DataStream<T> {
        let mut inputs = vec![edge::<T>(self.node, EdgeKind::Rebalance)];
        inputs.extend(
            others
                .iter()
                .map(|o| edge::<T>(o.node, EdgeKind::Rebalance)),
        );
        self.add(
            "Union",
            NodeKind::Operator,
            inputs,
            false,
            Identity::<T>::default,
        )
    }

    /// Distributes records round-robin over the next operator's subtasks.
    pub fn rebalance(&self) -> DataStream<T> {
        self.add(
            "Rebalance",
            NodeKind::Operator,
            vec![edge::<T>(self.node, EdgeKind::Rebalance)],
            false,
            Identity::<T>::default,
        )
    }

    /// Sends every record to every subtask of the next operator.
    pub fn broadcast(&self) -> DataStream<T> {
        self.add(
            "Broadcast",
            NodeKind::Operator,
            vec![edge::<T>(self.node, EdgeKind::Broadcast)],
            false,
            Identity::<T>::default,
        )
    }

    /// Partitions by a computed key.
    pub fn key_by<K: Key, F>(&self, f: F) -> KeyedStream<T, OwnedKey<F>>
    where
        F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            selector: OwnedKey(f),
        }
    }

    /// Partitions by a field of the record, borrowed (no clone to hash or look up state).
    pub fn key_by_field<K: Key, F>(&self, f: F) -> KeyedStream<T, FieldKey<F>>
    where
        F: for<'a> Fn(&'a T) -> &'a K + Clone + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            selector: FieldKey(f),
        }
    }

    /// Event time: takes each record's timestamp from `timestamp` and emits watermarks that
    /// trail the largest timestamp seen by `max_out_of_orderness`.
    pub fn assign_timestamps_and_watermarks<F>(
        &self,
        max_out_of_orderness: Duration,
        timestamp: F,
    ) -> DataStream<T>
    where
        F: Fn(&T) -> i64 + Clone + Send + Sync + 'static,
    {
        self.transform("Timestamps/Watermarks", move || {
            BoundedOutOfOrderness::new(max_out_of_orderness, timestamp.clone())
        })
    }

    fn sink<Op, F>(&self, name: &str, factory: F) -> SinkHandle
    where
        Op: Operator<In = T, Out = ()>,
        F: Fn() -> Op + Send + Sync + 'static,
    {
        let s = self.add(
            name,
            NodeKind::Sink,
            vec![edge::<T>(self.node, EdgeKind::Default)],
            false,
            factory,
        );
        SinkHandle { stream: s }
    }

    /// Writes records to any sink operator.
    pub fn add_sink<Op, F>(&self, name: &str, factory: F) -> SinkHandle
    where
        Op: Operator<In = T, Out = ()>,
        F: Fn() -> Op + Send + Sync + 'static,
    {
        self.sink(name, factory)
    }

    /// Prints each record to stdout (`N> record` when the sink runs in parallel).
    pub fn print(&self) -> SinkHandle
    where
        T: Display,
    {
        self.sink("Sink: Print", PrintSink::<T>::default)
    }

    /// Collects every record in memory; read the handle after `execute`.
    pub fn collect(&self) -> (CollectHandle<T>, SinkHandle) {
        let handle = CollectHandle::<T>::default();
        let h = handle.clone();
        let sink = self.sink("Sink: Collect", move || h.sink());
        (handle, sink)
    }

    /// Writes records as text lines into rolling part files under `dir`.
    pub fn write_text_files(
        &self,
        dir: impl AsRef<std::path::Path>,
        policy: RollingPolicy,
    ) -> SinkHandle
    where
        T: Display,
    {
        let dir = dir.as_ref().to_path_buf();
        self.sink("Sink: Files", move || {
            FileSink::new(dir.clone(), policy, TextEncoder)
        })
    }

    /// Writes records as JSON lines into rolling part files under `dir`.
    pub fn write_json_files(
        &self,
        dir: impl AsRef<std::path::Path>,
        policy: RollingPolicy,
    ) -> SinkHandle {
        let dir = dir.as_ref().to_path_buf();
        self.sink("Sink: Files", move || {
            FileSink::new(dir.clone(), policy, JsonEncoder)
        })
    }

    /// Collects into an existing handle (several jobs can share one, e.g. before and after
    /// a restore; publishing stays exactly-once across them).
    pub fn collect_into(&self, handle: &CollectHandle<T>) -> SinkHandle {
        let h = handle.clone();
        self.sink("Sink: Collect", move || h.sink())
    }

    /// Discards every record (benchmarks).
    pub fn discard(&self) -> SinkHandle {
        self.sink("Sink: Discard", Discard::<T>::default)
    }
}

/// A sink that drops what it receives.
pub struct Discard<T>(PhantomData<fn(T)>);

impl<T> Default for Discard<T> {
    fn default() -> Self {
        Discard(PhantomData)
    }
}

impl<T: Data> Operator for Discard<T> {
    type In = T;
    type Out = ();
    fn process_batch(
        &mut self,
        batch: sluice_worker::Batch<T>,
        _out: &mut Collector<()>,
        _ctx: &mut sluice_worker::OperatorContext,
    ) -> Result<()> {
        drop(batch);
        Ok(())
    }
}

/// The end of a stream: a sink, which can still be given a uid, name and parallelism.
pub struct SinkHandle {
    stream: DataStream<()>,
}

impl SinkHandle {
    pub fn uid(self, uid: &str) -> Self {
        SinkHandle {
            stream: self.stream.uid(uid),
        }
    }

    pub fn name(self, name: &str) -> Self {
        SinkHandle {
            stream: self.stream.name(name),
        }
    }

    pub fn set_parallelism(self, parallelism: usize) -> Self {
        SinkHandle {
            stream: self.stream.set_parallelism(parallelism),
        }
    }
}

/// A stream partitioned by key: keyed state and timers are per key.
pub struct KeyedStream<T, S> {
    stream: DataStream<T>,
    selector: S,
}

impl<T: Data, S: KeySelector<T>> KeyedStream<T, S> {
    fn keyed<O: Data, Op, F>(&self, name: &str, factory: F) -> DataStream<O>
    where
        Op: Operator<In = T, Out = O>,
        F: Fn() -> Op + Send + Sync + 'static,
    {
        let e = edge::<T>(
            self.stream.node,
            EdgeKind::Keyed(Arc::new(KeyedEdge::<T, S>::new(self.selector.clone()))),
        );
        self.stream
            .add(name, NodeKind::Operator, vec![e], true, factory)
    }

    /// Rolling reduce: emits the reduced value of the record's key after each record.
    pub fn reduce<F>(&self, f: F) -> DataStream<T>
    where
        F: Fn(T, T) -> T + Clone + Send + Sync + 'static,
    {
        let sel = self.selector.clone();
        self.keyed("Keyed Reduce", move || {
            let f = f.clone();
            KeyedMerge::new(
                sel.clone(),
                |r: &T| r.clone(),
                move |acc: &mut T, v: T| *acc = f(acc.clone(), v),
                |_r: T, acc: T| acc,
            )
        })
    }

    /// Keyed process function with state and timers; `factory` makes one per subtask.
    pub fn process<O: Data, F, P>(&self, factory: P) -> DataStream<O>
    where
        F: KeyedProcessFunction<S::Key, T, O>,
        P: Fn() -> F + Send + Sync + 'static,
    {
        let sel = self.selector.clone();
        self.keyed("KeyedProcess", move || {
            KeyedProcessOperator::new(sel.clone(), factory())
        })
    }

    /// Rolling count per key: `(key, count so far)`.
    pub fn count(&self) -> DataStream<(S::Key, u64)> {
        let sel = self.selector.clone();
        self.keyed("Keyed Count", move || {
            let s2 = sel.clone();
            KeyedMerge::new(
                sel.clone(),
                |_r: &T| 1u64,
                |acc: &mut u64, v: u64| *acc += v,
                move |r: T, c: u64| (s2.key_of(&r), c),
            )
        })
    }

    /// Event-time windows of this keyed stream.
    pub fn window(&self, assigner: WindowAssigner) -> WindowedStream<T, S> {
        WindowedStream {
            keyed: KeyedStream {
                stream: self.stream.clone(),
                selector: self.selector.clone(),
            },
            assigner,
        }
    }
}

/// Rolling aggregations over `(A, N)` pairs, keyed by any selector: the output keeps the
/// record's first field and replaces the second with the aggregate (Flink's `sum(1)`).
impl<A: Data, N, S> KeyedStream<(A, N), S>
where
    N: Data + Copy + AddAssign + PartialOrd,
    S: KeySelector<(A, N)>,
{
    fn rolling(&self, name: &str, merge: fn(&mut N, N)) -> DataStream<(A, N)> {
        let sel = self.selector.clone();
        self.keyed(name, move || {
            KeyedMerge::new(
                sel.clone(),
                |r: &(A, N)| r.1,
                merge,
                |r: (A, N), v: N| (r.0, v),
            )
        })
    }

    pub fn sum(&self) -> DataStream<(A, N)> {
        self.rolling("Keyed Sum", |acc, v| *acc += v)
    }

    pub fn min(&self) -> DataStream<(A, N)> {
        self.rolling("Keyed Min", |acc, v| {
            if v < *acc {
                *acc = v
            }
        })
    }

    pub fn max(&self) -> DataStream<(A, N)> {
        self.rolling("Keyed Max", |acc, v| {
            if v > *acc {
                *acc = v
            }
        })
    }
}

/// A keyed stream cut into event-time windows.
pub struct WindowedStream<T, S> {
    keyed: KeyedStream<T, S>,
    assigner: WindowAssigner,
}

impl<T: Data, S: KeySelector<T>> WindowedStream<T, S> {
    /// Aggregates each window incrementally with `agg`.
    pub fn aggregate<A: AggregateFunction<T>>(
        &self,
        agg: A,
    ) -> DataStream<Windowed<S::Key, A::Out>> {
        let sel = self.keyed.selector.clone();
        let assigner = self.assigner;
        let name = format!("Window({})", assigner.describe());
        self.keyed.keyed(&name, move || {
            WindowOperator::new(sel.clone(), assigner, agg.clone())
        })
    }

    pub fn count(&self) -> DataStream<Windowed<S::Key, u64>> {
        self.aggregate(CountAggregate)
    }

    pub fn sum<N, F>(&self, field: F) -> DataStream<Windowed<S::Key, N>>
    where
        N: Data + Default + AddAssign,
        F: Fn(&T) -> N + Clone + Send + Sync + 'static,
    {
        self.aggregate(SumAggregate(field))
    }

    pub fn reduce<F>(&self, f: F) -> DataStream<Windowed<S::Key, T>>
    where
        F: Fn(&T, &T) -> T + Clone + Send + Sync + 'static,
    {
        self.aggregate(ReduceAggregate(f))
    }
}
