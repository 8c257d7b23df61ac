//! Runs a [`KeyedProcessFunction`] with its state store and timers.
//!
//! With tiered state, every call is prepared: the keys of the batch, or of the timers about
//! to fire, are fetched before the synchronous call, a chunk of timers at a time so that a
//! large watermark jump does not pin all state at once.

use std::collections::BTreeSet;

use sluice_state::KeyedStateStore;

use crate::data::{EventTime, Record};
use crate::error::OperatorError;
use crate::functions::{Collector, KeyedContext, KeyedProcessFunction, TimeDomain, TimerService};
use crate::operator::{AsyncSnapshot, BoxFuture, Operator, OperatorContext, Prepare};
use crate::operators::{fetch_keys, flush_for_snapshot, restore_keyed, restore_manifests, use_backend};
use sluice_state::RestoredState;

/// Timers whose keys one preparation fetches.
const TIMER_CHUNK: usize = 4096;

pub(crate) struct KeyedProcess<F: KeyedProcessFunction, KF> {
    f: F,
    key_of: KF,
    store: KeyedStateStore<F::Key>,
    timers: TimerService<F::Key>,
    /// Tiered state: the keys whose timers the last preparation fetched (timers of other keys
    /// wait for the next one).
    prepared: BTreeSet<F::Key>,
}

impl<F: KeyedProcessFunction, KF: Clone> Clone for KeyedProcess<F, KF> {
    fn clone(&self) -> Self {
        KeyedProcess::new(self.f.clone(), self.key_of.clone())
    }
}

impl<F: KeyedProcessFunction, KF> KeyedProcess<F, KF> {
    pub(crate) fn new(f: F, key_of: KF) -> Self {
        KeyedProcess {
            f,
            key_of,
            store: KeyedStateStore::new(),
            timers: TimerService::default(),
            prepared: BTreeSet::new(),
        }
    }

    /// A failed tiered read or write: the task fails before this call's output leaves.
    fn check_state(&mut self) -> Result<(), OperatorError> {
        match self.store.take_failure() {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Fetches the keys of the first due timers; `event` picks the time domain.
    async fn prepare_timers(&mut self, event: bool, due: i64) -> Result<(), OperatorError> {
        self.prepared = if event {
            self.timers.due_event_keys(due).take(TIMER_CHUNK).cloned().collect()
        } else {
            self.timers
                .due_processing_keys(due)
                .take(TIMER_CHUNK)
                .cloned()
                .collect()
        };
        let keys: Vec<F::Key> = self.prepared.iter().cloned().collect();
        fetch_keys(&mut self.store, &keys).await
    }

    /// Whether the timer of `key` may fire now (its state was fetched, or state is on the
    /// heap).
    fn ready(&self, key: &F::Key) -> bool {
        !self.store.is_tiered() || self.prepared.contains(key)
    }
}

impl<F, KF> KeyedProcess<F, KF>
where
    F: KeyedProcessFunction,
    KF: Fn(&F::In) -> F::Key + Send + 'static,
{
    async fn prepare_step(&mut self, step: Prepare<'_, F::In>, ctx: &OperatorContext) -> Result<(), OperatorError> {
        match step {
            Prepare::Batch(batch) => {
                let keys: Vec<F::Key> = batch.iter().map(|r| (self.key_of)(&r.value)).collect();
                fetch_keys(&mut self.store, &keys).await?;
            }
            Prepare::Watermark => self.prepare_timers(true, ctx.watermark.0).await?,
            Prepare::ProcessingTime(now) => self.prepare_timers(false, now).await?,
            Prepare::Snapshot(_) => flush_for_snapshot(&mut self.store, &ctx.log).await,
        }
        Ok(())
    }
}

impl<F, KF> Operator for KeyedProcess<F, KF>
where
    F: KeyedProcessFunction,
    KF: Fn(&F::In) -> F::Key + Send + 'static,
{
    type In = F::In;
    type Out = F::Out;

    fn open(&mut self, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        use_backend(&mut self.store, ctx);
        self.f.register_metrics(ctx.metrics());
        self.f.open(&mut self.store)
    }

    fn wants_prepare(&self) -> bool {
        self.store.is_tiered()
    }

    fn prepare<'a>(
        &'a mut self,
        step: Prepare<'a, Self::In>,
        ctx: &'a mut OperatorContext,
    ) -> BoxFuture<'a, Result<(), OperatorError>> {
        Box::pin(self.prepare_step(step, ctx))
    }

    fn snapshot_state(&mut self, _id: u64, _ctx: &mut OperatorContext) -> Result<Option<AsyncSnapshot>, OperatorError> {
        let state = self.store.freeze();
        let timers = self.timers.freeze();
        Ok(Some(Box::new(move |w| {
            state.write(w)?;
            timers(w)?;
            Ok(())
        })))
    }

    fn restore_state(&mut self, state: &RestoredState, ctx: &mut OperatorContext) -> Result<(), OperatorError> {
        restore_manifests(&mut self.store, state, ctx)?;
        let (store, timers) = (&mut self.store, &mut self.timers);
        restore_keyed(state, |e| Ok(timers.restore_entry(e)? || store.restore_entry(e)?))
    }

    fn process(
        &mut self,
        batch: Vec<Record<F::In>>,
        ctx: &mut OperatorContext,
        out: &mut Vec<Record<F::Out>>,
    ) -> Result<(), OperatorError> {
        let now_ms = ctx.clock.now_ms();
        for r in batch {
            let key = (self.key_of)(&r.value);
            let mut kctx = KeyedContext {
                key: &key,
                ts: r.ts,
                watermark: ctx.watermark,
                now_ms,
                state: &mut self.store,
                timers: &mut self.timers,
            };
            let mut col = Collector { out, ts: r.ts };
            self.f.process_element(r.value, &mut kctx, &mut col)?;
        }
        self.check_state()
    }

    fn on_watermark(&mut self, ctx: &mut OperatorContext, out: &mut Vec<Record<F::Out>>) -> Result<(), OperatorError> {
        let now_ms = ctx.clock.now_ms();
        while let Some((t, key)) = self.timers.peek_event(ctx.watermark.0) {
            if !self.ready(key) {
                break; // fetched by the next preparation
            }
            let (t, key) = self.timers.pop_event(t).expect("peeked just above");
            let mut kctx = KeyedContext {
                key: &key,
                ts: EventTime(t),
                watermark: ctx.watermark,
                now_ms,
                state: &mut self.store,
                timers: &mut self.timers,
            };
            let mut col = Collector {
                out: &mut *out,
                ts: EventTime(t),
            };
            self.f.on_timer(t, TimeDomain::EventTime, &mut kctx, &mut col)?;
        }
        self.check_state()
    }

    fn timers_left(&self, ctx: &OperatorContext) -> bool {
        self.store.is_tiered() && self.timers.peek_event(ctx.watermark.0).is_some()
    }

    fn next_processing_timer(&self) -> Option<i64> {
        self.timers.next_processing()
    }

    fn on_processing_time(
        &mut self,
        now_ms: i64,
        ctx: &mut OperatorContext,
        out: &mut Vec<Record<F::Out>>,
    ) -> Result<(), OperatorError> {
        while let Some((t, key)) = self.timers.peek_processing(now_ms) {
            if !self.ready(key) {
                break; // fetched by the next preparation: the timer is still due
            }
            let (t, key) = self.timers.pop_processing(t).expect("peeked just above");
            let mut kctx = KeyedContext {
                key: &key,
                ts: EventTime::MIN,
                watermark: ctx.watermark,
                now_ms,
                state: &mut self.store,
                timers: &mut self.timers,
            };
            let mut col = Collector {
                out: &mut *out,
                ts: EventTime::MIN,
            };
            self.f.on_timer(t, TimeDomain::ProcessingTime, &mut kctx, &mut col)?;
        }
        self.check_state()
    }
}
