//! An in-memory transactional store: the exactly-once sink used by tests and the simulation,
//! with injectable commit failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::data::{Data, Record};
use crate::error::OperatorError;
use crate::sink::{TransactionalSink, TransactionalWriter};
use crate::sync::LockExt;

/// Names a transaction: the subtask that wrote it and the checkpoint that pre-committed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxnId {
    /// Writing subtask.
    pub subtask: u32,
    /// Pre-committing checkpoint.
    pub checkpoint: u64,
}

#[derive(Debug)]
struct Inner<T> {
    prepared: BTreeMap<TxnId, Vec<T>>,
    committed: Vec<(TxnId, Vec<T>)>,
    committed_ids: BTreeSet<TxnId>,
    fail_commits: u32,
    aborted: u64,
}

/// A store of transactions; clones share it. Committed records are what an exactly-once test
/// compares with its expected output.
pub struct TransactionalStore<T> {
    inner: Arc<Mutex<Inner<T>>>,
}

impl<T> Clone for TransactionalStore<T> {
    fn clone(&self) -> Self {
        TransactionalStore {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for TransactionalStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransactionalStore")
    }
}

impl<T: Data> Default for TransactionalStore<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Data> TransactionalStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        TransactionalStore {
            inner: Arc::new(Mutex::new(Inner {
                prepared: BTreeMap::new(),
                committed: Vec::new(),
                committed_ids: BTreeSet::new(),
                fail_commits: 0,
                aborted: 0,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.locked()
    }

    /// Every committed record, in commit order.
    pub fn committed(&self) -> Vec<T> {
        self.lock()
            .committed
            .iter()
            .flat_map(|(_, v)| v.iter().cloned())
            .collect()
    }

    /// Transactions prepared and neither committed nor aborted.
    pub fn open_transactions(&self) -> usize {
        self.lock().prepared.len()
    }

    /// Transactions aborted so far.
    pub fn aborted(&self) -> u64 {
        self.lock().aborted
    }

    /// The next `n` commits fail (as a remote store might time out).
    pub fn fail_next_commits(&self, n: u32) {
        self.lock().fail_commits = n;
    }

    fn prepare(&self, id: TxnId, records: Vec<T>) {
        let mut g = self.lock();
        assert!(
            !g.committed_ids.contains(&id),
            "transaction {id:?} prepared after it was committed"
        );
        g.prepared.insert(id, records);
    }

    fn commit(&self, id: TxnId) -> Result<(), OperatorError> {
        let mut g = self.lock();
        if g.fail_commits > 0 {
            g.fail_commits -= 1;
            return Err(OperatorError::user(format!(
                "injected failure committing transaction {id:?}"
            )));
        }
        if g.committed_ids.contains(&id) {
            return Ok(());
        }
        let records = g.prepared.remove(&id).ok_or_else(|| {
            OperatorError::user(format!(
                "transaction {id:?} was never prepared or was aborted: its records are lost"
            ))
        })?;
        g.committed_ids.insert(id);
        g.committed.push((id, records));
        Ok(())
    }

    fn abort_others(&self, subtask: u32, parallelism: u32, keep: &BTreeSet<TxnId>) {
        let mut g = self.lock();
        let doomed: Vec<TxnId> = g
            .prepared
            .keys()
            .filter(|id| (id.subtask == subtask || (subtask == 0 && id.subtask >= parallelism)) && !keep.contains(id))
            .copied()
            .collect();
        for id in doomed {
            g.prepared.remove(&id);
            g.aborted += 1;
        }
    }
}

/// The [`TransactionalSink`] over a [`TransactionalStore`].
#[derive(Debug)]
pub struct TransactionalStoreSink<T> {
    store: TransactionalStore<T>,
}

impl<T: Data> TransactionalStoreSink<T> {
    /// A sink committing into `store`.
    pub fn new(store: TransactionalStore<T>) -> Self {
        TransactionalStoreSink { store }
    }
}

/// One subtask of a [`TransactionalStoreSink`].
#[derive(Debug)]
pub struct TransactionalStoreWriter<T> {
    store: TransactionalStore<T>,
    subtask: u32,
    parallelism: u32,
    open: Vec<T>,
}

impl<T: Data> TransactionalSink for TransactionalStoreSink<T> {
    type In = T;
    type Txn = TxnId;
    type Writer = TransactionalStoreWriter<T>;

    fn writer(&self, subtask: u32, parallelism: u32, _attempt: u32) -> Result<Self::Writer, OperatorError> {
        Ok(TransactionalStoreWriter {
            store: self.store.clone(),
            subtask,
            parallelism,
            open: Vec::new(),
        })
    }
}

impl<T: Data> TransactionalWriter for TransactionalStoreWriter<T> {
    type In = T;
    type Txn = TxnId;

    fn recover(&mut self, restored: Vec<TxnId>) -> Result<(), OperatorError> {
        for id in &restored {
            self.store.commit(*id)?;
        }
        let keep: BTreeSet<TxnId> = restored.into_iter().collect();
        self.store.abort_others(self.subtask, self.parallelism, &keep);
        Ok(())
    }

    fn write(&mut self, batch: Vec<Record<T>>) -> Result<(), OperatorError> {
        self.open.extend(batch.into_iter().map(|r| r.value));
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Option<TxnId>, OperatorError> {
        if self.open.is_empty() {
            return Ok(None);
        }
        let id = TxnId {
            subtask: self.subtask,
            checkpoint: checkpoint_id,
        };
        self.store.prepare(id, std::mem::take(&mut self.open));
        Ok(Some(id))
    }

    fn commit(&mut self, txn: TxnId) -> Result<(), OperatorError> {
        self.store.commit(txn)
    }
}
