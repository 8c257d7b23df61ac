//! Runs a [`KeyedProcessFunction`] with its state store and timers.

use sluice_state::KeyedStateStore;

use crate::data::{EventTime, Record};
use crate::error::OperatorError;
use crate::functions::{Collector, KeyedContext, KeyedProcessFunction, TimeDomain, TimerService};
use crate::operator::{AsyncSnapshot, Operator, OperatorContext};
use crate::operators::restore_keyed;
use sluice_state::RestoredState;

pub(crate) struct KeyedProcess<F: KeyedProcessFunction, KF> {
    f: F,
    key_of: KF,
    store: KeyedStateStore<F::Key>,
    timers: TimerService<F::Key>,
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
        }
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
        self.f.register_metrics(ctx.metrics());
        self.f.open(&mut self.store)
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

    fn restore_state(&mut self, state: &RestoredState, _ctx: &mut OperatorContext) -> Result<(), OperatorError> {
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
        Ok(())
    }

    fn on_watermark(&mut self, ctx: &mut OperatorContext, out: &mut Vec<Record<F::Out>>) -> Result<(), OperatorError> {
        let now_ms = ctx.clock.now_ms();
        while let Some((t, key)) = self.timers.pop_event(ctx.watermark.0) {
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
        Ok(())
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
        while let Some((t, key)) = self.timers.pop_processing(now_ms) {
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
        Ok(())
    }
}
