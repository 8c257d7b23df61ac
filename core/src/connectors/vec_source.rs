use std::sync::Arc;

use crate::connectors::strided::Strided;
use crate::data::Data;
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{Source, SourcePoll, SourceReader};

/// A bounded source over a vector (for tests and examples). Subtask `i` of `p` emits the
/// elements at indices `i, i + p, ...` in order.
#[derive(Debug, Clone)]
pub struct VecSource<T> {
    items: Arc<Vec<T>>,
}

impl<T: Data> VecSource<T> {
    /// A source emitting `items`.
    pub fn new(items: Vec<T>) -> Self {
        VecSource { items: Arc::new(items) }
    }
}

/// One subtask of a [`VecSource`].
#[derive(Debug)]
pub struct VecReader<T> {
    items: Arc<Vec<T>>,
    indices: Strided,
}

impl<T: Data> Source for VecSource<T> {
    type Out = T;
    type Reader = VecReader<T>;
    fn reader(&self, subtask: u32, parallelism: u32) -> Result<VecReader<T>, OperatorError> {
        Ok(VecReader {
            items: self.items.clone(),
            indices: Strided::new(subtask, parallelism, Some(self.items.len() as u64), None),
        })
    }
}

impl<T: Data> SourceReader for VecReader<T> {
    type Out = T;

    fn poll_batch(&mut self, max: usize, out: &mut Vec<T>, ctx: &OperatorContext) -> Result<SourcePoll, OperatorError> {
        let items = &self.items;
        Ok(self.indices.poll(max, ctx, |i| out.push(items[i as usize].clone())))
    }

    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        self.indices.position()
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        self.indices.restore(position)
    }

    fn restore_rescaled(&mut self, old_parallelism: u32, positions: &[Vec<u8>]) -> Result<(), OperatorError> {
        self.indices.restore_rescaled(old_parallelism, positions)
    }
}
