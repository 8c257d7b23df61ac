//! Sinks: where records leave a job.

use std::sync::Arc;

use crate::data::{Data, Record};
use crate::error::OperatorError;
use crate::operator::{AsyncSnapshot, Operator, OperatorContext};
use sluice_state::RestoredState;

/// A sink: one writer per parallel subtask.
///
/// Sinks attached with `sink_to` are **at-least-once** when the job checkpoints: after a
/// restore, the records since the checkpoint are written again. For exactly-once output use a
/// [`TransactionalSink`] with `sink_to_transactional`.
pub trait Sink: Send + Sync + 'static {
    /// Record type consumed.
    type In: Data;
    /// The writer of one subtask.
    type Writer: SinkWriter<In = Self::In>;

    /// The writer for subtask `subtask` of `parallelism`.
    fn writer(&self, subtask: u32, parallelism: u32) -> Result<Self::Writer, OperatorError>;
}

/// Writes one subtask's records.
pub trait SinkWriter: Send + 'static {
    /// Record type consumed.
    type In: Data;
    /// Writes a batch.
    fn write(&mut self, batch: Vec<Record<Self::In>>) -> Result<(), OperatorError>;
    /// The input is finished: make everything written durable and visible.
    fn finish(&mut self) -> Result<(), OperatorError>;
}

/// Runs a [`Sink`] as the last operator of a chain.
pub(crate) struct SinkOperator<S: Sink> {
    sink: Arc<S>,
    writer: Option<S::Writer>,
}

impl<S: Sink> Clone for SinkOperator<S> {
    fn clone(&self) -> Self {
        SinkOperator {
            sink: self.sink.clone(),
            writer: None,
        }
    }
}

impl<S: Sink> SinkOperator<S> {
    pub(crate) fn new(sink: S) -> Self {
        SinkOperator {
            sink: Arc::new(sink),
            writer: None,
        }
    }

    fn writer(&mut self, ctx: &OperatorContext) -> &mut S::Writer {
        self.writer
            .as_mut()
            .unwrap_or_else(|| panic!("sink '{}' used before open", ctx.vertex_name))
    }
}

impl<S: Sink> Operator for SinkOperator<S> {
    type In = S::In;
    type Out = ();

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.writer = Some(self.sink.writer(ctx.subtask, ctx.parallelism)?);
        Ok(())
    }

    fn process(
        &mut self,
        batch: Vec<Record<S::In>>,
        ctx: &mut OperatorContext,
        _out: &mut Vec<Record<()>>,
    ) -> Result<(), OperatorError> {
        let n = batch.len();
        self.writer(ctx).write(batch)?;
        ctx.metrics.add_out(n);
        Ok(())
    }

    fn end_of_input(&mut self, ctx: &mut OperatorContext, _out: &mut Vec<Record<()>>) -> Result<(), OperatorError> {
        self.writer(ctx).finish()
    }
}

/// A sink with exactly-once delivery through two-phase commit: what a subtask writes between
/// two checkpoints forms one transaction, pre-committed (durable but invisible) when the
/// subtask snapshots for checkpoint N and committed (visible) once checkpoint N completes.
/// After a failure, the transactions of the restored checkpoint are committed again (commits
/// are idempotent) and any other transaction the subtask left behind is aborted.
///
/// Without checkpointing, a transaction is pre-committed and committed at the end of input.
pub trait TransactionalSink: Send + Sync + 'static {
    /// Record type consumed.
    type In: Data;
    /// A pre-committed transaction, as stored in checkpoints.
    type Txn: Data;
    /// The writer of one subtask.
    type Writer: TransactionalWriter<In = Self::In, Txn = Self::Txn>;

    /// The writer for subtask `subtask` of `parallelism` in execution attempt `attempt`.
    fn writer(&self, subtask: u32, parallelism: u32, attempt: u32) -> Result<Self::Writer, OperatorError>;

    /// Where the transactions go (a directory, a table, a topic), if the sink can say. It is
    /// stored with the pre-committed transactions, and a restore whose transactions were
    /// pre-committed into another target is refused at once: committing them here would find
    /// nothing (and restart forever) or publish another job's output.
    fn target(&self) -> Option<String> {
        None
    }
}

/// Marks the operator-state entry that names a sink's target (the other entries are its
/// pending transactions, which start with their checkpoint id).
const TARGET_MARKER: &[u8; 8] = b"SLKTGT1\0";

/// The target an entry of a sink's operator state names, if it is the target marker.
fn target_of(entry: &[u8]) -> Option<String> {
    let rest = entry.strip_prefix(TARGET_MARKER.as_slice())?;
    String::from_utf8(rest.to_vec()).ok()
}

/// Writes one subtask's transactions.
pub trait TransactionalWriter: Send + 'static {
    /// Record type consumed.
    type In: Data;
    /// A pre-committed transaction.
    type Txn: Data;

    /// Called once before any write with the transactions of the restored checkpoint (empty
    /// on a fresh start): commit each (idempotently), then abort every other transaction this
    /// subtask left behind in earlier attempts.
    fn recover(&mut self, restored: Vec<Self::Txn>) -> Result<(), OperatorError>;
    /// Writes into the open transaction.
    fn write(&mut self, batch: Vec<Record<Self::In>>) -> Result<(), OperatorError>;
    /// Makes the open transaction durable but invisible and returns it (`None` if it holds
    /// nothing); a new transaction opens.
    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Option<Self::Txn>, OperatorError>;
    /// Makes a pre-committed transaction visible. Must be idempotent.
    fn commit(&mut self, txn: Self::Txn) -> Result<(), OperatorError>;
}

/// Runs a [`TransactionalSink`] with the two-phase-commit protocol.
pub(crate) struct TwoPhaseCommitOperator<S: TransactionalSink> {
    sink: Arc<S>,
    writer: Option<S::Writer>,
    /// Pre-committed, not yet committed: `(checkpoint id, transaction)`.
    pending: Vec<(u64, S::Txn)>,
    recovered: bool,
}

impl<S: TransactionalSink> Clone for TwoPhaseCommitOperator<S> {
    fn clone(&self) -> Self {
        TwoPhaseCommitOperator {
            sink: self.sink.clone(),
            writer: None,
            pending: Vec::new(),
            recovered: false,
        }
    }
}

impl<S: TransactionalSink> TwoPhaseCommitOperator<S> {
    pub(crate) fn new(sink: S) -> Self {
        TwoPhaseCommitOperator {
            sink: Arc::new(sink),
            writer: None,
            pending: Vec::new(),
            recovered: false,
        }
    }

    fn writer(&mut self) -> &mut S::Writer {
        self.writer.as_mut().expect("the sink writer is created in open")
    }

    fn ensure_recovered(&mut self) -> Result<(), OperatorError> {
        if !self.recovered {
            self.recovered = true;
            self.writer().recover(Vec::new())?;
        }
        Ok(())
    }
}

impl<S: TransactionalSink> Operator for TwoPhaseCommitOperator<S> {
    type In = S::In;
    type Out = ();

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.writer = Some(self.sink.writer(ctx.subtask, ctx.parallelism, ctx.attempt)?);
        Ok(())
    }

    fn restore_state(&mut self, state: &RestoredState, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        let mut txns = Vec::new();
        let mut targets = std::collections::BTreeSet::new();
        for bytes in state.operator_state() {
            if let Some(t) = target_of(bytes) {
                targets.insert(t);
                continue;
            }
            let (_, txn): (u64, S::Txn) = bincode::deserialize(bytes)
                .map_err(|e| OperatorError::user(format!("cannot decode a pending sink transaction: {e}")))?;
            txns.push(txn);
        }
        if let Some(mine) = self.sink.target() {
            if let Some(other) = targets.iter().find(|t| **t != mine).filter(|_| !txns.is_empty()) {
                return Err(OperatorError::Unrecoverable(format!(
                    "sink '{}' restores {} transaction(s) pre-committed into {other}, but it writes to {mine}: \
                     the checkpoint or savepoint belongs to that output. Restore it with the same output, or give the \
                     sink a new uid and start with --allow-non-restored-state (as for an A/B test)",
                    ctx.vertex_name,
                    txns.len()
                )));
            }
        }
        self.recovered = true;
        self.writer().recover(txns)
    }

    fn process(
        &mut self,
        batch: Vec<Record<S::In>>,
        ctx: &mut OperatorContext,
        _out: &mut Vec<Record<()>>,
    ) -> Result<(), OperatorError> {
        self.ensure_recovered()?;
        let n = batch.len();
        self.writer().write(batch)?;
        ctx.metrics.add_out(n);
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<Option<AsyncSnapshot>, OperatorError> {
        self.ensure_recovered()?;
        if let Some(txn) = self.writer().pre_commit(checkpoint_id)? {
            self.pending.push((checkpoint_id, txn));
        }
        let mut encoded = Vec::with_capacity(self.pending.len() + 1);
        if let Some(t) = self.sink.target() {
            encoded.push([TARGET_MARKER.as_slice(), t.as_bytes()].concat());
        }
        for p in &self.pending {
            encoded.push(
                bincode::serialize(p)
                    .map_err(|e| OperatorError::user(format!("cannot encode a sink transaction: {e}")))?,
            );
        }
        Ok(Some(Box::new(move |w| {
            for e in &encoded {
                w.add_operator_state_raw(e.clone());
            }
            Ok(())
        })))
    }

    fn notify_checkpoint_complete(
        &mut self,
        checkpoint_id: u64,
        _ctx: &mut OperatorContext,
    ) -> Result<(), OperatorError> {
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(id, _)| *id <= checkpoint_id);
        self.pending = keep;
        for (_, txn) in done {
            self.writer().commit(txn)?;
        }
        Ok(())
    }

    fn end_of_input(&mut self, ctx: &mut OperatorContext, _out: &mut Vec<Record<()>>) -> Result<(), OperatorError> {
        self.ensure_recovered()?;
        if ctx.checkpointing {
            // The final checkpoint pre-committed and committed everything; nothing may be left.
            debug_assert!(self.pending.is_empty(), "sink ends with uncommitted transactions");
            return Ok(());
        }
        if let Some(txn) = self.writer().pre_commit(u64::MAX)? {
            self.writer().commit(txn)?;
        }
        Ok(())
    }
}
