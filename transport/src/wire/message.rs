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
#[derive(Debug, Clone, PartialEq)]
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
        /// The worker's build (binary, version, jobs): a coordinator of another build
        /// refuses it.
        build: String,
    },
    /// The coordinator accepted a worker.
    RegisterAck {
        /// Worker id.
        worker_id: String,
        /// How often the worker must send heartbeats.
        heartbeat_interval_ms: u32,
        /// After how long without a heartbeat the coordinator declares the worker lost.
        heartbeat_timeout_ms: u32,
        /// The leader's epoch: a worker refuses a coordinator of a lower one than it followed.
        epoch: u64,
    },
    /// A worker is alive.
    Heartbeat {
        /// Worker id.
        worker_id: String,
    },
    /// Run a worker's share of one execution attempt.
    DeployTask {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Job name in the registry.
        job_name: String,
        /// Job options.
        options: Vec<WireOption>,
        /// The worker id of every task of the attempt, by task number.
        placement: Vec<String>,
        /// The data address of every worker in `placement`.
        peers: Vec<WirePeer>,
        /// Where checkpoints are stored; empty when checkpointing is off.
        checkpoint_store: String,
        /// Checkpoint to restore (0: none).
        restore_checkpoint: u64,
        /// Where the savepoint to restore is, when the attempt starts from one (else empty).
        restore_savepoint: String,
        /// Operators renamed since the savepoint: old uid (key) to new uid (value).
        uid_mapping: Vec<WireOption>,
        /// The state backend the job asked for (`heap`, `tiered`); empty: the worker's
        /// default.
        state_backend: String,
    },
    /// Stop the tasks of a job's attempt.
    CancelTask {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Drain instead: sources stop, tasks finish as at end of input.
        drain: bool,
    },
    /// Take checkpoint `checkpoint_id` (to a source task).
    TriggerCheckpoint {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
        /// Trigger time, ms since the epoch.
        timestamp_ms: i64,
        /// Task number.
        task: u32,
    },
    /// A task stored its part of a checkpoint.
    AckCheckpoint {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
        /// Task number.
        task: u32,
        /// Encoded state file metadata.
        state: Bytes,
        /// How long the task aligned the checkpoint's barriers, in ms.
        alignment_ms: u64,
    },
    /// A checkpoint completed (to one task).
    NotifyCheckpointComplete {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
        /// Task number.
        task: u32,
    },
    /// A task failed.
    TaskFailed {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Task number.
        task: u32,
        /// Why.
        reason: String,
        /// A restart would fail the same way: the job fails at once.
        permanent: bool,
    },
    /// A task could not take its part of a checkpoint.
    DeclineCheckpoint {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Checkpoint id.
        checkpoint_id: u64,
        /// Task number.
        task: u32,
        /// Why.
        reason: String,
    },
    /// A source task read all its input and waits for the final checkpoint.
    InputFinished {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Task number.
        task: u32,
    },
    /// The final checkpoint is complete: the source task may end.
    EndInput {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Task number.
        task: u32,
    },
    /// A task ended.
    TaskFinished {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// Task number.
        task: u32,
        /// It was cancelled rather than finishing its input.
        cancelled: bool,
    },
    /// A worker's part of an attempt has stopped: no task or upload of it runs there any
    /// more (sent when the attempt ends there, and in answer to a cancel of an attempt the
    /// worker does not run).
    AttemptEnded {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
    },
    /// First frame on a data connection between workers.
    DataHello {
        /// Job id.
        job_id: String,
        /// Execution attempt.
        attempt: u32,
        /// The connecting worker.
        worker_id: String,
    },
    /// A client submits a job from the registry.
    SubmitJob {
        /// Job name in the registry.
        job_name: String,
        /// Job options.
        options: Vec<WireOption>,
        /// The client's id for this submission, empty for none: a retry with the same id
        /// answers with the job the first try created instead of creating another.
        submission: String,
    },
    /// The coordinator accepted a submission.
    JobSubmitted {
        /// The new job's id.
        job_id: String,
    },
    /// A client asks for every job.
    ListJobs,
    /// Every job the coordinator knows.
    JobList {
        /// The jobs, oldest first.
        jobs: Vec<WireJobEntry>,
    },
    /// A worker's metrics (sent after each heartbeat).
    MetricsReport {
        /// Worker id.
        worker_id: String,
        /// Its metrics.
        points: Vec<WireMetric>,
    },
    /// A client asks to cancel a job.
    CancelJob {
        /// Job id.
        job_id: String,
    },
    /// The job is being cancelled.
    JobCancelled {
        /// Job id.
        job_id: String,
    },
    /// The coordinator refused a client request.
    Rejected {
        /// Why.
        reason: String,
        /// What kind of refusal: 0 unspecified (an older peer), 1 not found, 2 conflict with
        /// the job's state, 3 invalid request, 4 unavailable, 5 failed while carrying it out.
        kind: u8,
    },
    /// A client asks for a savepoint.
    TriggerSavepoint {
        /// Job id.
        job_id: String,
        /// Where to put it.
        target_dir: String,
        /// Stop the job after it.
        stop: bool,
        /// Drain before (with `stop`).
        drain: bool,
    },
    /// A savepoint is complete.
    SavepointDone {
        /// Its path.
        path: String,
        /// The checkpoint it was taken at.
        checkpoint_id: u64,
    },
}

/// Where a worker accepts data connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WirePeer {
    /// Worker id.
    pub worker_id: String,
    /// Its data address.
    pub data_address: String,
}

/// One metric in a [`WireMessage::MetricsReport`].
#[derive(Debug, Clone, PartialEq)]
pub struct WireMetric {
    /// Metric name.
    pub name: String,
    /// What it measures.
    pub help: String,
    /// 0 counter, 1 gauge, 2 meter, 3 histogram.
    pub kind: u8,
    /// Scope labels.
    pub labels: Vec<(String, String)>,
    /// Counter: its count; gauge: its value; meter: its rate; histogram: its sum.
    pub value: f64,
    /// Meter and histogram: the count.
    pub count: u64,
    /// Histogram: `(upper bound, cumulative count)`.
    pub buckets: Vec<(f64, u64)>,
}

/// One job in a [`WireMessage::JobList`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireJobEntry {
    /// Job id.
    pub job_id: String,
    /// Job name.
    pub job_name: String,
    /// Status (Flink's names).
    pub status: String,
    /// Why it failed, if it did (else empty).
    pub error: String,
    /// How the job is doing (zero for one that does not run).
    pub progress: WireProgress,
}

/// How a running job is doing, as `submit --wait` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireProgress {
    /// Records per second out of the first vertex (the sources).
    pub in_per_second: u64,
    /// Records per second into the last vertex (the sinks).
    pub out_per_second: u64,
    /// How far the sinks' watermark trails the coordinator's clock, ms; -1: no watermark.
    pub watermark_lag_ms: i64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// The last completed checkpoint's duration, ms.
    pub last_checkpoint_ms: u64,
    /// Restarts so far.
    pub restarts: u64,
}
