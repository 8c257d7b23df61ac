//! The frame decoder never trusts its input: every message round-trips, and random,
//! truncated, oversized, wrong-version and mistyped frames are refused with an error — never a
//! panic and never an allocation beyond the frame limit.

use bytes::Bytes;
use proptest::prelude::*;
use sluice_transport::wire::{
    decode_frame, encode_frame, read_frame, FrameError, WireJobEntry, WireMessage, WireMetric, WireOption, WirePeer,
    WireProgress, MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use sluice_transport::ChannelId;

fn channel() -> impl Strategy<Value = ChannelId> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(edge, from, to)| ChannelId { edge, from, to })
}

fn data_plane() -> impl Strategy<Value = WireMessage> {
    let s = || "[a-z0-9:._-]{0,24}";
    prop_oneof![
        (
            channel(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..512)
        )
            .prop_map(|(channel, attempt, seq, records, p)| WireMessage::Data {
                channel,
                attempt,
                seq,
                records,
                payload: Bytes::from(p)
            }),
        (channel(), any::<u32>(), any::<i64>()).prop_map(|(channel, attempt, timestamp_ms)| WireMessage::Watermark {
            channel,
            attempt,
            timestamp_ms
        }),
        (channel(), any::<u32>(), any::<bool>()).prop_map(|(channel, attempt, idle)| WireMessage::Status {
            channel,
            attempt,
            idle
        }),
        (channel(), any::<u32>(), any::<u64>(), any::<i64>()).prop_map(
            |(channel, attempt, checkpoint_id, timestamp_ms)| {
                WireMessage::Barrier {
                    channel,
                    attempt,
                    checkpoint_id,
                    timestamp_ms,
                }
            }
        ),
        (channel(), any::<u32>()).prop_map(|(channel, attempt)| WireMessage::EndOfPartition { channel, attempt }),
        (channel(), any::<u32>(), any::<u32>()).prop_map(|(channel, attempt, credits)| WireMessage::Credit {
            channel,
            attempt,
            credits
        }),
        (s(), s(), any::<u32>(), s()).prop_map(|(worker_id, data_address, slots, build)| WireMessage::Register {
            worker_id,
            data_address,
            slots,
            build
        }),
        (s(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
            |(worker_id, heartbeat_interval_ms, heartbeat_timeout_ms, epoch)| WireMessage::RegisterAck {
                worker_id,
                heartbeat_interval_ms,
                heartbeat_timeout_ms,
                epoch,
            }
        ),
        s().prop_map(|worker_id| WireMessage::Heartbeat { worker_id }),
    ]
}

fn message() -> impl Strategy<Value = WireMessage> {
    prop_oneof![data_plane(), control_plane(), client()]
}

fn opts() -> impl Strategy<Value = Vec<WireOption>> {
    proptest::collection::vec(("[a-z-]{0,12}", "[a-z0-9/._-]{0,24}"), 0..5)
        .prop_map(|v| v.into_iter().map(|(key, value)| WireOption { key, value }).collect())
}

fn control_plane() -> impl Strategy<Value = WireMessage> {
    let s = || "[a-z0-9:._-]{0,24}";
    prop_oneof![
        (
            s(),
            any::<u32>(),
            s(),
            opts(),
            proptest::collection::vec(s(), 0..8),
            proptest::collection::vec((s(), s()), 0..4),
            s(),
            any::<u64>(),
            s(),
            opts(),
            s()
        )
            .prop_map(
                |(
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
                )| {
                    WireMessage::DeployTask {
                        job_id,
                        attempt,
                        job_name,
                        options,
                        placement,
                        peers: peers
                            .into_iter()
                            .map(|(worker_id, data_address)| WirePeer {
                                worker_id,
                                data_address,
                            })
                            .collect(),
                        checkpoint_store,
                        restore_checkpoint,
                        restore_savepoint,
                        uid_mapping,
                        state_backend,
                    }
                }
            ),
        (s(), any::<u32>(), any::<bool>()).prop_map(|(job_id, attempt, drain)| WireMessage::CancelTask {
            job_id,
            attempt,
            drain
        }),
        (s(), any::<u32>(), any::<u64>(), any::<i64>(), any::<u32>()).prop_map(
            |(job_id, attempt, checkpoint_id, timestamp_ms, task)| {
                WireMessage::TriggerCheckpoint {
                    job_id,
                    attempt,
                    checkpoint_id,
                    timestamp_ms,
                    task,
                }
            }
        ),
        (
            s(),
            any::<u32>(),
            any::<u64>(),
            any::<u32>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<u64>()
        )
            .prop_map(
                |(job_id, attempt, checkpoint_id, task, st, alignment_ms)| WireMessage::AckCheckpoint {
                    job_id,
                    attempt,
                    checkpoint_id,
                    task,
                    state: Bytes::from(st),
                    alignment_ms
                }
            ),
        (s(), any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(job_id, attempt, checkpoint_id, task)| {
            WireMessage::NotifyCheckpointComplete {
                job_id,
                attempt,
                checkpoint_id,
                task,
            }
        }),
        (s(), any::<u32>(), any::<u32>(), s(), any::<bool>()).prop_map(|(job_id, attempt, task, reason, permanent)| {
            WireMessage::TaskFailed {
                job_id,
                attempt,
                task,
                reason,
                permanent,
            }
        }),
        (s(), any::<u32>(), any::<u64>(), any::<u32>(), s()).prop_map(
            |(job_id, attempt, checkpoint_id, task, reason)| {
                WireMessage::DeclineCheckpoint {
                    job_id,
                    attempt,
                    checkpoint_id,
                    task,
                    reason,
                }
            }
        ),
        (s(), any::<u32>(), any::<u32>()).prop_map(|(job_id, attempt, task)| WireMessage::InputFinished {
            job_id,
            attempt,
            task
        }),
        (s(), any::<u32>(), any::<u32>()).prop_map(|(job_id, attempt, task)| WireMessage::EndInput {
            job_id,
            attempt,
            task
        }),
        (s(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(|(job_id, attempt, task, cancelled)| {
            WireMessage::TaskFinished {
                job_id,
                attempt,
                task,
                cancelled,
            }
        }),
        (s(), any::<u32>()).prop_map(|(job_id, attempt)| WireMessage::AttemptEnded { job_id, attempt }),
        (s(), any::<u32>(), s()).prop_map(|(job_id, attempt, worker_id)| WireMessage::DataHello {
            job_id,
            attempt,
            worker_id
        }),
        (s(), proptest::collection::vec(metric(), 0..6))
            .prop_map(|(worker_id, points)| WireMessage::MetricsReport { worker_id, points }),
    ]
}

fn metric() -> impl Strategy<Value = WireMetric> {
    let s = || "[a-z0-9_ ]{0,16}";
    (
        s(),
        s(),
        0u8..4,
        proptest::collection::vec((s(), s()), 0..4),
        -1e12f64..1e12,
        any::<u64>(),
        proptest::collection::vec((0f64..1e9, any::<u64>()), 0..5),
    )
        .prop_map(|(name, help, kind, labels, value, count, buckets)| WireMetric {
            name,
            help,
            kind,
            labels,
            value,
            count,
            buckets,
        })
}

fn client() -> impl Strategy<Value = WireMessage> {
    let s = || "[a-z0-9:._-]{0,24}";
    prop_oneof![
        (s(), opts(), s()).prop_map(|(job_name, options, submission)| WireMessage::SubmitJob {
            job_name,
            options,
            submission
        }),
        s().prop_map(|job_id| WireMessage::JobSubmitted { job_id }),
        Just(WireMessage::ListJobs),
        proptest::collection::vec((s(), s(), s(), s(), any::<(u64, u64, i64, u64, u64, u64)>()), 0..6).prop_map(|v| {
            WireMessage::JobList {
                jobs: v
                    .into_iter()
                    .map(|(job_id, job_name, status, error, p)| WireJobEntry {
                        job_id,
                        job_name,
                        status,
                        error,
                        progress: WireProgress {
                            in_per_second: p.0,
                            out_per_second: p.1,
                            watermark_lag_ms: p.2,
                            checkpoints: p.3,
                            last_checkpoint_ms: p.4,
                            restarts: p.5,
                        },
                    })
                    .collect(),
            }
        }),
        s().prop_map(|job_id| WireMessage::CancelJob { job_id }),
        s().prop_map(|job_id| WireMessage::JobCancelled { job_id }),
        (s(), any::<u8>()).prop_map(|(reason, kind)| WireMessage::Rejected { reason, kind }),
        (s(), s(), any::<bool>(), any::<bool>()).prop_map(|(job_id, target_dir, stop, drain)| {
            WireMessage::TriggerSavepoint {
                job_id,
                target_dir,
                stop,
                drain,
            }
        }),
        (s(), any::<u64>()).prop_map(|(path, checkpoint_id)| WireMessage::SavepointDone { path, checkpoint_id }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(msg in message()) {
        let bytes = encode_frame(&msg).unwrap();
        let (decoded, used) = decode_frame(&bytes).unwrap().expect("a whole frame");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, msg);
    }

    #[test]
    fn every_prefix_of_a_frame_asks_for_more_bytes(msg in message(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_frame(&msg).unwrap();
        let n = cut.index(bytes.len());
        prop_assert_eq!(decode_frame(&bytes[..n]), Ok(None));
    }

    #[test]
    fn random_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut framed = (body.len() as u32).to_le_bytes().to_vec();
        framed.extend_from_slice(&body);
        // Whatever it is, it decodes to a message or an error, never a panic.
        let _ = decode_frame(&framed);
        let _ = decode_frame(&body);
    }

    #[test]
    fn flipped_bytes_in_a_valid_frame_never_panic(msg in message(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut bytes = encode_frame(&msg).unwrap().to_vec();
        let i = 4 + at.index(bytes.len() - 4);
        bytes[i] ^= 1 << bit;
        let _ = decode_frame(&bytes);
    }
}

#[test]
fn oversized_length_is_refused_before_reading_the_body() {
    let len = (MAX_FRAME_BYTES + 1) as u32;
    let mut b = len.to_le_bytes().to_vec();
    b.extend_from_slice(&[0; 16]);
    assert_eq!(
        decode_frame(&b),
        Err(FrameError::TooLarge {
            len: MAX_FRAME_BYTES + 1,
            max: MAX_FRAME_BYTES
        })
    );
    let huge = u32::MAX.to_le_bytes();
    assert!(matches!(decode_frame(&huge), Err(FrameError::TooLarge { .. })));
}

#[test]
fn wrong_version_is_refused_by_name() {
    let mut bytes = encode_frame(&WireMessage::Heartbeat { worker_id: "w".into() })
        .unwrap()
        .to_vec();
    // Flip each little-endian PROTOCOL_VERSION in turn until decoding reports version 9: one
    // of them is the version field of the root table.
    let v = PROTOCOL_VERSION as u8;
    let mut found = false;
    for i in 4..bytes.len() - 1 {
        if bytes[i] == v && bytes[i + 1] == 0 {
            bytes[i] = 9;
            if let Err(FrameError::UnsupportedVersion { got: 9, supported }) = decode_frame(&bytes) {
                assert_eq!(supported, PROTOCOL_VERSION);
                found = true;
                break;
            }
            bytes[i] = v;
        }
    }
    assert!(found, "a frame of version 9 is refused as such");
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let mut b = 8u32.to_le_bytes().to_vec();
    b.extend_from_slice(&[0xff; 8]);
    assert!(
        matches!(decode_frame(&b), Err(FrameError::Malformed(_))),
        "{:?}",
        decode_frame(&b)
    );
}

#[test]
fn stream_reader_reports_truncation_and_clean_close() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let frame = encode_frame(&WireMessage::Heartbeat { worker_id: "w1".into() }).unwrap();
        let mut whole: &[u8] = &frame;
        assert_eq!(
            read_frame(&mut whole).await.unwrap(),
            Some(WireMessage::Heartbeat { worker_id: "w1".into() })
        );
        assert_eq!(read_frame(&mut whole).await.unwrap(), None, "closed between frames");
        let mut cut: &[u8] = &frame[..frame.len() - 3];
        assert!(matches!(read_frame(&mut cut).await, Err(FrameError::Truncated { .. })));
        let big = ((MAX_FRAME_BYTES + 10) as u32).to_le_bytes();
        let mut hostile: &[u8] = &big;
        assert!(matches!(
            read_frame(&mut hostile).await,
            Err(FrameError::TooLarge { .. })
        ));
    });
}
