use std::any::Any;
use std::fmt;

use bytes::Bytes;

/// Identifies one channel: one edge of the job graph between one producer subtask and one
/// consumer subtask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChannelId {
    /// Index of the edge in the job graph.
    pub edge: u32,
    /// Producer subtask index.
    pub from: u32,
    /// Consumer subtask index.
    pub to: u32,
}

impl fmt::Display for ChannelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "e{}:{}->{}", self.edge, self.from, self.to)
    }
}

/// A batch of records as it travels a channel.
pub enum Payload {
    /// A typed batch that stays inside the process (no serialization).
    Local(Box<dyn Any + Send>),
    /// A serialized batch, as it arrives from the network.
    Encoded(Bytes),
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Payload::Local(_) => f.write_str("Payload::Local(..)"),
            Payload::Encoded(b) => write!(f, "Payload::Encoded({} bytes)", b.len()),
        }
    }
}

/// A checkpoint barrier: everything before it on a channel belongs to checkpoint
/// `checkpoint_id`, everything after it to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    /// The checkpoint this barrier delimits; strictly increasing on a channel.
    pub checkpoint_id: u64,
    /// Wall-clock time (ms since the epoch) at which the coordinator triggered it.
    pub timestamp_ms: i64,
}

/// Whether a channel currently carries event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelStatus {
    /// The producer has no data for a while; its watermark must not hold back the consumer.
    Idle,
    /// The producer emits data again; its watermark counts once more.
    Active,
}

/// Everything that flows on a channel. Progress (watermarks, barriers) flows in band with the
/// records, so its order relative to the data is exact.
#[derive(Debug)]
pub enum StreamMessage {
    /// A batch of records.
    Data(Payload),
    /// No record with an event time at or below this (ms) will follow on this channel.
    Watermark(i64),
    /// The producer went idle or became active again.
    Status(ChannelStatus),
    /// A checkpoint barrier.
    Barrier(Barrier),
    /// The producer finished; nothing follows.
    EndOfPartition,
}
