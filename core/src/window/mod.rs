//! Event-time windows: assigners, the window operator and the functions it runs.

mod assigner;
mod logic;
mod operator;
mod timers;

pub use assigner::{TimeWindow, WindowAssigner};
pub(crate) use logic::{AggregateLogic, JoinLogic, ProcessLogic, WindowLogic};
pub(crate) use operator::WindowOperator;
