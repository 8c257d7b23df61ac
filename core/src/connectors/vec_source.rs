use crate::data::Data;
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{Source, SourcePoll, SourceReader};

/// A bounded source over a vector (for tests and examples). Subtask `i` of `p` emits the
/// elements at indices `i, i + p, ...` in order.
#[derive(Debug, Clone)]
pub struct VecSource<T> {
    items: std::sync::Arc<Vec<T>>,
}

impl<T: Data> VecSource<T> {
    /// A source emitting `items`.
    pub fn new(items: Vec<T>) -> Self {
        VecSource {
            items: std::sync::Arc::new(items),
        }
    }
}

/// One subtask of a [`VecSource`].
#[derive(Debug)]
pub struct VecReader<T> {
    items: std::sync::Arc<Vec<T>>,
    next: usize,
    stride: usize,
}

impl<T: Data> Source for VecSource<T> {
    type Out = T;
    type Reader = VecReader<T>;
    fn reader(&self, subtask: u32, parallelism: u32) -> Result<VecReader<T>, OperatorError> {
        Ok(VecReader {
            items: self.items.clone(),
            next: subtask as usize,
            stride: parallelism as usize,
        })
    }
}

impl<T: Data> SourceReader for VecReader<T> {
    type Out = T;
    fn poll_batch(&mut self, max: usize, out: &mut Vec<T>, _ctx: &OperatorContext) -> Result<SourcePoll, OperatorError> {
        for _ in 0..max {
            match self.items.get(self.next) {
                Some(v) => out.push(v.clone()),
                None => break,
            }
            self.next += self.stride;
        }
        if self.next >= self.items.len() {
            Ok(SourcePoll::Finished)
        } else {
            Ok(SourcePoll::Ready)
        }
    }

    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        crate::source::encode_position(&(self.next as u64))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let mut next = self.next as u64;
        crate::source::restore_strided(&mut next, self.stride as u64, position)?;
        self.next = next as usize;
        Ok(())
    }
}
