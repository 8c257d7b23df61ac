//! Sinks: where records leave a job.

use std::sync::Arc;

use crate::data::{Data, Record};
use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext};

/// A sink: one writer per parallel subtask.
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
        self.writer.as_mut().unwrap_or_else(|| {
            panic!("sink '{}' used before open", ctx.vertex_name)
        })
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

    fn end_of_input(
        &mut self,
        ctx: &mut OperatorContext,
        _out: &mut Vec<Record<()>>,
    ) -> Result<(), OperatorError> {
        self.writer(ctx).finish()
    }
}
