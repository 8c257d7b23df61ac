//! A deliberately broken two-phase-commit sink: it commits each transaction as soon as it is
//! pre-committed, before the checkpoint completes. The simulation suite must catch it (records
//! committed after the last completed checkpoint are committed again after a restore).

use sluice_core::connectors::{TransactionalStore, TransactionalStoreSink, TransactionalStoreWriter, TxnId};
use sluice_core::{Data, OperatorError, Record, TransactionalSink, TransactionalWriter};

/// See the module docs.
#[derive(Debug)]
pub struct EagerCommitSink<T>(TransactionalStoreSink<T>);

impl<T: Data> EagerCommitSink<T> {
    /// A broken sink over `store`.
    pub fn new(store: TransactionalStore<T>) -> Self {
        EagerCommitSink(TransactionalStoreSink::new(store))
    }
}

/// One subtask of an [`EagerCommitSink`].
#[derive(Debug)]
pub struct EagerCommitWriter<T>(TransactionalStoreWriter<T>);

impl<T: Data> TransactionalSink for EagerCommitSink<T> {
    type In = T;
    type Txn = TxnId;
    type Writer = EagerCommitWriter<T>;
    fn writer(&self, subtask: u32, parallelism: u32, attempt: u32) -> Result<Self::Writer, OperatorError> {
        Ok(EagerCommitWriter(self.0.writer(subtask, parallelism, attempt)?))
    }
}

impl<T: Data> TransactionalWriter for EagerCommitWriter<T> {
    type In = T;
    type Txn = TxnId;
    fn recover(&mut self, restored: Vec<TxnId>) -> Result<(), OperatorError> {
        self.0.recover(restored)
    }
    fn write(&mut self, batch: Vec<Record<T>>) -> Result<(), OperatorError> {
        self.0.write(batch)
    }
    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Option<TxnId>, OperatorError> {
        let txn = self.0.pre_commit(checkpoint_id)?;
        if let Some(t) = txn {
            // The bug: visible before the checkpoint is known to be complete.
            self.0.commit(t)?;
        }
        Ok(txn)
    }
    fn commit(&mut self, txn: TxnId) -> Result<(), OperatorError> {
        self.0.commit(txn)
    }
}
