//! Record-at-a-time transformations without state: map, filter, flat_map.

use std::marker::PhantomData;

use crate::data::{Data, Record};
use crate::error::OperatorError;
use crate::operator::{Operator, OperatorContext};

/// Applies `f` to each record, which appends zero or more outputs.
pub(crate) struct Stateless<I, O, F> {
    f: F,
    _t: PhantomData<fn(I) -> O>,
}

impl<I, O, F: Clone> Clone for Stateless<I, O, F> {
    fn clone(&self) -> Self {
        Stateless {
            f: self.f.clone(),
            _t: PhantomData,
        }
    }
}

impl<I, O, F> Stateless<I, O, F> {
    pub(crate) fn new(f: F) -> Self {
        Stateless { f, _t: PhantomData }
    }
}

impl<I, O, F> Operator for Stateless<I, O, F>
where
    I: Data,
    O: Data,
    F: FnMut(Record<I>, &mut Vec<Record<O>>) + Send + 'static,
{
    type In = I;
    type Out = O;

    fn process(
        &mut self,
        batch: Vec<Record<I>>,
        _ctx: &mut OperatorContext,
        out: &mut Vec<Record<O>>,
    ) -> Result<(), OperatorError> {
        for r in batch {
            (self.f)(r, out);
        }
        Ok(())
    }
}
