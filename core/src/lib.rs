//! Sluice core: the DataStream API, operators, event time, and the task runtime.
//!
//! A job is built with a [`StreamEnv`]: add sources, transform the resulting [`DataStream`]s
//! (`map`, `filter`, `flat_map`, `key_by`, keyed `reduce` and `process`, windows, `union`,
//! `connect`, window `join`), and end them in sinks. [`StreamEnv::execute`] runs the job in this
//! process; records move between tasks in batches over bounded channels of the
//! `sluice-transport` crate, and watermarks and barriers flow in band with them.
//!
//! Operators connected by forward edges with equal parallelism are *chained*: they run in one
//! task and hand batches to each other by function call.

pub mod api;
mod buggify;
pub mod checkpoint;
pub mod clock;
pub mod cluster;
mod codec;
pub mod connectors;
pub mod data;
pub mod duration;
pub mod error;
pub mod functions;
pub mod graph;
pub mod ha;
pub mod metrics;
pub mod operator;
mod operators;
pub mod partition;
pub mod paths;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod spawned;
pub mod state_backend;
pub mod status;
pub mod sync;
pub mod watermark;
pub mod window;

pub use api::{DataStream, KeyedStream, StreamEnv, WindowedStream};
pub use clock::Clock;
pub use data::{Data, Either, EventTime, Key, Record};
pub use error::{CheckpointError, JobError, OperatorError};
pub use functions::{
    AggregateFunction, Collector, KeyedCoProcessFunction, KeyedContext, KeyedProcessFunction, TimeDomain,
};
pub use graph::JobGraph;
pub use runtime::{ExecutionConfig, JobControl, JobController, JobHandle, JobResult, SavepointRestore};
pub use sink::{Sink, SinkWriter, TransactionalSink, TransactionalWriter};
/// Keyed state handles and key groups, re-exported from `sluice-state`.
pub use sluice_state as state;
pub use source::{Source, SourcePoll, SourceReader};
pub use status::JobStatus;
pub use watermark::WatermarkStrategy;
pub use window::{TimeWindow, WindowAssigner};
