use crate::ChannelId;

/// What can go wrong when opening or using a channel.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TransportError {
    /// The same half of a channel was asked for twice: a wiring bug in the caller.
    #[error("channel {0} {1} half was already taken")]
    AlreadyTaken(ChannelId, &'static str),
    /// The other side of the channel is gone (its task ended or failed).
    #[error("channel {0} is closed")]
    Closed(ChannelId),
    /// A typed batch was sent on a network channel: it must be encoded first.
    #[error("channel {0} crosses the network: its batches must be encoded")]
    NotEncoded(ChannelId),
    /// A frame could not be read or written.
    #[error("frame error: {0}")]
    Frame(String),
    /// A channel capacity of zero would deadlock the first send.
    #[error("channel capacity must be at least 1, got {0}")]
    ZeroCapacity(usize),
}
