//! A control connection: frames in order on one TCP stream, sent from a queue so that any
//! task can send without owning the socket.

use sluice_transport::wire::{encode_frame, write_frame, WireMessage};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::mpsc;

/// Queues frames for a connection's writer task; cheap to clone. Sending never blocks: control
/// frames are few and small.
#[derive(Debug, Clone)]
pub(crate) struct FrameSender {
    tx: mpsc::UnboundedSender<WireMessage>,
}

impl FrameSender {
    /// A sender whose frames go to the returned receiver instead of a socket (unit tests of
    /// the coordinator's job masters play the workers with it).
    #[cfg(test)]
    pub(crate) fn channel() -> (Self, mpsc::UnboundedReceiver<WireMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (FrameSender { tx }, rx)
    }

    /// Queues `msg`; false if the connection's writer is gone.
    pub(crate) fn send(&self, msg: WireMessage) -> bool {
        self.tx.send(msg).is_ok()
    }
}

/// Splits `stream` into a queued sender and the read half. The writer ends (and shuts the
/// write side down) when every sender is dropped or a write fails.
pub(crate) fn framed<S>(stream: S) -> (FrameSender, ReadHalf<S>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (r, mut w) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::unbounded_channel::<WireMessage>();
    tokio::spawn(async move {
        while let Some(msg) = rx.recv().await {
            if write_frame(&mut w, &encode_frame(&msg)).await.is_err() {
                return;
            }
        }
        let _ = w.shutdown().await;
    });
    (FrameSender { tx }, r)
}
