//! The `Transport` seam of Sluice: how stream messages move between subtasks.
//!
//! The task runtime in `sluice-core` only ever talks to an [`OutputChannel`] (to send) and an
//! [`InputChannel`] (to receive). A [`Transport`] decides what is behind them:
//!
//! - [`LocalTransport`] connects both halves in process through bounded queues. It is what the
//!   embedded runner uses: no network, no serialization, batches move as typed Rust values.
//! - A network transport (cluster mode) puts a socket between the halves and ships
//!   [`Payload::Encoded`] bytes instead.
//!
//! Every channel is bounded (`capacity` batches), so a slow consumer backpressures its
//! producers instead of growing memory.
//!
//! ```
//! use sluice_transport::{ChannelId, LocalTransport, Payload, StreamMessage, Transport};
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let transport = LocalTransport::new(4);
//! let id = ChannelId { edge: 0, from: 0, to: 1 };
//! let mut out = transport.output(id).unwrap();
//! let mut input = transport.input(id).unwrap();
//! out.send(StreamMessage::Watermark(42)).await.unwrap();
//! assert!(matches!(input.recv().await, Some(StreamMessage::Watermark(42))));
//! # });
//! ```

mod channel;
mod error;
mod local;
mod message;
pub mod net;
pub mod tls;
pub mod wire;

pub use channel::{InputChannel, OutputChannel};
pub use error::TransportError;
pub use local::LocalTransport;
pub use message::{Barrier, ChannelId, ChannelStatus, Payload, StreamMessage};

/// Connects the two halves of a channel between subtasks.
///
/// The producer side calls [`Transport::output`] and the consumer side [`Transport::input`] for
/// the same [`ChannelId`], in any order; each half can be taken once.
pub trait Transport: Send + Sync + 'static {
    /// Takes the sending half of channel `id`.
    fn output(&self, id: ChannelId) -> Result<OutputChannel, TransportError>;
    /// Takes the receiving half of channel `id`.
    fn input(&self, id: ChannelId) -> Result<InputChannel, TransportError>;
}
