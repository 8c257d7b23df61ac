//! How the records of an edge are spread over the consumer's subtasks.
//!
//! A router is typed (it knows the record type and, for hash partitioning, the key) but the
//! task drives it through [`ErasedRouter`]. Routers buffer records per target channel and hand
//! out a batch when it reaches the batch size, so records cross channels in batches.

use std::sync::Arc;

use sluice_state::{key_group_for, KeyGroup};

use crate::data::{Data, Key, Record};
use crate::operator::AnyBatch;

/// The partitioning of an edge, as shown in plans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionKind {
    /// Subtask i sends to subtask i (same parallelism on both sides; allows chaining).
    Forward,
    /// By key group of the record's key: every record of a key reaches the same subtask.
    Hash,
    /// Round-robin, to spread load evenly.
    Rebalance,
    /// Every record to every subtask.
    Broadcast,
}

impl PartitionKind {
    /// Flink's name for the partitioning.
    pub fn name(self) -> &'static str {
        match self {
            PartitionKind::Forward => "FORWARD",
            PartitionKind::Hash => "HASH",
            PartitionKind::Rebalance => "REBALANCE",
            PartitionKind::Broadcast => "BROADCAST",
        }
    }
}

/// A batch ready to go to one target subtask.
pub(crate) type ReadyBatch = (usize, AnyBatch);

/// The runtime's view of a router.
pub(crate) trait ErasedRouter: Send + Sync {
    /// Spreads `batch` into per-target buffers, moving full ones to `ready`.
    fn push(&mut self, batch: AnyBatch, ready: &mut Vec<ReadyBatch>);
    /// A copy of `batch` (when one output feeds several edges).
    fn clone_batch(&self, batch: &AnyBatch) -> AnyBatch;
    /// Moves every non-empty buffer to `ready`.
    fn flush(&mut self, ready: &mut Vec<ReadyBatch>);
}

/// What a router is built for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RouterArgs {
    /// The sending subtask.
    pub(crate) sender: u32,
    /// The number of channels it sends to.
    pub(crate) targets: u32,
    /// Records per batch.
    pub(crate) batch_size: usize,
    /// Key groups of the job.
    pub(crate) max_parallelism: u32,
}

/// Builds the router of one sender subtask.
pub(crate) type RouterFactory = Arc<dyn Fn(RouterArgs) -> Box<dyn ErasedRouter> + Send + Sync>;

struct Buffers<T> {
    bufs: Vec<Vec<Record<T>>>,
    batch_size: usize,
}

impl<T: Data> Buffers<T> {
    fn new(targets: u32, batch_size: usize) -> Self {
        Buffers {
            bufs: (0..targets).map(|_| Vec::new()).collect(),
            batch_size,
        }
    }

    #[inline]
    fn add(&mut self, target: usize, r: Record<T>, ready: &mut Vec<ReadyBatch>) {
        let buf = &mut self.bufs[target];
        if buf.capacity() == 0 {
            buf.reserve_exact(self.batch_size);
        }
        buf.push(r);
        if buf.len() >= self.batch_size {
            let full = std::mem::take(buf);
            ready.push((target, Box::new(full)));
        }
    }

    fn flush(&mut self, ready: &mut Vec<ReadyBatch>) {
        for (t, buf) in self.bufs.iter_mut().enumerate() {
            if !buf.is_empty() {
                ready.push((t, Box::new(std::mem::take(buf))));
            }
        }
    }
}

fn downcast<T: Data>(batch: AnyBatch) -> Vec<Record<T>> {
    *batch
        .downcast::<Vec<Record<T>>>()
        .unwrap_or_else(|_| panic!("router got a batch of the wrong type: mismatched job graph"))
}

fn clone_typed<T: Data>(batch: &AnyBatch) -> AnyBatch {
    let b = batch
        .downcast_ref::<Vec<Record<T>>>()
        .unwrap_or_else(|| panic!("router got a batch of the wrong type: mismatched job graph"));
    Box::new(b.clone())
}

/// Forward: everything to the one target (index 0 of the sender's single channel).
struct ForwardRouter<T> {
    buf: Buffers<T>,
}

impl<T: Data> ErasedRouter for ForwardRouter<T> {
    fn push(&mut self, batch: AnyBatch, ready: &mut Vec<ReadyBatch>) {
        let pending = &mut self.buf.bufs[0];
        // A full batch with nothing buffered goes as it is: no copy.
        if pending.is_empty() {
            let len = batch.downcast_ref::<Vec<Record<T>>>().map(Vec::len).unwrap_or(0);
            if len >= self.buf.batch_size {
                ready.push((0, batch));
                return;
            }
        }
        for r in downcast::<T>(batch) {
            self.buf.add(0, r, ready);
        }
    }
    fn clone_batch(&self, batch: &AnyBatch) -> AnyBatch {
        clone_typed::<T>(batch)
    }
    fn flush(&mut self, ready: &mut Vec<ReadyBatch>) {
        self.buf.flush(ready)
    }
}

struct HashRouter<T, K, F> {
    buf: Buffers<T>,
    key_of: F,
    max_parallelism: u32,
    targets: u32,
    _k: std::marker::PhantomData<fn() -> K>,
}

impl<T: Data, K: Key, F: Fn(&T) -> K + Send + Sync + 'static> ErasedRouter for HashRouter<T, K, F> {
    fn push(&mut self, batch: AnyBatch, ready: &mut Vec<ReadyBatch>) {
        for r in downcast::<T>(batch) {
            let kg = key_group_for(&(self.key_of)(&r.value), self.max_parallelism);
            let t = kg.subtask(self.max_parallelism, self.targets) as usize;
            self.buf.add(t, r, ready);
        }
    }
    fn clone_batch(&self, batch: &AnyBatch) -> AnyBatch {
        clone_typed::<T>(batch)
    }
    fn flush(&mut self, ready: &mut Vec<ReadyBatch>) {
        self.buf.flush(ready)
    }
}

struct RebalanceRouter<T> {
    buf: Buffers<T>,
    next: usize,
}

impl<T: Data> ErasedRouter for RebalanceRouter<T> {
    fn push(&mut self, batch: AnyBatch, ready: &mut Vec<ReadyBatch>) {
        let n = self.buf.bufs.len();
        for r in downcast::<T>(batch) {
            self.buf.add(self.next, r, ready);
            self.next = (self.next + 1) % n;
        }
    }
    fn clone_batch(&self, batch: &AnyBatch) -> AnyBatch {
        clone_typed::<T>(batch)
    }
    fn flush(&mut self, ready: &mut Vec<ReadyBatch>) {
        self.buf.flush(ready)
    }
}

struct BroadcastRouter<T> {
    buf: Buffers<T>,
}

impl<T: Data> ErasedRouter for BroadcastRouter<T> {
    fn push(&mut self, batch: AnyBatch, ready: &mut Vec<ReadyBatch>) {
        let n = self.buf.bufs.len();
        for r in downcast::<T>(batch) {
            for t in 0..n {
                self.buf.add(t, r.clone(), ready);
            }
        }
    }
    fn clone_batch(&self, batch: &AnyBatch) -> AnyBatch {
        clone_typed::<T>(batch)
    }
    fn flush(&mut self, ready: &mut Vec<ReadyBatch>) {
        self.buf.flush(ready)
    }
}

/// A router factory for a non-keyed partitioning.
pub(crate) fn plain_router<T: Data>(kind: PartitionKind) -> RouterFactory {
    Arc::new(move |a: RouterArgs| -> Box<dyn ErasedRouter> {
        let (sender, targets, batch_size) = (a.sender, a.targets, a.batch_size);
        match kind {
            PartitionKind::Forward => Box::new(ForwardRouter::<T> {
                buf: Buffers::new(1, batch_size),
            }),
            PartitionKind::Rebalance => Box::new(RebalanceRouter::<T> {
                buf: Buffers::new(targets, batch_size),
                // Start where the sender's index points so parallel senders don't all hit
                // subtask 0 first.
                next: (sender % targets.max(1)) as usize,
            }),
            PartitionKind::Broadcast => Box::new(BroadcastRouter::<T> {
                buf: Buffers::new(targets, batch_size),
            }),
            PartitionKind::Hash => {
                unreachable!("hash partitioning needs a key: use hash_router")
            }
        }
    })
}

/// A router factory that partitions by the key group of `key_of(record)`.
pub(crate) fn hash_router<T: Data, K: Key>(key_of: impl Fn(&T) -> K + Clone + Send + Sync + 'static) -> RouterFactory {
    Arc::new(move |a: RouterArgs| -> Box<dyn ErasedRouter> {
        Box::new(HashRouter {
            buf: Buffers::<T>::new(a.targets, a.batch_size),
            key_of: key_of.clone(),
            max_parallelism: a.max_parallelism,
            targets: a.targets,
            _k: std::marker::PhantomData,
        })
    })
}

/// The subtask a key is routed to (the same computation as the hash router, for tests and
/// reference models).
pub fn subtask_for_key<K: Key>(key: &K, max_parallelism: u32, parallelism: u32) -> u32 {
    let kg: KeyGroup = key_group_for(key, max_parallelism);
    kg.subtask(max_parallelism, parallelism)
}
