use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::net::{RemoteInput, RemoteOutput};
use crate::{ChannelId, StreamMessage, TransportError};

enum OutKind {
    Local(mpsc::Sender<StreamMessage>),
    Remote(RemoteOutput),
}

/// The sending half of a channel. Sending waits while the channel is full (in process) or
/// out of credit (over the network), which is how backpressure reaches the producer.
pub struct OutputChannel {
    id: ChannelId,
    kind: OutKind,
}

impl std::fmt::Debug for OutputChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OutputChannel({}, {})",
            self.id,
            if self.is_remote() { "remote" } else { "local" }
        )
    }
}

impl OutputChannel {
    pub(crate) fn new(id: ChannelId, tx: mpsc::Sender<StreamMessage>) -> Self {
        OutputChannel {
            id,
            kind: OutKind::Local(tx),
        }
    }

    /// A channel whose consumer is across the network.
    pub fn remote(id: ChannelId, out: RemoteOutput) -> Self {
        OutputChannel {
            id,
            kind: OutKind::Remote(out),
        }
    }

    /// The channel this half belongs to.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Whether data must be encoded (`Payload::Encoded`) before it is sent.
    pub fn is_remote(&self) -> bool {
        matches!(self.kind, OutKind::Remote(_))
    }

    /// Sends one message, waiting for room.
    pub async fn send(&mut self, msg: StreamMessage) -> Result<(), TransportError> {
        match &mut self.kind {
            OutKind::Local(tx) => tx.send(msg).await.map_err(|_| TransportError::Closed(self.id)),
            OutKind::Remote(r) => r.send(msg).await,
        }
    }

    /// How many messages sit in the local queue right now (for buffer-usage metrics).
    pub fn queued(&self) -> usize {
        match &self.kind {
            OutKind::Local(tx) => tx.max_capacity() - tx.capacity(),
            OutKind::Remote(r) => r.queued(),
        }
    }

    /// Reads the share of this channel's queue in use (0..=1) later, from another task,
    /// without keeping the channel open; `None` once it is closed.
    pub fn usage_probe(&self) -> Box<dyn Fn() -> Option<f64> + Send + Sync + 'static> {
        match &self.kind {
            OutKind::Local(tx) => {
                let weak = tx.downgrade();
                Box::new(move || {
                    let tx = weak.upgrade()?;
                    let cap = tx.max_capacity().max(1);
                    Some((cap - tx.capacity()) as f64 / cap as f64)
                })
            }
            OutKind::Remote(r) => Box::new(r.usage_probe()),
        }
    }

    /// The most messages the local queue holds.
    pub fn capacity(&self) -> usize {
        match &self.kind {
            OutKind::Local(tx) => tx.max_capacity(),
            OutKind::Remote(r) => r.capacity(),
        }
    }
}

enum InKind {
    Local(mpsc::Receiver<StreamMessage>),
    Remote(RemoteInput),
}

/// The receiving half of a channel.
pub struct InputChannel {
    id: ChannelId,
    kind: InKind,
}

impl std::fmt::Debug for InputChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "InputChannel({})", self.id)
    }
}

impl InputChannel {
    pub(crate) fn new(id: ChannelId, rx: mpsc::Receiver<StreamMessage>) -> Self {
        InputChannel {
            id,
            kind: InKind::Local(rx),
        }
    }

    /// A channel whose producer is across the network.
    pub fn remote(id: ChannelId, input: RemoteInput) -> Self {
        InputChannel {
            id,
            kind: InKind::Remote(input),
        }
    }

    /// The channel this half belongs to.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Waits for the next message; `None` once the sender is gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<StreamMessage> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (for receiving from many channels in one task).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<StreamMessage>> {
        match &mut self.kind {
            InKind::Local(rx) => rx.poll_recv(cx),
            InKind::Remote(r) => r.poll_recv(cx),
        }
    }

    /// Takes the next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<StreamMessage>, TransportError> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.poll_recv(&mut cx) {
            Poll::Ready(Some(m)) => Ok(Some(m)),
            Poll::Ready(None) => Err(TransportError::Closed(self.id)),
            Poll::Pending => Ok(None),
        }
    }
}
