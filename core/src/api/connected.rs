//! Two-input operations: connect with a co-process function, and window joins.
//!
//! Both merge their inputs into one stream of [`Either`] and key it by the key of each side, so
//! a key's records from both inputs meet in the same subtask and share its state and timers.

use std::marker::PhantomData;

use crate::api::{DataStream, KeyedStream};
use crate::data::{Data, Either, Key};
use crate::functions::process::CoProcessAdapter;
use crate::functions::KeyedCoProcessFunction;
use crate::operators::keyed_process::KeyedProcess;
use crate::window::{JoinLogic, WindowAssigner, WindowOperator};

fn merged<A: Data, B: Data>(a: &DataStream<A>, b: &DataStream<B>) -> DataStream<Either<A, B>> {
    let left = a.map(Either::<A, B>::Left).name("Left");
    let right = b.map(Either::<A, B>::Right).name("Right");
    left.union(&[right])
}

/// The key of an `Either` record, by the key function of its side.
fn either_key<A, B, K, FA, FB>(ka: FA, kb: FB) -> impl Fn(&Either<A, B>) -> K + Clone + Send + Sync + 'static
where
    FA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    FB: Fn(&B) -> K + Clone + Send + Sync + 'static,
{
    move |e: &Either<A, B>| match e {
        Either::Left(a) => ka(a),
        Either::Right(b) => kb(b),
    }
}

/// Two streams paired by [`DataStream::connect`].
#[derive(Debug)]
pub struct ConnectedStreams<A, B> {
    a: DataStream<A>,
    b: DataStream<B>,
}

impl<A: Data, B: Data> ConnectedStreams<A, B> {
    pub(crate) fn new(a: DataStream<A>, b: DataStream<B>) -> Self {
        ConnectedStreams { a, b }
    }

    /// Keys both inputs, with one key function per input giving the same key type.
    pub fn key_by<K: Key, FA, FB>(
        &self,
        ka: FA,
        kb: FB,
    ) -> KeyedConnectedStreams<A, B, K, impl Fn(&Either<A, B>) -> K + Clone + Send + Sync + 'static>
    where
        FA: Fn(&A) -> K + Clone + Send + Sync + 'static,
        FB: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        KeyedConnectedStreams {
            keyed: merged(&self.a, &self.b).key_by(either_key(ka, kb)),
        }
    }
}

/// Two connected streams keyed by a common key.
#[derive(Debug)]
pub struct KeyedConnectedStreams<A, B, K, F> {
    keyed: KeyedStream<Either<A, B>, K, F>,
}

impl<A, B, K, F> KeyedConnectedStreams<A, B, K, F>
where
    A: Data,
    B: Data,
    K: Key,
    F: Fn(&Either<A, B>) -> K + Clone + Send + Sync + 'static,
{
    /// Runs a [`KeyedCoProcessFunction`] over both inputs.
    pub fn process<P>(&self, f: P) -> DataStream<P::Out>
    where
        P: KeyedCoProcessFunction<Key = K, In1 = A, In2 = B>,
    {
        self.keyed.keyed_op(
            "CoProcess",
            KeyedProcess::new(CoProcessAdapter(f), self.keyed.key_of.clone()),
        )
    }
}

/// A window join in the making: `a.join(&b).where_key(..).equal_to(..).window(..).apply(..)`.
#[derive(Debug)]
pub struct JoinedStreams<A, B> {
    a: DataStream<A>,
    b: DataStream<B>,
}

impl<A: Data, B: Data> JoinedStreams<A, B> {
    pub(crate) fn new(a: DataStream<A>, b: DataStream<B>) -> Self {
        JoinedStreams { a, b }
    }

    /// The key of the first input.
    pub fn where_key<K: Key, FA>(self, ka: FA) -> JoinWhere<A, B, K, FA>
    where
        FA: Fn(&A) -> K + Clone + Send + Sync + 'static,
    {
        JoinWhere {
            a: self.a,
            b: self.b,
            ka,
            _k: PhantomData,
        }
    }
}

/// A join with its first key chosen; give the second with [`JoinWhere::equal_to`].
#[derive(Debug)]
pub struct JoinWhere<A, B, K, FA> {
    a: DataStream<A>,
    b: DataStream<B>,
    ka: FA,
    _k: PhantomData<fn() -> K>,
}

impl<A: Data, B: Data, K: Key, FA> JoinWhere<A, B, K, FA>
where
    FA: Fn(&A) -> K + Clone + Send + Sync + 'static,
{
    /// The key of the second input, and the window in which pairs are matched.
    pub fn equal_to<FB>(
        self,
        kb: FB,
        window: WindowAssigner,
    ) -> WindowedJoin<A, B, K, impl Fn(&Either<A, B>) -> K + Clone + Send + Sync + 'static>
    where
        FB: Fn(&B) -> K + Clone + Send + Sync + 'static,
    {
        WindowedJoin {
            keyed: merged(&self.a, &self.b).key_by(either_key(self.ka, kb)),
            window,
        }
    }
}

/// A window join ready for its join function.
#[derive(Debug)]
pub struct WindowedJoin<A, B, K, F> {
    keyed: KeyedStream<Either<A, B>, K, F>,
    window: WindowAssigner,
}

impl<A, B, K, F> WindowedJoin<A, B, K, F>
where
    A: Data,
    B: Data,
    K: Key,
    F: Fn(&Either<A, B>) -> K + Clone + Send + Sync + 'static,
{
    /// Emits `f(a, b)` for every pair with equal keys in the same window, when it fires.
    pub fn apply<O: Data>(&self, f: impl Fn(&A, &B) -> O + Clone + Send + Sync + 'static) -> DataStream<O> {
        if let Err(e) = self.window.validate() {
            self.keyed
                .stream
                .env
                .record_error(format!("operator 'WindowJoin': {e}"));
        }
        self.keyed.keyed_op(
            "WindowJoin",
            WindowOperator::new(
                self.window,
                0,
                JoinLogic { f, _t: PhantomData },
                self.keyed.key_of.clone(),
            ),
        )
    }
}
