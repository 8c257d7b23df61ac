//! The DataStream API: build a job graph from sources, transformations and sinks.

mod connected;
mod env;
mod keyed;
mod stream;

pub use connected::{ConnectedStreams, JoinWhere, JoinedStreams, KeyedConnectedStreams, WindowedJoin};
pub use env::StreamEnv;
pub use keyed::{KeyedStream, WindowedStream};
pub use stream::DataStream;
