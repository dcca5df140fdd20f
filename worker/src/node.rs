//! Type-erased building blocks of a deployed job. The job API knows every record type when the
//! user builds the graph; it captures that knowledge in these factories, so the runtime can wire
//! channels and chains from a plan alone. Types are checked once, when a task is built; the hot
//! path is fully typed.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use sluice_core::{Result, SluiceError};

use crate::context::OperatorContext;
use crate::data::Data;
use crate::emit::{Emit, Fanout, Terminal};
use crate::exchange::{
    Broadcast, ByKey, CHANNEL_CAPACITY, ExchangeWriter, Inlet, Outlet, Partitioner, RoundRobin,
    edge_channels,
};
use crate::key::KeySelector;
use crate::net::{ChannelId, DataPlane, NetInlet, NetOutlet};
use crate::operator::{Operator, OperatorNode};
use crate::source::{Source, forward_source_watermarks};
use crate::task::{TaskEnv, run_input_task, run_source_task};
use sluice_core::Partitioning;

/// A boxed `Box<dyn Emit<T>>`, its record type erased.
pub type AnyEmit = Box<dyn Any>;
/// A boxed value that can move to a task thread (senders, receivers).
pub type AnySend = Box<dyn Any + Send>;

fn mismatch(what: &str) -> SluiceError {
    SluiceError::Internal(format!("record type mismatch while wiring {what}"))
}

/// One node of the job graph, as the runtime builds it.
pub trait NodeRuntime: Send + Sync {
    /// Wraps the node's operator around `downstream` (a `Box<dyn Emit<Out>>`) and returns the
    /// chain link that accepts its input (a `Box<dyn Emit<In>>`). Opens the operator.
    fn build_link(&self, ctx: OperatorContext, downstream: AnyEmit) -> Result<AnyEmit>;
    /// Runs a source task with this node's source at its head.
    fn run_source(&self, ctx: OperatorContext, downstream: AnyEmit, env: TaskEnv) -> Result<()>;
    /// Runs an input task reading `receivers` (each a `Vec<Inlet<In>>`) into `head`.
    fn run_input(&self, receivers: Vec<AnySend>, head: AnyEmit, env: TaskEnv) -> Result<()>;
    /// Several consumers of this node's output as one `Box<dyn Emit<Out>>`.
    fn fanout(&self, outputs: Vec<AnyEmit>) -> Result<AnyEmit>;
    /// The downstream of a node whose output nobody reads.
    fn terminal(&self) -> AnyEmit;
}

fn take_emit<T: 'static>(e: AnyEmit, what: &str) -> Result<Box<dyn Emit<T>>> {
    e.downcast::<Box<dyn Emit<T>>>()
        .map(|b| *b)
        .map_err(|_| mismatch(what))
}

fn give_emit<T: 'static>(e: Box<dyn Emit<T>>) -> AnyEmit {
    Box::new(e)
}

/// A node backed by an [`Operator`] made fresh for each subtask by `factory`.
pub struct OperatorRuntime<Op, F> {
    factory: F,
    _op: std::marker::PhantomData<fn() -> Op>,
}

impl<Op: Operator, F: Fn() -> Op + Send + Sync> OperatorRuntime<Op, F> {
    pub fn new(factory: F) -> Self {
        OperatorRuntime {
            factory,
            _op: std::marker::PhantomData,
        }
    }
}

impl<Op: Operator, F: Fn() -> Op + Send + Sync> NodeRuntime for OperatorRuntime<Op, F> {
    fn build_link(&self, ctx: OperatorContext, downstream: AnyEmit) -> Result<AnyEmit> {
        let next = take_emit::<Op::Out>(downstream, &ctx.uid)?;
        let node = OperatorNode::open((self.factory)(), ctx, next)?;
        Ok(give_emit::<Op::In>(Box::new(node)))
    }

    fn run_source(&self, ctx: OperatorContext, _d: AnyEmit, _env: TaskEnv) -> Result<()> {
        Err(SluiceError::Internal(format!(
            "operator '{}' is not a source",
            ctx.uid
        )))
    }

    fn run_input(&self, receivers: Vec<AnySend>, head: AnyEmit, env: TaskEnv) -> Result<()> {
        run_typed_input::<Op::In>(receivers, head, env)
    }

    fn fanout(&self, outputs: Vec<AnyEmit>) -> Result<AnyEmit> {
        typed_fanout::<Op::Out>(outputs)
    }

    fn terminal(&self) -> AnyEmit {
        give_emit::<Op::Out>(Box::new(Terminal))
    }
}

fn run_typed_input<T: Data>(receivers: Vec<AnySend>, head: AnyEmit, env: TaskEnv) -> Result<()> {
    let head = take_emit::<T>(head, &env.name)?;
    let mut inputs: Vec<Inlet<T>> = Vec::new();
    for r in receivers {
        let rs = r
            .downcast::<Vec<Inlet<T>>>()
            .map_err(|_| mismatch(&env.name))?;
        inputs.extend(*rs);
    }
    run_input_task(inputs, head, env)
}

fn typed_fanout<T: Data>(outputs: Vec<AnyEmit>) -> Result<AnyEmit> {
    let mut outs = outputs
        .into_iter()
        .map(|o| take_emit::<T>(o, "fanout"))
        .collect::<Result<Vec<_>>>()?;
    Ok(if outs.len() == 1 {
        give_emit::<T>(outs.pop().expect("one output"))
    } else {
        give_emit::<T>(Box::new(Fanout { outputs: outs }))
    })
}

/// A node backed by a [`Source`].
pub struct SourceRuntime<S, F> {
    factory: F,
    _s: std::marker::PhantomData<fn() -> S>,
}

impl<S: Source, F: Fn() -> S + Send + Sync> SourceRuntime<S, F> {
    pub fn new(factory: F) -> Self {
        SourceRuntime {
            factory,
            _s: std::marker::PhantomData,
        }
    }
}

impl<S: Source, F: Fn() -> S + Send + Sync> NodeRuntime for SourceRuntime<S, F> {
    fn build_link(&self, ctx: OperatorContext, _d: AnyEmit) -> Result<AnyEmit> {
        Err(SluiceError::Internal(format!(
            "source '{}' cannot be chained after another operator",
            ctx.uid
        )))
    }

    fn run_source(&self, ctx: OperatorContext, downstream: AnyEmit, env: TaskEnv) -> Result<()> {
        let head = take_emit::<S::Out>(downstream, &ctx.uid)?;
        let (source, head) = forward_source_watermarks((self.factory)(), head);
        run_source_task(source, ctx, head, env)
    }

    fn run_input(&self, _r: Vec<AnySend>, _h: AnyEmit, env: TaskEnv) -> Result<()> {
        Err(SluiceError::Internal(format!(
            "source {} has no inputs",
            env.name
        )))
    }

    fn fanout(&self, outputs: Vec<AnyEmit>) -> Result<AnyEmit> {
        typed_fanout::<S::Out>(outputs)
    }

    fn terminal(&self) -> AnyEmit {
        give_emit::<S::Out>(Box::new(Terminal))
    }
}

/// Where the two ends of an edge run when a job spans processes.
pub struct EdgePlacement<'a> {
    pub plane: &'a DataPlane,
    /// Identifies the edge's channels: attempt, consumer node, input index at the consumer.
    pub attempt: u64,
    pub node: u32,
    pub input: u16,
    /// Data address of the process running each producer / consumer subtask.
    pub producers: &'a [SocketAddr],
    pub consumers: &'a [SocketAddr],
    /// Bytes each producer subtask sent to other processes over this edge, and each consumer
    /// subtask received from them (one counter per subtask, shared by its edges).
    pub bytes_out: &'a [Arc<AtomicU64>],
    pub bytes_in: &'a [Arc<AtomicU64>],
}

impl EdgePlacement<'_> {
    fn is_local(&self, addr: SocketAddr) -> bool {
        addr == self.plane.local_addr()
    }

    fn channel(&self, producer: usize, consumer: usize) -> ChannelId {
        ChannelId {
            attempt: self.attempt,
            node: self.node,
            input: self.input,
            producer: producer as u32,
            consumer: consumer as u32,
        }
    }
}

/// Per producer subtask its senders, per consumer subtask its receivers; `None` for subtasks
/// that run in another process.
pub type PlacedChannels = (Vec<Option<AnySend>>, Vec<Option<AnySend>>);

/// The channels and writers of one edge, typed by its record type.
pub trait EdgeRuntime: Send + Sync {
    fn partitioning(&self) -> Partitioning;
    /// `(per producer: its senders, per consumer: its receivers)`.
    fn channels(&self, producers: usize, consumers: usize) -> (Vec<AnySend>, Vec<AnySend>);
    /// Like [`EdgeRuntime::channels`] for an edge spread over processes: only the subtasks
    /// running in this process get senders / receivers (`None` for the others); a pair with
    /// its other end elsewhere gets a remote outlet / inlet on the data plane.
    fn placed_channels(&self, placement: &EdgePlacement<'_>) -> Result<PlacedChannels>;
    /// The writer of producer `subtask` over `senders`, as a `Box<dyn Emit<T>>`. It adds the
    /// time it waits for room downstream to `blocked` (nanoseconds).
    fn writer(
        &self,
        senders: AnySend,
        subtask: usize,
        consumers: usize,
        max_parallelism: usize,
        cancel: Arc<AtomicBool>,
        blocked: Arc<AtomicU64>,
    ) -> Result<AnyEmit>;
}

/// Forward, rebalance and broadcast edges.
pub struct PlainEdge<T> {
    partitioning: Partitioning,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T: Data> PlainEdge<T> {
    pub fn new(partitioning: Partitioning) -> Self {
        assert!(
            partitioning != Partitioning::Hash,
            "hash edges need a key selector"
        );
        PlainEdge {
            partitioning,
            _t: std::marker::PhantomData,
        }
    }
}

type Senders<T> = Vec<(usize, Outlet<T>)>;

fn split_channels<T: Data>(
    producers: usize,
    consumers: usize,
    p: Partitioning,
) -> (Vec<AnySend>, Vec<AnySend>) {
    let ch = edge_channels::<T>(producers, consumers, p);
    (
        ch.senders
            .into_iter()
            .map(|s| Box::new(s) as AnySend)
            .collect(),
        ch.receivers
            .into_iter()
            .map(|r| Box::new(r) as AnySend)
            .collect(),
    )
}

fn placed<T: Data>(p: Partitioning, placement: &EdgePlacement<'_>) -> Result<PlacedChannels> {
    let mut senders: Vec<Option<Senders<T>>> = placement
        .producers
        .iter()
        .map(|a| placement.is_local(*a).then(Vec::new))
        .collect();
    let mut receivers: Vec<Option<Vec<Inlet<T>>>> = placement
        .consumers
        .iter()
        .map(|a| placement.is_local(*a).then(Vec::new))
        .collect();
    for (i, sender) in senders.iter_mut().enumerate() {
        for (j, receiver) in receivers.iter_mut().enumerate() {
            if p == Partitioning::Forward && i != j {
                continue;
            }
            match (&mut *sender, receiver) {
                (Some(s), Some(r)) => {
                    let (tx, rx) = crossbeam_channel::bounded(CHANNEL_CAPACITY);
                    s.push((j, Outlet::Local(tx)));
                    r.push(Inlet::Local(rx));
                }
                (Some(s), None) => {
                    let net = placement
                        .plane
                        .open_sender(placement.consumers[j], placement.channel(i, j))?;
                    let bytes = placement.bytes_out[i].clone();
                    s.push((j, Outlet::Remote(NetOutlet::new(net, bytes))));
                }
                (None, Some(r)) => {
                    let net = placement.plane.open_receiver(placement.channel(i, j))?;
                    let bytes = placement.bytes_in[j].clone();
                    r.push(Inlet::Remote(NetInlet::new(net, bytes)));
                }
                (None, None) => {}
            }
        }
    }
    Ok((
        senders
            .into_iter()
            .map(|s| s.map(|s| Box::new(s) as AnySend))
            .collect(),
        receivers
            .into_iter()
            .map(|r| r.map(|r| Box::new(r) as AnySend))
            .collect(),
    ))
}

fn make_writer<T: Data, P: Partitioner<T>>(
    senders: AnySend,
    consumers: usize,
    partitioner: P,
    cancel: Arc<AtomicBool>,
    blocked: Arc<AtomicU64>,
) -> Result<AnyEmit> {
    let s = senders
        .downcast::<Senders<T>>()
        .map_err(|_| mismatch("an exchange"))?;
    Ok(give_emit::<T>(Box::new(ExchangeWriter::new(
        *s,
        consumers,
        partitioner,
        cancel,
        blocked,
    ))))
}

impl<T: Data> EdgeRuntime for PlainEdge<T> {
    fn partitioning(&self) -> Partitioning {
        self.partitioning
    }

    fn channels(&self, producers: usize, consumers: usize) -> (Vec<AnySend>, Vec<AnySend>) {
        split_channels::<T>(producers, consumers, self.partitioning)
    }

    fn placed_channels(&self, placement: &EdgePlacement<'_>) -> Result<PlacedChannels> {
        placed::<T>(self.partitioning, placement)
    }

    fn writer(
        &self,
        senders: AnySend,
        subtask: usize,
        consumers: usize,
        _max: usize,
        cancel: Arc<AtomicBool>,
        blocked: Arc<AtomicU64>,
    ) -> Result<AnyEmit> {
        match self.partitioning {
            Partitioning::Broadcast => {
                make_writer::<T, _>(senders, consumers, Broadcast, cancel, blocked)
            }
            _ => {
                let rr = RoundRobin::starting_at(subtask);
                make_writer::<T, _>(senders, consumers, rr, cancel, blocked)
            }
        }
    }
}

/// A keyed edge: records go to the subtask owning their key's key group.
pub struct KeyedEdge<T, S> {
    selector: S,
    _t: std::marker::PhantomData<fn(T)>,
}

impl<T: Data, S: KeySelector<T>> KeyedEdge<T, S> {
    pub fn new(selector: S) -> Self {
        KeyedEdge {
            selector,
            _t: std::marker::PhantomData,
        }
    }
}

impl<T: Data, S: KeySelector<T>> EdgeRuntime for KeyedEdge<T, S> {
    fn partitioning(&self) -> Partitioning {
        Partitioning::Hash
    }

    fn channels(&self, producers: usize, consumers: usize) -> (Vec<AnySend>, Vec<AnySend>) {
        split_channels::<T>(producers, consumers, Partitioning::Hash)
    }

    fn placed_channels(&self, placement: &EdgePlacement<'_>) -> Result<PlacedChannels> {
        placed::<T>(Partitioning::Hash, placement)
    }

    fn writer(
        &self,
        senders: AnySend,
        _subtask: usize,
        consumers: usize,
        max: usize,
        cancel: Arc<AtomicBool>,
        blocked: Arc<AtomicU64>,
    ) -> Result<AnyEmit> {
        let p = ByKey {
            selector: self.selector.clone(),
            max_parallelism: max,
        };
        make_writer::<T, _>(senders, consumers, p, cancel, blocked)
    }
}
