use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::{ChannelId, StreamMessage, TransportError};

/// The sending half of a channel. Sending waits while the channel is full, which is how
/// backpressure reaches the producer.
#[derive(Debug)]
pub struct OutputChannel {
    id: ChannelId,
    tx: mpsc::Sender<StreamMessage>,
}

impl OutputChannel {
    pub(crate) fn new(id: ChannelId, tx: mpsc::Sender<StreamMessage>) -> Self {
        OutputChannel { id, tx }
    }

    /// The channel this half belongs to.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Sends one message, waiting for room.
    pub async fn send(&self, msg: StreamMessage) -> Result<(), TransportError> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| TransportError::Closed(self.id))
    }

    /// How many messages sit in the queue right now (for buffer-usage metrics).
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }

    /// The most messages the queue holds.
    pub fn capacity(&self) -> usize {
        self.tx.max_capacity()
    }
}

/// The receiving half of a channel.
#[derive(Debug)]
pub struct InputChannel {
    id: ChannelId,
    rx: mpsc::Receiver<StreamMessage>,
}

impl InputChannel {
    pub(crate) fn new(id: ChannelId, rx: mpsc::Receiver<StreamMessage>) -> Self {
        InputChannel { id, rx }
    }

    /// The channel this half belongs to.
    pub fn id(&self) -> ChannelId {
        self.id
    }

    /// Waits for the next message; `None` once the sender is gone and the queue is drained.
    pub async fn recv(&mut self) -> Option<StreamMessage> {
        self.rx.recv().await
    }

    /// Polls for the next message (for receiving from many channels in one task).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<StreamMessage>> {
        self.rx.poll_recv(cx)
    }

    /// Takes the next message if one is queued, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<StreamMessage>, TransportError> {
        match self.rx.try_recv() {
            Ok(m) => Ok(Some(m)),
            Err(mpsc::error::TryRecvError::Empty) => Ok(None),
            Err(mpsc::error::TryRecvError::Disconnected) => Err(TransportError::Closed(self.id)),
        }
    }
}
