//! Cluster-mode data plane: many channels multiplexed over one TCP connection per pair of
//! workers, with credit-based flow control per channel (as in Flink's network stack).
//!
//! A receiver announces how many data batches it has room for (`Credit` frames: first when a
//! channel opens, then one credit back for every batch its consumer takes). A sender only
//! sends data batches it has credit for; everything else it queues, up to a bound, and then
//! `send` waits. So a slow consumer backpressures exactly its own producers, the other channels
//! sharing the connection keep flowing, and memory stays bounded on both sides: at most
//! `queue` batches wait at the sender and `credits` at the receiver, per channel.
//!
//! Progress messages (watermarks, barriers, end of partition) need no credit but keep their
//! place in the channel's order behind the data queued before them.

mod connection;
mod loopback;

pub use connection::{Connection, ConnectionConfig, RemoteInput, RemoteOutput, Role};
pub use loopback::TcpLoopbackTransport;
