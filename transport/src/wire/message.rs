//! The Rust form of every frame body.

use bytes::Bytes;

use crate::ChannelId;

/// A key/value option of a job submission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireOption {
    /// Option name.
    pub key: String,
    /// Option value.
    pub value: String,
}

/// One decoded frame. Data-plane messages name their channel and the execution attempt they
/// belong to, so frames of an earlier attempt can be recognized and dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireMessage {
    /// A batch of serialized records.
    Data {
        /// The channel.
        channel: ChannelId,
        /// Execution attempt.
        attempt: u32,
        /// Sequence number of the batch on the channel.
        seq: u64,
        /// Records in the batch.
        records: u32,
        /// The serialized records.
        payload: Bytes,
    },
    /// A watermark.
    Watermark {
        /// The channel.
        channel: ChannelId,
        /// Execution attempt.
        attempt: u32,
        /// Event time in ms.
        timestamp_ms: i64,
    },
    /// The producer went idle or became active.
    Status {
        /// The channel.
        channel: ChannelId,
        /// Execution attempt.
        attempt: u32,
        /// Idle (true) or active again (false).
        idle: bool,
    },
    /// A checkpoint barrier.
    Barrier {
        /// The channel.
        channel: ChannelId,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
        /// When the checkpoint was triggered (ms since the epoch).
        timestamp_ms: i64,
    },
    /// The producer finished.
    EndOfPartition {
        /// The channel.
        channel: ChannelId,
        /// Execution attempt.
        attempt: u32,
    },
    /// The receiver has room for `credits` more data batches.
    Credit {
        /// The channel.
        channel: ChannelId,
        /// Execution attempt.
        attempt: u32,
        /// Batches the sender may send.
        credits: u32,
    },
    /// A worker announces itself to the coordinator.
    Register {
        /// Worker id.
        worker_id: String,
        /// Where the worker accepts data connections.
        data_address: String,
        /// Task slots offered.
        slots: u32,
    },
    /// The coordinator accepted a worker.
    RegisterAck {
        /// Worker id.
        worker_id: String,
        /// How often the worker must send heartbeats.
        heartbeat_interval_ms: u32,
    },
    /// A worker is alive.
    Heartbeat {
        /// Worker id.
        worker_id: String,
    },
    /// Run a subtask of a job.
    DeployTask {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Job name in the registry.
        job_name: String,
        /// Job options.
        options: Vec<WireOption>,
        /// First vertex of the chain to run.
        chain_head: u32,
        /// Subtask index.
        subtask: u32,
        /// Checkpoint to restore (0: none).
        restore_checkpoint: u64,
    },
    /// Stop the tasks of a job's attempt.
    CancelTask {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
    },
    /// Take checkpoint `checkpoint_id` (to source tasks).
    TriggerCheckpoint {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
        /// Trigger time, ms since the epoch.
        timestamp_ms: i64,
    },
    /// A task stored its part of a checkpoint.
    AckCheckpoint {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
        /// Task index.
        task: u32,
        /// Encoded state file metadata.
        state: Bytes,
    },
    /// A checkpoint completed.
    NotifyCheckpointComplete {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
    },
    /// A task failed.
    TaskFailed {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Task index.
        task: u32,
        /// Why.
        reason: String,
    },
}
