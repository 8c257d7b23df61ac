//! The user-function traits of the DataStream API.

mod aggregate;
pub(crate) mod process;
mod timers;

pub use aggregate::AggregateFunction;
pub use process::{Collector, KeyedCoProcessFunction, KeyedContext, KeyedProcessFunction, TimeDomain};
pub(crate) use timers::TimerService;
