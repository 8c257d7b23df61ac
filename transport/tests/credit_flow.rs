//! Credit-based flow control over a real loopback TCP connection: a consumer that stops reading
//! backpressures only its own channel, with bounded memory, while another channel on the same
//! connection keeps flowing; frames of a stale attempt are dropped; a malformed frame closes
//! the connection with a reason.

use std::time::Duration;

use bytes::Bytes;
use std::sync::Arc;

use sluice_transport::net::{Connection, ConnectionConfig, Role};
use sluice_transport::wire::{encode_frame, WireMessage};
use sluice_transport::{ChannelId, Payload, StreamMessage};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

fn log() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn pair(config: ConnectionConfig) -> (Connection, Connection) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (
        Connection::start(client.unwrap(), config, Role::Sender(Arc::new(|_| true)), log()),
        Connection::start(server.unwrap().0, config, Role::Receiver, log()),
    )
}

fn data(i: u32) -> StreamMessage {
    StreamMessage::Data(Payload::Encoded(Bytes::from(i.to_le_bytes().to_vec())))
}

fn value(m: &StreamMessage) -> u32 {
    match m {
        StreamMessage::Data(Payload::Encoded(b)) => u32::from_le_bytes(b[..4].try_into().unwrap()),
        other => panic!("expected data, got {other:?}"),
    }
}

const A: ChannelId = ChannelId {
    edge: 0,
    from: 0,
    to: 0,
};
const B: ChannelId = ChannelId {
    edge: 0,
    from: 0,
    to: 1,
};

#[test]
fn slow_consumer_blocks_only_its_channel_with_bounded_memory() {
    rt().block_on(async {
        let config = ConnectionConfig {
            credits_per_channel: 4,
            queue_per_channel: 3,
            frames_per_pass: 16,
            ..ConnectionConfig::default()
        };
        let (sender, receiver) = pair(config).await;
        let mut in_a = receiver.open_input(A, 1);
        let mut in_b = receiver.open_input(B, 1);
        let mut out_a = sender.open_output(A, 1);
        let mut out_b = sender.open_output(B, 1);
        // Channel A: the consumer does not read. The producer gets credits + queue slots in,
        // then waits.
        let mut sent_a = 0u32;
        while let Ok(r) = tokio::time::timeout(Duration::from_millis(200), out_a.send(data(sent_a))).await {
            r.unwrap();
            sent_a += 1;
            assert!(sent_a <= 100, "no backpressure on channel A");
        }
        assert_eq!(sent_a, 4 + 3, "credits at the receiver plus the sender's queue");
        assert!(sender.queued(A) <= 3, "sender-side memory is bounded");
        // Channel B on the same connection flows freely meanwhile.
        let producer = tokio::spawn(async move {
            for i in 0..2000u32 {
                out_b.send(data(i)).await.unwrap();
                if i % 100 == 0 {
                    out_b.send(StreamMessage::Watermark(i as i64)).await.unwrap();
                }
            }
            out_b.send(StreamMessage::EndOfPartition).await.unwrap();
        });
        let mut next = 0u32;
        let mut last_wm = -1i64;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), in_b.recv())
                .await
                .expect("B keeps flowing")
            {
                Some(StreamMessage::EndOfPartition) => break,
                Some(StreamMessage::Watermark(w)) => {
                    assert_eq!(w, (next - 1) as i64, "watermark stays in place behind its data");
                    last_wm = w;
                }
                Some(m) => {
                    assert_eq!(value(&m), next, "in order");
                    next += 1;
                }
                None => panic!("connection closed: {:?}", receiver.closed()),
            }
        }
        producer.await.unwrap();
        assert_eq!(next, 2000);
        assert_eq!(last_wm, 1900);
        // Now A's consumer reads: everything arrives in order and the producer is unblocked.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 20 {
                got.push(value(&in_a.recv().await.unwrap()));
            }
            got
        });
        for i in sent_a..20 {
            out_a.send(data(i)).await.unwrap();
        }
        let got = tokio::time::timeout(Duration::from_secs(10), reader)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    });
}

#[test]
fn frames_of_a_stale_attempt_are_dropped() {
    rt().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (raw, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut raw = raw.unwrap();
        let receiver = Connection::start(server.unwrap().0, ConnectionConfig::default(), Role::Receiver, log());
        let mut input = receiver.open_input(A, 2);
        let frame = |attempt: u32, v: u32| {
            encode_frame(&WireMessage::Data {
                channel: A,
                attempt,
                seq: 1,
                records: 1,
                payload: Bytes::from(v.to_le_bytes().to_vec()),
            })
            .unwrap()
        };
        raw.write_all(&frame(1, 111)).await.unwrap();
        raw.write_all(&frame(2, 222)).await.unwrap();
        raw.flush().await.unwrap();
        let m = tokio::time::timeout(Duration::from_secs(5), input.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(value(&m), 222, "the attempt-1 frame was dropped");
        assert!(receiver.closed().is_none());
    });
}

#[test]
fn malformed_frame_closes_the_connection_with_a_reason() {
    rt().block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (raw, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut raw = raw.unwrap();
        let receiver = Connection::start(server.unwrap().0, ConnectionConfig::default(), Role::Receiver, log());
        let mut input = receiver.open_input(A, 1);
        raw.write_all(&[8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])
            .await
            .unwrap();
        raw.flush().await.unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), input.recv())
            .await
            .unwrap();
        assert!(end.is_none(), "the channel ends with the connection");
        let why = receiver.closed().expect("closed");
        assert!(why.contains("bad frame from peer: malformed frame"), "{why}");
        // An oversized length prefix too.
        let (raw2, server2) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let mut raw2 = raw2.unwrap();
        let receiver2 = Connection::start(server2.unwrap().0, ConnectionConfig::default(), Role::Receiver, log());
        raw2.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
        raw2.flush().await.unwrap();
        for _ in 0..100 {
            if receiver2.closed().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            receiver2.closed().unwrap_or_default().contains("exceeds the limit"),
            "{:?}",
            receiver2.closed()
        );
    });
}

#[test]
fn typed_batches_are_refused_on_a_network_channel() {
    rt().block_on(async {
        let (sender, _receiver) = pair(ConnectionConfig::default()).await;
        let mut out = sender.open_output(A, 1);
        let err = out
            .send(StreamMessage::Data(Payload::Local(Box::new(5u8))))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("must be encoded"), "{err}");
    });
}

/// Regression: in a cluster the receiver often opens its end first, so its first credit can
/// arrive before the sender opens the channel. That credit must count for the attempt it
/// names (it was once dropped for any attempt but 0, and the channel never opened).
#[test]
fn a_credit_that_arrives_before_the_sender_opens_the_channel_is_kept() {
    rt().block_on(async {
        let config = ConnectionConfig {
            credits_per_channel: 2,
            queue_per_channel: 2,
            frames_per_pass: 16,
            ..ConnectionConfig::default()
        };
        let (sender, receiver) = pair(config).await;
        let mut input = receiver.open_input(A, 3);
        // Let the credit cross the connection before the sender side opens the channel.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut out = sender.open_output(A, 3);
        let producer = tokio::spawn(async move {
            for i in 0..10 {
                tokio::time::timeout(Duration::from_secs(5), out.send(data(i)))
                    .await
                    .expect("the channel opened")
                    .unwrap();
            }
        });
        for i in 0..10 {
            let m = tokio::time::timeout(Duration::from_secs(5), input.recv())
                .await
                .expect("data arrives")
                .unwrap();
            assert_eq!(value(&m), i);
        }
        producer.await.unwrap();
    });
}
