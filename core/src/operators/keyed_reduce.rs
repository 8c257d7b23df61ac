//! Rolling reduce per key: emits the new aggregate every time a key's value changes.

use std::marker::PhantomData;

use sluice_state::{KeyedStateStore, ValueState};

use crate::data::{Data, Key, Record};
use crate::error::OperatorError;
use crate::operator::{AsyncSnapshot, BoxFuture, Operator, OperatorContext, Prepare};
use crate::operators::{fetch_keys, flush_for_snapshot, restore_keyed, restore_manifests, use_backend};
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

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        use_backend(&mut self.store, ctx);
        self.acc = Some(self.store.value_state("reduce")?);
        Ok(())
    }

    fn wants_prepare(&self) -> bool {
        self.store.is_tiered()
    }

    fn prepare<'a>(
        &'a mut self,
        step: Prepare<'a, T>,
        ctx: &'a mut OperatorContext,
    ) -> BoxFuture<'a, Result<(), OperatorError>> {
        Box::pin(async move {
            match step {
                Prepare::Batch(batch) => {
                    let keys: Vec<K> = batch.iter().map(|r| (self.key_of)(&r.value)).collect();
                    fetch_keys(&mut self.store, &keys).await?;
                }
                Prepare::Snapshot(_) => flush_for_snapshot(&mut self.store, &ctx.log).await,
                Prepare::Watermark | Prepare::ProcessingTime(_) => self.store.release(),
            }
            Ok(())
        })
    }

    fn snapshot_state(&mut self, _id: u64, _ctx: &mut OperatorContext) -> Result<Option<AsyncSnapshot>, OperatorError> {
        let snap = self.store.freeze();
        Ok(Some(Box::new(move |w| snap.write(w).map_err(OperatorError::from))))
    }

    fn restore_state(&mut self, state: &RestoredState, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        restore_manifests(&mut self.store, state, ctx)?;
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
            let reduce = &mut self.reduce;
            let next = self.store.modify_value(acc, &key, |slot| {
                let next = match slot.take() {
                    Some(prev) => reduce(prev, r.value),
                    None => r.value,
                };
                *slot = Some(next.clone());
                next
            });
            out.push(Record::new(next, r.ts));
        }
        // A failed tiered read or write fails the task before this batch's output leaves.
        match self.store.take_failure() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}
