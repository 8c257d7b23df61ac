//! Encoding and checked decoding of frames.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};

use super::generated::sluice::wire as fb;
use super::message::{WireMessage, WireOption};
use super::{MAX_FRAME_BYTES, PROTOCOL_VERSION};
use crate::ChannelId;

/// Why a frame was refused. Each is a reason to close the connection.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a valid FlatBuffer `Frame`.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer speaks another protocol version.
    #[error("frame of protocol version {got}; this build speaks version {supported}")]
    UnsupportedVersion {
        /// The frame's version.
        got: u16,
        /// Ours.
        supported: u16,
    },
    /// The frame's body is of a kind this build does not know.
    #[error("frame of unknown type {0}")]
    UnknownType(u8),
    /// A required field is missing.
    #[error("frame '{kind}' lacks its '{field}' field")]
    MissingField {
        /// The frame kind.
        kind: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes announced.
        expected: usize,
    },
    /// Reading or writing the socket failed.
    #[error("connection error: {0}")]
    Io(String),
}

fn key(c: ChannelId) -> fb::ChannelKey {
    fb::ChannelKey::new(c.edge, c.from, c.to)
}

fn channel(k: Option<&fb::ChannelKey>, kind: &'static str) -> Result<ChannelId, FrameError> {
    let k = k.ok_or(FrameError::MissingField { kind, field: "channel" })?;
    Ok(ChannelId {
        edge: k.edge(),
        from: k.from(),
        to: k.to(),
    })
}

fn text(s: Option<&str>, kind: &'static str, field: &'static str) -> Result<String, FrameError> {
    s.map(str::to_string).ok_or(FrameError::MissingField { kind, field })
}

/// Encodes `msg` as one frame: length prefix and FlatBuffer.
///
/// # Panics
/// If the frame would exceed [`MAX_FRAME_BYTES`]: senders split batches well below it, so
/// this is a bug in the caller.
pub fn encode_frame(msg: &WireMessage) -> Bytes {
    let mut b = FlatBufferBuilder::with_capacity(256);
    let (body_type, body) = build_body(&mut b, msg);
    let frame = fb::Frame::create(
        &mut b,
        &fb::FrameArgs {
            version: PROTOCOL_VERSION,
            body_type,
            body: Some(body),
        },
    );
    b.finish(frame, None);
    let data = b.finished_data();
    assert!(
        data.len() <= MAX_FRAME_BYTES,
        "frame of {} bytes exceeds the {MAX_FRAME_BYTES}-byte limit: split the batch",
        data.len()
    );
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    Bytes::from(out)
}

fn build_body<'a>(
    b: &mut FlatBufferBuilder<'a>,
    msg: &WireMessage,
) -> (fb::Body, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match msg {
        WireMessage::Data { channel, attempt, seq, records, payload } => {
            let payload = b.create_vector(payload);
            let k = key(*channel);
            let t = fb::Data::create(b, &fb::DataArgs { channel: Some(&k), attempt: *attempt, seq: *seq, records: *records, payload: Some(payload) });
            (fb::Body::Data, t.as_union_value())
        }
        WireMessage::Watermark { channel, attempt, timestamp_ms } => {
            let k = key(*channel);
            let t = fb::Watermark::create(b, &fb::WatermarkArgs { channel: Some(&k), attempt: *attempt, timestamp_ms: *timestamp_ms });
            (fb::Body::Watermark, t.as_union_value())
        }
        WireMessage::Status { channel, attempt, idle } => {
            let k = key(*channel);
            let t = fb::Status::create(b, &fb::StatusArgs { channel: Some(&k), attempt: *attempt, idle: *idle });
            (fb::Body::Status, t.as_union_value())
        }
        WireMessage::Barrier { channel, attempt, checkpoint_id, timestamp_ms } => {
            let k = key(*channel);
            let t = fb::Barrier::create(
                b,
                &fb::BarrierArgs { channel: Some(&k), attempt: *attempt, checkpoint_id: *checkpoint_id, timestamp_ms: *timestamp_ms },
            );
            (fb::Body::Barrier, t.as_union_value())
        }
        WireMessage::EndOfPartition { channel, attempt } => {
            let k = key(*channel);
            let t = fb::EndOfPartition::create(b, &fb::EndOfPartitionArgs { channel: Some(&k), attempt: *attempt });
            (fb::Body::EndOfPartition, t.as_union_value())
        }
        WireMessage::Credit { channel, attempt, credits } => {
            let k = key(*channel);
            let t = fb::Credit::create(b, &fb::CreditArgs { channel: Some(&k), attempt: *attempt, credits: *credits });
            (fb::Body::Credit, t.as_union_value())
        }
        WireMessage::Register { worker_id, data_address, slots } => {
            let w = b.create_string(worker_id);
            let a = b.create_string(data_address);
            let t = fb::Register::create(b, &fb::RegisterArgs { worker_id: Some(w), data_address: Some(a), slots: *slots });
            (fb::Body::Register, t.as_union_value())
        }
        WireMessage::RegisterAck { worker_id, heartbeat_interval_ms } => {
            let w = b.create_string(worker_id);
            let t = fb::RegisterAck::create(b, &fb::RegisterAckArgs { worker_id: Some(w), heartbeat_interval_ms: *heartbeat_interval_ms });
            (fb::Body::RegisterAck, t.as_union_value())
        }
        WireMessage::Heartbeat { worker_id } => {
            let w = b.create_string(worker_id);
            let t = fb::Heartbeat::create(b, &fb::HeartbeatArgs { worker_id: Some(w) });
            (fb::Body::Heartbeat, t.as_union_value())
        }
        WireMessage::DeployTask { job_id, attempt, job_name, options, chain_head, subtask, restore_checkpoint } => {
            let j = b.create_string(job_id);
            let n = b.create_string(job_name);
            let opts: Vec<_> = options
                .iter()
                .map(|o| {
                    let k = b.create_string(&o.key);
                    let v = b.create_string(&o.value);
                    fb::JobOption::create(b, &fb::JobOptionArgs { key: Some(k), value: Some(v) })
                })
                .collect();
            let opts = b.create_vector(&opts);
            let t = fb::DeployTask::create(
                b,
                &fb::DeployTaskArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    job_name: Some(n),
                    options: Some(opts),
                    chain_head: *chain_head,
                    subtask: *subtask,
                    restore_checkpoint: *restore_checkpoint,
                },
            );
            (fb::Body::DeployTask, t.as_union_value())
        }
        WireMessage::CancelTask { job_id, attempt } => {
            let j = b.create_string(job_id);
            let t = fb::CancelTask::create(b, &fb::CancelTaskArgs { job_id: Some(j), attempt: *attempt });
            (fb::Body::CancelTask, t.as_union_value())
        }
        WireMessage::TriggerCheckpoint { job_id, attempt, checkpoint_id, timestamp_ms } => {
            let j = b.create_string(job_id);
            let t = fb::TriggerCheckpoint::create(
                b,
                &fb::TriggerCheckpointArgs { job_id: Some(j), attempt: *attempt, checkpoint_id: *checkpoint_id, timestamp_ms: *timestamp_ms },
            );
            (fb::Body::TriggerCheckpoint, t.as_union_value())
        }
        WireMessage::AckCheckpoint { job_id, attempt, checkpoint_id, task, state } => {
            let j = b.create_string(job_id);
            let s = b.create_vector(state);
            let t = fb::AckCheckpoint::create(
                b,
                &fb::AckCheckpointArgs { job_id: Some(j), attempt: *attempt, checkpoint_id: *checkpoint_id, task: *task, state: Some(s) },
            );
            (fb::Body::AckCheckpoint, t.as_union_value())
        }
        WireMessage::NotifyCheckpointComplete { job_id, attempt, checkpoint_id } => {
            let j = b.create_string(job_id);
            let t = fb::NotifyCheckpointComplete::create(
                b,
                &fb::NotifyCheckpointCompleteArgs { job_id: Some(j), attempt: *attempt, checkpoint_id: *checkpoint_id },
            );
            (fb::Body::NotifyCheckpointComplete, t.as_union_value())
        }
        WireMessage::TaskFailed { job_id, attempt, task, reason } => {
            let j = b.create_string(job_id);
            let r = b.create_string(reason);
            let t = fb::TaskFailed::create(b, &fb::TaskFailedArgs { job_id: Some(j), attempt: *attempt, task: *task, reason: Some(r) });
            (fb::Body::TaskFailed, t.as_union_value())
        }
    }
}

/// Decodes the first frame in `buf`: `Ok(None)` if more bytes are needed, else the message
/// and how many bytes it used. The length prefix is checked before anything else, so a
/// hostile length never causes an allocation.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(WireMessage, usize)>, FrameError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes(prefix.try_into().expect("4 bytes")) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge { len, max: MAX_FRAME_BYTES });
    }
    let Some(body) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, 4 + len)))
}

fn verifier_options() -> VerifierOptions {
    VerifierOptions {
        max_depth: 16,
        max_tables: 100_000,
        max_apparent_size: MAX_FRAME_BYTES,
        ignore_missing_null_terminator: false,
    }
}

/// Decodes one frame body (without its length prefix).
pub(crate) fn decode_body(body: &[u8]) -> Result<WireMessage, FrameError> {
    let frame = flatbuffers::root_with_opts::<fb::Frame>(&verifier_options(), body)
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if frame.version() != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion {
            got: frame.version(),
            supported: PROTOCOL_VERSION,
        });
    }
    let missing = |kind: &'static str| FrameError::MissingField { kind, field: "body" };
    Ok(match frame.body_type() {
        fb::Body::Data => {
            let d = frame.body_as_data().ok_or(missing("Data"))?;
            WireMessage::Data {
                channel: channel(d.channel(), "Data")?,
                attempt: d.attempt(),
                seq: d.seq(),
                records: d.records(),
                payload: Bytes::copy_from_slice(d.payload().ok_or(FrameError::MissingField { kind: "Data", field: "payload" })?.bytes()),
            }
        }
        fb::Body::Watermark => {
            let d = frame.body_as_watermark().ok_or(missing("Watermark"))?;
            WireMessage::Watermark { channel: channel(d.channel(), "Watermark")?, attempt: d.attempt(), timestamp_ms: d.timestamp_ms() }
        }
        fb::Body::Status => {
            let d = frame.body_as_status().ok_or(missing("Status"))?;
            WireMessage::Status { channel: channel(d.channel(), "Status")?, attempt: d.attempt(), idle: d.idle() }
        }
        fb::Body::Barrier => {
            let d = frame.body_as_barrier().ok_or(missing("Barrier"))?;
            WireMessage::Barrier {
                channel: channel(d.channel(), "Barrier")?,
                attempt: d.attempt(),
                checkpoint_id: d.checkpoint_id(),
                timestamp_ms: d.timestamp_ms(),
            }
        }
        fb::Body::EndOfPartition => {
            let d = frame.body_as_end_of_partition().ok_or(missing("EndOfPartition"))?;
            WireMessage::EndOfPartition { channel: channel(d.channel(), "EndOfPartition")?, attempt: d.attempt() }
        }
        fb::Body::Credit => {
            let d = frame.body_as_credit().ok_or(missing("Credit"))?;
            WireMessage::Credit { channel: channel(d.channel(), "Credit")?, attempt: d.attempt(), credits: d.credits() }
        }
        fb::Body::Register => {
            let d = frame.body_as_register().ok_or(missing("Register"))?;
            WireMessage::Register {
                worker_id: text(d.worker_id(), "Register", "worker_id")?,
                data_address: text(d.data_address(), "Register", "data_address")?,
                slots: d.slots(),
            }
        }
        fb::Body::RegisterAck => {
            let d = frame.body_as_register_ack().ok_or(missing("RegisterAck"))?;
            WireMessage::RegisterAck {
                worker_id: text(d.worker_id(), "RegisterAck", "worker_id")?,
                heartbeat_interval_ms: d.heartbeat_interval_ms(),
            }
        }
        fb::Body::Heartbeat => {
            let d = frame.body_as_heartbeat().ok_or(missing("Heartbeat"))?;
            WireMessage::Heartbeat { worker_id: text(d.worker_id(), "Heartbeat", "worker_id")? }
        }
        fb::Body::DeployTask => {
            let d = frame.body_as_deploy_task().ok_or(missing("DeployTask"))?;
            let mut options = Vec::new();
            if let Some(opts) = d.options() {
                for o in opts.iter() {
                    options.push(WireOption {
                        key: text(o.key(), "JobOption", "key")?,
                        value: text(o.value(), "JobOption", "value")?,
                    });
                }
            }
            WireMessage::DeployTask {
                job_id: text(d.job_id(), "DeployTask", "job_id")?,
                attempt: d.attempt(),
                job_name: text(d.job_name(), "DeployTask", "job_name")?,
                options,
                chain_head: d.chain_head(),
                subtask: d.subtask(),
                restore_checkpoint: d.restore_checkpoint(),
            }
        }
        fb::Body::CancelTask => {
            let d = frame.body_as_cancel_task().ok_or(missing("CancelTask"))?;
            WireMessage::CancelTask { job_id: text(d.job_id(), "CancelTask", "job_id")?, attempt: d.attempt() }
        }
        fb::Body::TriggerCheckpoint => {
            let d = frame.body_as_trigger_checkpoint().ok_or(missing("TriggerCheckpoint"))?;
            WireMessage::TriggerCheckpoint {
                job_id: text(d.job_id(), "TriggerCheckpoint", "job_id")?,
                attempt: d.attempt(),
                checkpoint_id: d.checkpoint_id(),
                timestamp_ms: d.timestamp_ms(),
            }
        }
        fb::Body::AckCheckpoint => {
            let d = frame.body_as_ack_checkpoint().ok_or(missing("AckCheckpoint"))?;
            WireMessage::AckCheckpoint {
                job_id: text(d.job_id(), "AckCheckpoint", "job_id")?,
                attempt: d.attempt(),
                checkpoint_id: d.checkpoint_id(),
                task: d.task(),
                state: Bytes::copy_from_slice(d.state().map(|v| v.bytes()).unwrap_or_default()),
            }
        }
        fb::Body::NotifyCheckpointComplete => {
            let d = frame.body_as_notify_checkpoint_complete().ok_or(missing("NotifyCheckpointComplete"))?;
            WireMessage::NotifyCheckpointComplete {
                job_id: text(d.job_id(), "NotifyCheckpointComplete", "job_id")?,
                attempt: d.attempt(),
                checkpoint_id: d.checkpoint_id(),
            }
        }
        fb::Body::TaskFailed => {
            let d = frame.body_as_task_failed().ok_or(missing("TaskFailed"))?;
            WireMessage::TaskFailed {
                job_id: text(d.job_id(), "TaskFailed", "job_id")?,
                attempt: d.attempt(),
                task: d.task(),
                reason: text(d.reason(), "TaskFailed", "reason")?,
            }
        }
        other => return Err(FrameError::UnknownType(other.0)),
    })
}
