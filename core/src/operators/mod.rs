//! The built-in operators behind the DataStream API.

pub(crate) mod keyed_process;
pub(crate) mod keyed_reduce;
pub(crate) mod stateless;
