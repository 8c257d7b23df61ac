//! The outgoing edges of a task: routers that batch records per target, and the channels.

use sluice_transport::{OutputChannel, Payload, StreamMessage, TransportError};

use std::sync::Arc;

use crate::codec::BatchCodec;
use crate::metrics::task::TaskMetrics;
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
    metrics: TaskMetrics,
}

/// Sends one message, counting the time it waited for room as backpressure.
async fn send_timed(ch: &mut OutputChannel, msg: StreamMessage, metrics: &TaskMetrics) -> Result<(), TransportError> {
    let start = tokio::time::Instant::now();
    ch.send(msg).await?;
    // A send that found room takes a fraction of a microsecond: counting it too keeps this
    // free of a threshold, at a negligible overstatement.
    metrics.backpressured_ns.mark(start.elapsed().as_nanos() as u64);
    Ok(())
}

impl Outputs {
    pub(crate) fn new(edges: Vec<EdgeOutput>, metrics: TaskMetrics) -> Self {
        Outputs {
            edges,
            ready: Vec::new(),
            buffered: false,
            metrics,
        }
    }

    async fn send_ready(
        ready: &mut Vec<ReadyBatch>,
        channels: &mut [OutputChannel],
        codec: &dyn BatchCodec,
        metrics: &TaskMetrics,
    ) -> Result<(), TransportError> {
        for (t, b) in ready.drain(..) {
            let ch = &mut channels[t];
            // Batches stay typed in process and are encoded only to cross the network.
            let payload = if ch.is_remote() {
                let bytes = codec.encode(&b).map_err(TransportError::Frame)?;
                metrics.bytes_out.mark(bytes.len() as u64);
                Payload::Encoded(bytes)
            } else {
                Payload::Local(b)
            };
            send_timed(ch, StreamMessage::Data(payload), metrics).await?;
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
            Self::send_ready(&mut self.ready, &mut e.channels, e.codec.as_ref(), &self.metrics).await?;
        }
        self.edges[n - 1].router.push(batch, &mut self.ready);
        let e = &mut self.edges[n - 1];
        Self::send_ready(&mut self.ready, &mut e.channels, e.codec.as_ref(), &self.metrics).await?;
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
            Self::send_ready(&mut self.ready, &mut e.channels, e.codec.as_ref(), &self.metrics).await?;
        }
        self.buffered = false;
        Ok(())
    }

    /// Sends a progress message on every channel, after the data buffered before it.
    pub(crate) async fn broadcast(&mut self, msg: impl Fn() -> StreamMessage) -> Result<(), TransportError> {
        self.flush().await?;
        for e in &mut self.edges {
            for ch in &mut e.channels {
                send_timed(ch, msg(), &self.metrics).await?;
            }
        }
        Ok(())
    }
}
