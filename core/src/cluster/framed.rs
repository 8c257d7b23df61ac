//! A control connection: frames in order on one TCP stream, sent from a queue so that any
//! task can send without owning the socket.
//!
//! Frames are encoded when they are queued, so one too large to send is refused to the sender
//! (and logged) rather than discovered by the writer. The queue is bounded in bytes: a peer
//! that stops reading is cut off instead of making the queue grow for as long as it is
//! connected.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_transport::wire::{encode_frame, write_frame, WireMessage};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes a control connection may have queued and not yet written; beyond it the peer is
/// taken to have stopped reading and the connection closes.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Queues frames for a connection's writer task; cheap to clone. Sending never blocks.
#[derive(Debug, Clone)]
pub(crate) struct FrameSender {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
    /// Set when the queue overflowed: the writer stops, and sending fails from then on.
    cut: Arc<AtomicBool>,
    log: slog::Logger,
}

impl FrameSender {
    fn new(log: slog::Logger) -> (Self, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = FrameSender {
            tx,
            queued: Arc::default(),
            cut: Arc::default(),
            log,
        };
        (sender, rx)
    }

    /// A sender whose frames go to the returned receiver instead of a socket (unit tests of
    /// the coordinator's job masters play the workers with it).
    #[cfg(test)]
    pub(crate) fn channel() -> (Self, mpsc::UnboundedReceiver<WireMessage>) {
        let (sender, mut bytes) = FrameSender::new(slog::Logger::root(slog::Discard, slog::o!()));
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = sender.queued.clone();
        tokio::spawn(async move {
            while let Some(b) = bytes.recv().await {
                queued.fetch_sub(b.len(), Ordering::SeqCst);
                let (msg, _) = sluice_transport::wire::decode_frame(&b)
                    .expect("encoded by the sender")
                    .expect("a whole frame");
                if tx.send(msg).is_err() {
                    return;
                }
            }
        });
        (sender, rx)
    }

    /// Queues `msg`; false if the connection is gone, or the frame could not be sent (too
    /// large for a frame, or the peer stopped reading: both logged).
    pub(crate) fn send(&self, msg: WireMessage) -> bool {
        if self.cut.load(Ordering::SeqCst) {
            return false;
        }
        let bytes = match encode_frame(&msg) {
            Ok(b) => b,
            Err(e) => {
                slog::error!(self.log, "a frame could not be sent"; "frame" => frame_kind(&msg), "error" => %e);
                return false;
            }
        };
        let queued = self.queued.fetch_add(bytes.len(), Ordering::SeqCst) + bytes.len();
        if queued > MAX_QUEUED_BYTES {
            self.cut.store(true, Ordering::SeqCst);
            slog::warn!(self.log, "closing a connection whose peer does not read: its queue passed the limit";
                "queued_bytes" => queued, "limit" => MAX_QUEUED_BYTES);
            return false;
        }
        self.tx.send(bytes).is_ok()
    }
}

/// How long writing one frame may take before the peer is taken to have stopped reading.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Splits `stream` into a queued sender and the read half, and returns the writer task. The
/// writer ends (and shuts the write side down) when every sender is dropped, a write fails or
/// takes longer than [`WRITE_TIMEOUT`], or the queue overflowed; whoever accounts for the
/// connection awaits it, so an answer still being written counts as an open connection.
pub(crate) fn framed<S>(stream: S, log: slog::Logger) -> (FrameSender, ReadHalf<S>, JoinHandle<()>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, mut w) = tokio::io::split(stream);
    let (sender, mut rx) = FrameSender::new(log.clone());
    let (queued, cut) = (sender.queued.clone(), sender.cut.clone());
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if cut.load(Ordering::SeqCst) {
                return;
            }
            match tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut w, &bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    cut.store(true, Ordering::SeqCst);
                    slog::warn!(log, "closing a connection whose peer does not read: a frame took too long to write";
                        "bytes" => bytes.len(), "timeout_ms" => WRITE_TIMEOUT.as_millis() as u64);
                    return;
                }
            }
            queued.fetch_sub(bytes.len(), Ordering::SeqCst);
        }
        let _ = w.shutdown().await;
    });
    (sender, r, writer)
}

/// A frame's kind, for logs.
pub(crate) fn frame_kind(msg: &WireMessage) -> String {
    let dbg = format!("{msg:?}");
    dbg.split([' ', '{', '(']).next().unwrap_or_default().to_string()
}
