//! The types every record and key must have, and the record envelope.

use std::fmt;
use std::hash::Hash;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a record type needs to flow through Sluice: cloneable (broadcast, fan-out), sendable
/// between tasks, printable in errors, and serializable (network shuffles and checkpoints).
///
/// It is implemented for every type with these properties; derive `Clone, Debug, Serialize,
/// Deserialize` on your own types.
pub trait Data: Clone + Send + Sync + fmt::Debug + Serialize + DeserializeOwned + 'static {}
impl<T: Clone + Send + Sync + fmt::Debug + Serialize + DeserializeOwned + 'static> Data for T {}

/// What a key needs: [`Data`], hashable (key groups), and totally ordered (timers and windows
/// are kept in key order so that firing order is deterministic).
pub trait Key: Data + Hash + Eq + Ord {}
impl<T: Data + Hash + Eq + Ord> Key for T {}

/// An event time in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventTime(pub i64);

impl EventTime {
    /// Before every event: the watermark a task starts with, and the timestamp of a record
    /// that has none.
    pub const MIN: EventTime = EventTime(i64::MIN);
    /// After every event: the watermark that ends a bounded input and fires all windows.
    pub const MAX: EventTime = EventTime(i64::MAX);

    /// Milliseconds since the epoch.
    pub fn millis(self) -> i64 {
        self.0
    }

    /// Whether this is a real timestamp rather than [`EventTime::MIN`].
    pub fn is_set(self) -> bool {
        self != EventTime::MIN
    }
}

impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EventTime::MIN => f.write_str("-inf"),
            EventTime::MAX => f.write_str("+inf"),
            EventTime(t) => write!(f, "{t}"),
        }
    }
}

/// A record with its event timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record<T> {
    /// Event time of the record, or [`EventTime::MIN`] if it has none.
    pub ts: EventTime,
    /// The record itself.
    pub value: T,
}

impl<T> Record<T> {
    /// A record with a timestamp.
    pub fn new(value: T, ts: EventTime) -> Self {
        Record { ts, value }
    }
}

/// One of two types: what a two-input operator (connect, join) sees after its inputs are
/// merged into one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Either<A, B> {
    /// A record of the first input.
    Left(A),
    /// A record of the second input.
    Right(B),
}
