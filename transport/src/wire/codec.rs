//! Encoding and checked decoding of frames.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, VerifierOptions, WIPOffset};

use super::generated::sluice::wire as fb;
use super::message::{WireJobEntry, WireMessage, WireMetric, WireOption, WirePeer, WireProgress};
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

/// Encodes `msg` as one frame: length prefix and FlatBuffer. A frame over [`MAX_FRAME_BYTES`]
/// is refused (`FrameError::TooLarge`): its receiver would refuse it too, so the sender must
/// page or cut what it sends.
pub fn encode_frame(msg: &WireMessage) -> Result<Bytes, FrameError> {
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
    if data.len() > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len: data.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let mut out = Vec::with_capacity(4 + data.len());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    Ok(Bytes::from(out))
}

fn build_body<'a>(
    b: &mut FlatBufferBuilder<'a>,
    msg: &WireMessage,
) -> (fb::Body, WIPOffset<flatbuffers::UnionWIPOffset>) {
    match msg {
        WireMessage::Data {
            channel,
            attempt,
            seq,
            records,
            payload,
        } => {
            let payload = b.create_vector(payload);
            let k = key(*channel);
            let t = fb::Data::create(
                b,
                &fb::DataArgs {
                    channel: Some(&k),
                    attempt: *attempt,
                    seq: *seq,
                    records: *records,
                    payload: Some(payload),
                },
            );
            (fb::Body::Data, t.as_union_value())
        }
        WireMessage::Watermark {
            channel,
            attempt,
            timestamp_ms,
        } => {
            let k = key(*channel);
            let t = fb::Watermark::create(
                b,
                &fb::WatermarkArgs {
                    channel: Some(&k),
                    attempt: *attempt,
                    timestamp_ms: *timestamp_ms,
                },
            );
            (fb::Body::Watermark, t.as_union_value())
        }
        WireMessage::Status { channel, attempt, idle } => {
            let k = key(*channel);
            let t = fb::Status::create(
                b,
                &fb::StatusArgs {
                    channel: Some(&k),
                    attempt: *attempt,
                    idle: *idle,
                },
            );
            (fb::Body::Status, t.as_union_value())
        }
        WireMessage::Barrier {
            channel,
            attempt,
            checkpoint_id,
            timestamp_ms,
        } => {
            let k = key(*channel);
            let t = fb::Barrier::create(
                b,
                &fb::BarrierArgs {
                    channel: Some(&k),
                    attempt: *attempt,
                    checkpoint_id: *checkpoint_id,
                    timestamp_ms: *timestamp_ms,
                },
            );
            (fb::Body::Barrier, t.as_union_value())
        }
        WireMessage::EndOfPartition { channel, attempt } => {
            let k = key(*channel);
            let t = fb::EndOfPartition::create(
                b,
                &fb::EndOfPartitionArgs {
                    channel: Some(&k),
                    attempt: *attempt,
                },
            );
            (fb::Body::EndOfPartition, t.as_union_value())
        }
        WireMessage::Credit {
            channel,
            attempt,
            credits,
        } => {
            let k = key(*channel);
            let t = fb::Credit::create(
                b,
                &fb::CreditArgs {
                    channel: Some(&k),
                    attempt: *attempt,
                    credits: *credits,
                },
            );
            (fb::Body::Credit, t.as_union_value())
        }
        WireMessage::Register {
            worker_id,
            data_address,
            slots,
            build,
        } => {
            let w = b.create_string(worker_id);
            let a = b.create_string(data_address);
            let bu = b.create_string(build);
            let t = fb::Register::create(
                b,
                &fb::RegisterArgs {
                    worker_id: Some(w),
                    data_address: Some(a),
                    slots: *slots,
                    build: Some(bu),
                },
            );
            (fb::Body::Register, t.as_union_value())
        }
        WireMessage::RegisterAck {
            worker_id,
            heartbeat_interval_ms,
            heartbeat_timeout_ms,
            epoch,
        } => {
            let w = b.create_string(worker_id);
            let t = fb::RegisterAck::create(
                b,
                &fb::RegisterAckArgs {
                    worker_id: Some(w),
                    heartbeat_interval_ms: *heartbeat_interval_ms,
                    heartbeat_timeout_ms: *heartbeat_timeout_ms,
                    epoch: *epoch,
                },
            );
            (fb::Body::RegisterAck, t.as_union_value())
        }
        WireMessage::Heartbeat { worker_id } => {
            let w = b.create_string(worker_id);
            let t = fb::Heartbeat::create(b, &fb::HeartbeatArgs { worker_id: Some(w) });
            (fb::Body::Heartbeat, t.as_union_value())
        }
        WireMessage::DeployTask {
            job_id,
            attempt,
            job_name,
            options,
            placement,
            peers,
            checkpoint_store,
            restore_checkpoint,
            restore_savepoint,
            uid_mapping,
            state_backend,
        } => {
            let j = b.create_string(job_id);
            let n = b.create_string(job_name);
            let opts = options_vector(b, options);
            let places: Vec<_> = placement.iter().map(|w| b.create_string(w)).collect();
            let places = b.create_vector(&places);
            let peers: Vec<_> = peers
                .iter()
                .map(|p| {
                    let w = b.create_string(&p.worker_id);
                    let a = b.create_string(&p.data_address);
                    fb::Peer::create(
                        b,
                        &fb::PeerArgs {
                            worker_id: Some(w),
                            data_address: Some(a),
                        },
                    )
                })
                .collect();
            let peers = b.create_vector(&peers);
            let store = b.create_string(checkpoint_store);
            let savepoint = b.create_string(restore_savepoint);
            let mapping = options_vector(b, uid_mapping);
            let backend = b.create_string(state_backend);
            let t = fb::DeployTask::create(
                b,
                &fb::DeployTaskArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    job_name: Some(n),
                    options: Some(opts),
                    placement: Some(places),
                    peers: Some(peers),
                    checkpoint_store: Some(store),
                    restore_checkpoint: *restore_checkpoint,
                    restore_savepoint: Some(savepoint),
                    uid_mapping: Some(mapping),
                    state_backend: Some(backend),
                },
            );
            (fb::Body::DeployTask, t.as_union_value())
        }
        WireMessage::CancelTask { job_id, attempt, drain } => {
            let j = b.create_string(job_id);
            let t = fb::CancelTask::create(
                b,
                &fb::CancelTaskArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    drain: *drain,
                },
            );
            (fb::Body::CancelTask, t.as_union_value())
        }
        WireMessage::TriggerCheckpoint {
            job_id,
            attempt,
            checkpoint_id,
            timestamp_ms,
            task,
        } => {
            let j = b.create_string(job_id);
            let t = fb::TriggerCheckpoint::create(
                b,
                &fb::TriggerCheckpointArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    checkpoint_id: *checkpoint_id,
                    timestamp_ms: *timestamp_ms,
                    task: *task,
                },
            );
            (fb::Body::TriggerCheckpoint, t.as_union_value())
        }
        WireMessage::AckCheckpoint {
            job_id,
            attempt,
            checkpoint_id,
            task,
            state,
            alignment_ms,
        } => {
            let j = b.create_string(job_id);
            let s = b.create_vector(state);
            let t = fb::AckCheckpoint::create(
                b,
                &fb::AckCheckpointArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    checkpoint_id: *checkpoint_id,
                    task: *task,
                    state: Some(s),
                    alignment_ms: *alignment_ms,
                },
            );
            (fb::Body::AckCheckpoint, t.as_union_value())
        }
        WireMessage::NotifyCheckpointComplete {
            job_id,
            attempt,
            checkpoint_id,
            task,
        } => {
            let j = b.create_string(job_id);
            let t = fb::NotifyCheckpointComplete::create(
                b,
                &fb::NotifyCheckpointCompleteArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    checkpoint_id: *checkpoint_id,
                    task: *task,
                },
            );
            (fb::Body::NotifyCheckpointComplete, t.as_union_value())
        }
        WireMessage::TaskFailed {
            job_id,
            attempt,
            task,
            reason,
            permanent,
        } => {
            let j = b.create_string(job_id);
            let r = b.create_string(reason);
            let t = fb::TaskFailed::create(
                b,
                &fb::TaskFailedArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    task: *task,
                    reason: Some(r),
                    permanent: *permanent,
                },
            );
            (fb::Body::TaskFailed, t.as_union_value())
        }
        WireMessage::DeclineCheckpoint {
            job_id,
            attempt,
            checkpoint_id,
            task,
            reason,
        } => {
            let j = b.create_string(job_id);
            let r = b.create_string(reason);
            let t = fb::DeclineCheckpoint::create(
                b,
                &fb::DeclineCheckpointArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    checkpoint_id: *checkpoint_id,
                    task: *task,
                    reason: Some(r),
                },
            );
            (fb::Body::DeclineCheckpoint, t.as_union_value())
        }
        WireMessage::InputFinished { job_id, attempt, task } => {
            let j = b.create_string(job_id);
            let t = fb::InputFinished::create(
                b,
                &fb::InputFinishedArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    task: *task,
                },
            );
            (fb::Body::InputFinished, t.as_union_value())
        }
        WireMessage::EndInput { job_id, attempt, task } => {
            let j = b.create_string(job_id);
            let t = fb::EndInput::create(
                b,
                &fb::EndInputArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    task: *task,
                },
            );
            (fb::Body::EndInput, t.as_union_value())
        }
        WireMessage::TaskFinished {
            job_id,
            attempt,
            task,
            cancelled,
        } => {
            let j = b.create_string(job_id);
            let t = fb::TaskFinished::create(
                b,
                &fb::TaskFinishedArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    task: *task,
                    cancelled: *cancelled,
                },
            );
            (fb::Body::TaskFinished, t.as_union_value())
        }
        WireMessage::AttemptEnded { job_id, attempt } => {
            let j = b.create_string(job_id);
            let t = fb::AttemptEnded::create(
                b,
                &fb::AttemptEndedArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                },
            );
            (fb::Body::AttemptEnded, t.as_union_value())
        }
        WireMessage::DataHello {
            job_id,
            attempt,
            worker_id,
        } => {
            let j = b.create_string(job_id);
            let w = b.create_string(worker_id);
            let t = fb::DataHello::create(
                b,
                &fb::DataHelloArgs {
                    job_id: Some(j),
                    attempt: *attempt,
                    worker_id: Some(w),
                },
            );
            (fb::Body::DataHello, t.as_union_value())
        }
        WireMessage::SubmitJob {
            job_name,
            options,
            submission,
        } => {
            let n = b.create_string(job_name);
            let opts = options_vector(b, options);
            let sub = b.create_string(submission);
            let t = fb::SubmitJob::create(
                b,
                &fb::SubmitJobArgs {
                    job_name: Some(n),
                    options: Some(opts),
                    submission: Some(sub),
                },
            );
            (fb::Body::SubmitJob, t.as_union_value())
        }
        WireMessage::JobSubmitted { job_id } => {
            let j = b.create_string(job_id);
            let t = fb::JobSubmitted::create(b, &fb::JobSubmittedArgs { job_id: Some(j) });
            (fb::Body::JobSubmitted, t.as_union_value())
        }
        WireMessage::ListJobs => {
            let t = fb::ListJobs::create(b, &fb::ListJobsArgs {});
            (fb::Body::ListJobs, t.as_union_value())
        }
        WireMessage::JobList { jobs } => {
            let entries: Vec<_> = jobs
                .iter()
                .map(|e| {
                    let j = b.create_string(&e.job_id);
                    let n = b.create_string(&e.job_name);
                    let st = b.create_string(&e.status);
                    let er = b.create_string(&e.error);
                    fb::JobEntry::create(
                        b,
                        &fb::JobEntryArgs {
                            job_id: Some(j),
                            job_name: Some(n),
                            status: Some(st),
                            error: Some(er),
                            in_per_second: e.progress.in_per_second,
                            out_per_second: e.progress.out_per_second,
                            watermark_lag_ms: e.progress.watermark_lag_ms,
                            checkpoints: e.progress.checkpoints,
                            last_checkpoint_ms: e.progress.last_checkpoint_ms,
                            restarts: e.progress.restarts,
                        },
                    )
                })
                .collect();
            let entries = b.create_vector(&entries);
            let t = fb::JobList::create(b, &fb::JobListArgs { jobs: Some(entries) });
            (fb::Body::JobList, t.as_union_value())
        }
        WireMessage::MetricsReport { worker_id, points } => {
            let w = b.create_string(worker_id);
            let ps: Vec<_> = points
                .iter()
                .map(|p| {
                    let n = b.create_string(&p.name);
                    let h = b.create_string(&p.help);
                    let ls: Vec<_> = p
                        .labels
                        .iter()
                        .map(|(k, v)| {
                            let k = b.create_string(k);
                            let v = b.create_string(v);
                            fb::MetricLabel::create(
                                b,
                                &fb::MetricLabelArgs {
                                    key: Some(k),
                                    value: Some(v),
                                },
                            )
                        })
                        .collect();
                    let ls = b.create_vector(&ls);
                    let bounds: Vec<f64> = p.buckets.iter().map(|x| x.0).collect();
                    let counts: Vec<u64> = p.buckets.iter().map(|x| x.1).collect();
                    let bounds = b.create_vector(&bounds);
                    let counts = b.create_vector(&counts);
                    fb::MetricPoint::create(
                        b,
                        &fb::MetricPointArgs {
                            name: Some(n),
                            help: Some(h),
                            kind: p.kind,
                            labels: Some(ls),
                            value: p.value,
                            count: p.count,
                            bounds: Some(bounds),
                            bucket_counts: Some(counts),
                        },
                    )
                })
                .collect();
            let ps = b.create_vector(&ps);
            let t = fb::MetricsReport::create(
                b,
                &fb::MetricsReportArgs {
                    worker_id: Some(w),
                    points: Some(ps),
                },
            );
            (fb::Body::MetricsReport, t.as_union_value())
        }
        WireMessage::CancelJob { job_id } => {
            let j = b.create_string(job_id);
            let t = fb::CancelJob::create(b, &fb::CancelJobArgs { job_id: Some(j) });
            (fb::Body::CancelJob, t.as_union_value())
        }
        WireMessage::JobCancelled { job_id } => {
            let j = b.create_string(job_id);
            let t = fb::JobCancelled::create(b, &fb::JobCancelledArgs { job_id: Some(j) });
            (fb::Body::JobCancelled, t.as_union_value())
        }
        WireMessage::Rejected { reason, kind } => {
            let r = b.create_string(reason);
            let t = fb::Rejected::create(
                b,
                &fb::RejectedArgs {
                    reason: Some(r),
                    kind: *kind,
                },
            );
            (fb::Body::Rejected, t.as_union_value())
        }
        WireMessage::TriggerSavepoint {
            job_id,
            target_dir,
            stop,
            drain,
        } => {
            let j = b.create_string(job_id);
            let d = b.create_string(target_dir);
            let t = fb::TriggerSavepoint::create(
                b,
                &fb::TriggerSavepointArgs {
                    job_id: Some(j),
                    target_dir: Some(d),
                    stop: *stop,
                    drain: *drain,
                },
            );
            (fb::Body::TriggerSavepoint, t.as_union_value())
        }
        WireMessage::SavepointDone { path, checkpoint_id } => {
            let p = b.create_string(path);
            let t = fb::SavepointDone::create(
                b,
                &fb::SavepointDoneArgs {
                    path: Some(p),
                    checkpoint_id: *checkpoint_id,
                },
            );
            (fb::Body::SavepointDone, t.as_union_value())
        }
    }
}

fn options_vector<'a>(
    b: &mut FlatBufferBuilder<'a>,
    options: &[WireOption],
) -> WIPOffset<flatbuffers::Vector<'a, flatbuffers::ForwardsUOffset<fb::JobOption<'a>>>> {
    let opts: Vec<_> = options
        .iter()
        .map(|o| {
            let k = b.create_string(&o.key);
            let v = b.create_string(&o.value);
            fb::JobOption::create(
                b,
                &fb::JobOptionArgs {
                    key: Some(k),
                    value: Some(v),
                },
            )
        })
        .collect();
    b.create_vector(&opts)
}

fn decode_options(
    opts: Option<flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<fb::JobOption<'_>>>>,
) -> Result<Vec<WireOption>, FrameError> {
    let mut options = Vec::new();
    for o in opts.iter().flat_map(|v| v.iter()) {
        options.push(WireOption {
            key: text(o.key(), "JobOption", "key")?,
            value: text(o.value(), "JobOption", "value")?,
        });
    }
    Ok(options)
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
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
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
                payload: Bytes::copy_from_slice(
                    d.payload()
                        .ok_or(FrameError::MissingField {
                            kind: "Data",
                            field: "payload",
                        })?
                        .bytes(),
                ),
            }
        }
        fb::Body::Watermark => {
            let d = frame.body_as_watermark().ok_or(missing("Watermark"))?;
            WireMessage::Watermark {
                channel: channel(d.channel(), "Watermark")?,
                attempt: d.attempt(),
                timestamp_ms: d.timestamp_ms(),
            }
        }
        fb::Body::Status => {
            let d = frame.body_as_status().ok_or(missing("Status"))?;
            WireMessage::Status {
                channel: channel(d.channel(), "Status")?,
                attempt: d.attempt(),
                idle: d.idle(),
            }
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
            WireMessage::EndOfPartition {
                channel: channel(d.channel(), "EndOfPartition")?,
                attempt: d.attempt(),
            }
        }
        fb::Body::Credit => {
            let d = frame.body_as_credit().ok_or(missing("Credit"))?;
            WireMessage::Credit {
                channel: channel(d.channel(), "Credit")?,
                attempt: d.attempt(),
                credits: d.credits(),
            }
        }
        fb::Body::Register => {
            let d = frame.body_as_register().ok_or(missing("Register"))?;
            WireMessage::Register {
                worker_id: text(d.worker_id(), "Register", "worker_id")?,
                data_address: text(d.data_address(), "Register", "data_address")?,
                slots: d.slots(),
                // Absent in frames of builds before it existed: a build of its own.
                build: d.build().unwrap_or_default().to_string(),
            }
        }
        fb::Body::RegisterAck => {
            let d = frame.body_as_register_ack().ok_or(missing("RegisterAck"))?;
            WireMessage::RegisterAck {
                worker_id: text(d.worker_id(), "RegisterAck", "worker_id")?,
                heartbeat_interval_ms: d.heartbeat_interval_ms(),
                heartbeat_timeout_ms: d.heartbeat_timeout_ms(),
                epoch: d.epoch(),
            }
        }
        fb::Body::Heartbeat => {
            let d = frame.body_as_heartbeat().ok_or(missing("Heartbeat"))?;
            WireMessage::Heartbeat {
                worker_id: text(d.worker_id(), "Heartbeat", "worker_id")?,
            }
        }
        fb::Body::DeployTask => {
            let d = frame.body_as_deploy_task().ok_or(missing("DeployTask"))?;
            let placement = d
                .placement()
                .map(|v| v.iter().map(str::to_string).collect())
                .unwrap_or_default();
            let mut peers = Vec::new();
            for p in d.peers().iter().flat_map(|v| v.iter()) {
                peers.push(WirePeer {
                    worker_id: text(p.worker_id(), "Peer", "worker_id")?,
                    data_address: text(p.data_address(), "Peer", "data_address")?,
                });
            }
            WireMessage::DeployTask {
                job_id: text(d.job_id(), "DeployTask", "job_id")?,
                attempt: d.attempt(),
                job_name: text(d.job_name(), "DeployTask", "job_name")?,
                options: decode_options(d.options())?,
                placement,
                peers,
                checkpoint_store: d.checkpoint_store().unwrap_or_default().to_string(),
                restore_checkpoint: d.restore_checkpoint(),
                restore_savepoint: d.restore_savepoint().unwrap_or_default().to_string(),
                uid_mapping: decode_options(d.uid_mapping())?,
                // Absent in frames of a coordinator older than the field: the worker's default.
                state_backend: d.state_backend().unwrap_or_default().to_string(),
            }
        }
        fb::Body::CancelTask => {
            let d = frame.body_as_cancel_task().ok_or(missing("CancelTask"))?;
            WireMessage::CancelTask {
                job_id: text(d.job_id(), "CancelTask", "job_id")?,
                attempt: d.attempt(),
                drain: d.drain(),
            }
        }
        fb::Body::TriggerCheckpoint => {
            let d = frame.body_as_trigger_checkpoint().ok_or(missing("TriggerCheckpoint"))?;
            WireMessage::TriggerCheckpoint {
                job_id: text(d.job_id(), "TriggerCheckpoint", "job_id")?,
                attempt: d.attempt(),
                checkpoint_id: d.checkpoint_id(),
                timestamp_ms: d.timestamp_ms(),
                task: d.task(),
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
                alignment_ms: d.alignment_ms(),
            }
        }
        fb::Body::NotifyCheckpointComplete => {
            let d = frame
                .body_as_notify_checkpoint_complete()
                .ok_or(missing("NotifyCheckpointComplete"))?;
            WireMessage::NotifyCheckpointComplete {
                job_id: text(d.job_id(), "NotifyCheckpointComplete", "job_id")?,
                attempt: d.attempt(),
                checkpoint_id: d.checkpoint_id(),
                task: d.task(),
            }
        }
        fb::Body::TaskFailed => {
            let d = frame.body_as_task_failed().ok_or(missing("TaskFailed"))?;
            WireMessage::TaskFailed {
                job_id: text(d.job_id(), "TaskFailed", "job_id")?,
                attempt: d.attempt(),
                task: d.task(),
                reason: text(d.reason(), "TaskFailed", "reason")?,
                permanent: d.permanent(),
            }
        }
        fb::Body::DeclineCheckpoint => {
            let d = frame.body_as_decline_checkpoint().ok_or(missing("DeclineCheckpoint"))?;
            WireMessage::DeclineCheckpoint {
                job_id: text(d.job_id(), "DeclineCheckpoint", "job_id")?,
                attempt: d.attempt(),
                checkpoint_id: d.checkpoint_id(),
                task: d.task(),
                reason: text(d.reason(), "DeclineCheckpoint", "reason")?,
            }
        }
        fb::Body::InputFinished => {
            let d = frame.body_as_input_finished().ok_or(missing("InputFinished"))?;
            WireMessage::InputFinished {
                job_id: text(d.job_id(), "InputFinished", "job_id")?,
                attempt: d.attempt(),
                task: d.task(),
            }
        }
        fb::Body::EndInput => {
            let d = frame.body_as_end_input().ok_or(missing("EndInput"))?;
            WireMessage::EndInput {
                job_id: text(d.job_id(), "EndInput", "job_id")?,
                attempt: d.attempt(),
                task: d.task(),
            }
        }
        fb::Body::TaskFinished => {
            let d = frame.body_as_task_finished().ok_or(missing("TaskFinished"))?;
            WireMessage::TaskFinished {
                job_id: text(d.job_id(), "TaskFinished", "job_id")?,
                attempt: d.attempt(),
                task: d.task(),
                cancelled: d.cancelled(),
            }
        }
        fb::Body::AttemptEnded => {
            let d = frame.body_as_attempt_ended().ok_or(missing("AttemptEnded"))?;
            WireMessage::AttemptEnded {
                job_id: text(d.job_id(), "AttemptEnded", "job_id")?,
                attempt: d.attempt(),
            }
        }
        fb::Body::DataHello => {
            let d = frame.body_as_data_hello().ok_or(missing("DataHello"))?;
            WireMessage::DataHello {
                job_id: text(d.job_id(), "DataHello", "job_id")?,
                attempt: d.attempt(),
                worker_id: text(d.worker_id(), "DataHello", "worker_id")?,
            }
        }
        fb::Body::SubmitJob => {
            let d = frame.body_as_submit_job().ok_or(missing("SubmitJob"))?;
            WireMessage::SubmitJob {
                job_name: text(d.job_name(), "SubmitJob", "job_name")?,
                options: decode_options(d.options())?,
                // Absent in frames of builds before it existed: no id.
                submission: d.submission().unwrap_or_default().to_string(),
            }
        }
        fb::Body::JobSubmitted => {
            let d = frame.body_as_job_submitted().ok_or(missing("JobSubmitted"))?;
            WireMessage::JobSubmitted {
                job_id: text(d.job_id(), "JobSubmitted", "job_id")?,
            }
        }
        fb::Body::ListJobs => {
            frame.body_as_list_jobs().ok_or(missing("ListJobs"))?;
            WireMessage::ListJobs
        }
        fb::Body::JobList => {
            let d = frame.body_as_job_list().ok_or(missing("JobList"))?;
            let mut jobs = Vec::new();
            for e in d.jobs().iter().flat_map(|v| v.iter()) {
                jobs.push(WireJobEntry {
                    job_id: text(e.job_id(), "JobEntry", "job_id")?,
                    job_name: text(e.job_name(), "JobEntry", "job_name")?,
                    status: text(e.status(), "JobEntry", "status")?,
                    error: e.error().unwrap_or_default().to_string(),
                    progress: WireProgress {
                        in_per_second: e.in_per_second(),
                        out_per_second: e.out_per_second(),
                        watermark_lag_ms: e.watermark_lag_ms(),
                        checkpoints: e.checkpoints(),
                        last_checkpoint_ms: e.last_checkpoint_ms(),
                        restarts: e.restarts(),
                    },
                });
            }
            WireMessage::JobList { jobs }
        }
        fb::Body::MetricsReport => {
            let d = frame.body_as_metrics_report().ok_or(missing("MetricsReport"))?;
            let mut points = Vec::new();
            for p in d.points().iter().flat_map(|v| v.iter()) {
                let mut labels = Vec::new();
                for l in p.labels().iter().flat_map(|v| v.iter()) {
                    labels.push((
                        text(l.key(), "MetricLabel", "key")?,
                        text(l.value(), "MetricLabel", "value")?,
                    ));
                }
                let bounds: Vec<f64> = p.bounds().iter().flat_map(|v| v.iter()).collect();
                let counts: Vec<u64> = p.bucket_counts().iter().flat_map(|v| v.iter()).collect();
                if bounds.len() != counts.len() {
                    return Err(FrameError::Malformed(format!(
                        "MetricPoint '{}' has {} bucket bounds but {} counts",
                        p.name().unwrap_or_default(),
                        bounds.len(),
                        counts.len()
                    )));
                }
                if p.kind() > 3 {
                    return Err(FrameError::Malformed(format!(
                        "MetricPoint kind {} is not 0..=3",
                        p.kind()
                    )));
                }
                points.push(WireMetric {
                    name: text(p.name(), "MetricPoint", "name")?,
                    help: p.help().unwrap_or_default().to_string(),
                    kind: p.kind(),
                    labels,
                    value: p.value(),
                    count: p.count(),
                    buckets: bounds.into_iter().zip(counts).collect(),
                });
            }
            WireMessage::MetricsReport {
                worker_id: text(d.worker_id(), "MetricsReport", "worker_id")?,
                points,
            }
        }
        fb::Body::CancelJob => {
            let d = frame.body_as_cancel_job().ok_or(missing("CancelJob"))?;
            WireMessage::CancelJob {
                job_id: text(d.job_id(), "CancelJob", "job_id")?,
            }
        }
        fb::Body::JobCancelled => {
            let d = frame.body_as_job_cancelled().ok_or(missing("JobCancelled"))?;
            WireMessage::JobCancelled {
                job_id: text(d.job_id(), "JobCancelled", "job_id")?,
            }
        }
        fb::Body::Rejected => {
            let d = frame.body_as_rejected().ok_or(missing("Rejected"))?;
            WireMessage::Rejected {
                reason: text(d.reason(), "Rejected", "reason")?,
                kind: d.kind(),
            }
        }
        fb::Body::TriggerSavepoint => {
            let d = frame.body_as_trigger_savepoint().ok_or(missing("TriggerSavepoint"))?;
            WireMessage::TriggerSavepoint {
                job_id: text(d.job_id(), "TriggerSavepoint", "job_id")?,
                target_dir: text(d.target_dir(), "TriggerSavepoint", "target_dir")?,
                stop: d.stop(),
                drain: d.drain(),
            }
        }
        fb::Body::SavepointDone => {
            let d = frame.body_as_savepoint_done().ok_or(missing("SavepointDone"))?;
            WireMessage::SavepointDone {
                path: text(d.path(), "SavepointDone", "path")?,
                checkpoint_id: d.checkpoint_id(),
            }
        }
        other => return Err(FrameError::UnknownType(other.0)),
    })
}
