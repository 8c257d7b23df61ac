//! The outgoing edges of a task: routers that batch records per target, and the channels.

use sluice_transport::{OutputChannel, Payload, StreamMessage, TransportError};

use std::sync::Arc;

use crate::codec::BatchCodec;
use crate::operator::AnyBatch;
use crate::partition::{ErasedRouter, ReadyBatch};

pub(crate) struct EdgeOutput {
    pub(crate) router: Box<dyn ErasedRouter>,
    pub(crate) channels: Vec<OutputChannel>,
    pub(crate) codec: Arc<dyn BatchCodec>,
}

pub(crate) struct Outputs {
    pub(crate) edges: Vec<EdgeOutput>,
    ready: Vec<ReadyBatch>,
    buffered: bool,
}

impl Outputs {
    pub(crate) fn new(edges: Vec<EdgeOutput>) -> Self {
        Outputs {
            edges,
            ready: Vec::new(),
            buffered: false,
        }
    }

    async fn send_ready(
        ready: &mut Vec<ReadyBatch>,
        channels: &mut [OutputChannel],
        codec: &dyn BatchCodec,
    ) -> Result<(), TransportError> {
        for (t, b) in ready.drain(..) {
            let ch = &mut channels[t];
            // Batches stay typed in process and are encoded only to cross the network.
            let payload = if ch.is_remote() {
                Payload::Encoded(codec.encode(&b).map_err(TransportError::Frame)?)
            } else {
                Payload::Local(b)
            };
            ch.send(StreamMessage::Data(payload)).await?;
        }
        Ok(())
    }

    /// Routes a batch leaving the chain to every outgoing edge.
    pub(crate) async fn emit(&mut self, batch: AnyBatch) -> Result<(), TransportError> {
        let n = self.edges.len();
        if n == 0 {
            return Ok(());
        }
        for i in 0..n - 1 {
            let copy = self.edges[i].router.clone_batch(&batch);
            self.edges[i].router.push(copy, &mut self.ready);
            let e = &mut self.edges[i];
            Self::send_ready(&mut self.ready, &mut e.channels, e.codec.as_ref()).await?;
        }
        self.edges[n - 1].router.push(batch, &mut self.ready);
        let e = &mut self.edges[n - 1];
        Self::send_ready(&mut self.ready, &mut e.channels, e.codec.as_ref()).await?;
        self.buffered = true;
        Ok(())
    }

    pub(crate) async fn emit_all(&mut self, batches: Vec<AnyBatch>) -> Result<(), TransportError> {
        for b in batches {
            self.emit(b).await?;
        }
        Ok(())
    }

    /// Sends every partly filled batch.
    pub(crate) async fn flush(&mut self) -> Result<(), TransportError> {
        if !self.buffered {
            return Ok(());
        }
        for e in &mut self.edges {
            e.router.flush(&mut self.ready);
            Self::send_ready(&mut self.ready, &mut e.channels, e.codec.as_ref()).await?;
        }
        self.buffered = false;
        Ok(())
    }

    /// Sends a progress message on every channel, after the data buffered before it.
    pub(crate) async fn broadcast(&mut self, msg: impl Fn() -> StreamMessage) -> Result<(), TransportError> {
        self.flush().await?;
        for e in &mut self.edges {
            for ch in &mut e.channels {
                ch.send(msg()).await?;
            }
        }
        Ok(())
    }
}
