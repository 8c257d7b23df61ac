//! Rolling reduce per key: emits the new aggregate every time a key's value changes.

use std::marker::PhantomData;

use sluice_state::{KeyedStateStore, ValueState};

use crate::data::{Data, Key, Record};
use crate::error::OperatorError;
use crate::operator::{AsyncSnapshot, Operator, OperatorContext};
use crate::operators::restore_keyed;
use sluice_state::RestoredState;

pub(crate) struct KeyedReduce<T, K, KF, RF> {
    key_of: KF,
    reduce: RF,
    store: KeyedStateStore<K>,
    acc: Option<ValueState<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T, K, KF: Clone, RF: Clone> Clone for KeyedReduce<T, K, KF, RF>
where
    K: Key,
{
    fn clone(&self) -> Self {
        KeyedReduce {
            key_of: self.key_of.clone(),
            reduce: self.reduce.clone(),
            store: KeyedStateStore::new(),
            acc: None,
            _t: PhantomData,
        }
    }
}

impl<T, K: Key, KF, RF> KeyedReduce<T, K, KF, RF> {
    pub(crate) fn new(key_of: KF, reduce: RF) -> Self {
        KeyedReduce {
            key_of,
            reduce,
            store: KeyedStateStore::new(),
            acc: None,
            _t: PhantomData,
        }
    }
}

impl<T, K, KF, RF> Operator for KeyedReduce<T, K, KF, RF>
where
    T: Data,
    K: Key,
    KF: Fn(&T) -> K + Send + 'static,
    RF: FnMut(T, T) -> T + Send + 'static,
{
    type In = T;
    type Out = T;

    fn open(&mut self, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        self.acc = Some(self.store.value_state("reduce")?);
        Ok(())
    }

    fn snapshot_state(&mut self, _id: u64, _ctx: &mut OperatorContext) -> Result<Option<AsyncSnapshot>, OperatorError> {
        let snap = self.store.freeze();
        Ok(Some(Box::new(move |w| snap.write(w).map_err(OperatorError::from))))
    }

    fn restore_state(&mut self, state: &RestoredState, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        restore_keyed(state, |e| self.store.restore_entry(e))
    }

    fn process(
        &mut self,
        batch: Vec<Record<T>>,
        _ctx: &mut OperatorContext,
        out: &mut Vec<Record<T>>,
    ) -> Result<(), OperatorError> {
        let acc = self.acc.expect("opened before processing");
        for r in batch {
            let key = (self.key_of)(&r.value);
            let next = match self.store.take_value(acc, &key) {
                Some(prev) => (self.reduce)(prev, r.value),
                None => r.value,
            };
            out.push(Record::new(next.clone(), r.ts));
            self.store.set_value(acc, &key, next);
        }
        Ok(())
    }
}
