//! What a window keeps and emits: an incremental aggregate, all records (process window
//! function), or the two sides of a join.

use std::marker::PhantomData;

use crate::data::{Data, Either, Record};
use crate::functions::AggregateFunction;
use crate::window::TimeWindow;

/// The per-window contents and how to emit them.
pub(crate) trait WindowLogic<K>: Clone + Send + Sync + 'static {
    type In: Data;
    type Acc: sluice_state::StateValue;
    type Out: Data;
    fn create(&self) -> Self::Acc;
    fn add(&self, acc: &mut Self::Acc, v: Self::In);
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
    fn emit(&mut self, key: &K, w: TimeWindow, acc: &Self::Acc, out: &mut Vec<Record<Self::Out>>);
}

/// An aggregate function, its result mapped with the key and window.
pub(crate) struct AggregateLogic<A, F, O> {
    pub(crate) agg: A,
    pub(crate) f: F,
    pub(crate) _o: PhantomData<fn() -> O>,
}

impl<A: Clone, F: Clone, O> Clone for AggregateLogic<A, F, O> {
    fn clone(&self) -> Self {
        AggregateLogic {
            agg: self.agg.clone(),
            f: self.f.clone(),
            _o: PhantomData,
        }
    }
}

impl<K, A, F, O> WindowLogic<K> for AggregateLogic<A, F, O>
where
    A: AggregateFunction,
    O: Data,
    F: Fn(&K, TimeWindow, A::Out) -> O + Clone + Send + Sync + 'static,
{
    type In = A::In;
    type Acc = A::Acc;
    type Out = O;
    fn create(&self) -> A::Acc {
        self.agg.create_accumulator()
    }
    fn add(&self, acc: &mut A::Acc, v: A::In) {
        self.agg.add(acc, v)
    }
    fn merge(&self, a: A::Acc, b: A::Acc) -> A::Acc {
        self.agg.merge(a, b)
    }
    fn emit(&mut self, key: &K, w: TimeWindow, acc: &A::Acc, out: &mut Vec<Record<O>>) {
        let v = (self.f)(key, w, self.agg.get_result(acc));
        out.push(Record::new(v, crate::EventTime(w.max_timestamp())));
    }
}

/// Keeps every record of the window and hands them to a function when it fires.
pub(crate) struct ProcessLogic<I, O, F> {
    pub(crate) f: F,
    pub(crate) _t: PhantomData<fn(I) -> O>,
}

impl<I, O, F: Clone> Clone for ProcessLogic<I, O, F> {
    fn clone(&self) -> Self {
        ProcessLogic {
            f: self.f.clone(),
            _t: PhantomData,
        }
    }
}

impl<K, I, O, F> WindowLogic<K> for ProcessLogic<I, O, F>
where
    I: Data,
    O: Data,
    F: FnMut(&K, TimeWindow, &[I], &mut Vec<O>) + Clone + Send + Sync + 'static,
{
    type In = I;
    type Acc = Vec<I>;
    type Out = O;
    fn create(&self) -> Vec<I> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<I>, v: I) {
        acc.push(v)
    }
    fn merge(&self, mut a: Vec<I>, b: Vec<I>) -> Vec<I> {
        a.extend(b);
        a
    }
    fn emit(&mut self, key: &K, w: TimeWindow, acc: &Vec<I>, out: &mut Vec<Record<O>>) {
        let mut vs = Vec::new();
        (self.f)(key, w, acc, &mut vs);
        let ts = crate::EventTime(w.max_timestamp());
        out.extend(vs.into_iter().map(|v| Record::new(v, ts)));
    }
}

/// A window join: keeps both sides and emits `f(a, b)` for every pair of the window.
pub(crate) struct JoinLogic<A, B, O, F> {
    pub(crate) f: F,
    pub(crate) _t: PhantomData<fn(A, B) -> O>,
}

impl<A, B, O, F: Clone> Clone for JoinLogic<A, B, O, F> {
    fn clone(&self) -> Self {
        JoinLogic {
            f: self.f.clone(),
            _t: PhantomData,
        }
    }
}

impl<K, A, B, O, F> WindowLogic<K> for JoinLogic<A, B, O, F>
where
    A: Data,
    B: Data,
    O: Data,
    F: Fn(&A, &B) -> O + Clone + Send + Sync + 'static,
{
    type In = Either<A, B>;
    type Acc = (Vec<A>, Vec<B>);
    type Out = O;
    fn create(&self) -> (Vec<A>, Vec<B>) {
        (Vec::new(), Vec::new())
    }
    fn add(&self, acc: &mut (Vec<A>, Vec<B>), v: Either<A, B>) {
        match v {
            Either::Left(a) => acc.0.push(a),
            Either::Right(b) => acc.1.push(b),
        }
    }
    fn merge(&self, mut a: (Vec<A>, Vec<B>), b: (Vec<A>, Vec<B>)) -> (Vec<A>, Vec<B>) {
        a.0.extend(b.0);
        a.1.extend(b.1);
        a
    }
    fn emit(&mut self, _key: &K, w: TimeWindow, acc: &(Vec<A>, Vec<B>), out: &mut Vec<Record<O>>) {
        let ts = crate::EventTime(w.max_timestamp());
        for a in &acc.0 {
            for b in &acc.1 {
                out.push(Record::new((self.f)(a, b), ts));
            }
        }
    }
}
