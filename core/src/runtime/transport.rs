//! Where an embedded job's channels come from: the runtime asks a [`TransportFactory`] for the
//! transport of each attempt and knows nothing else of how channels are carried. The default
//! keeps every channel in process; `sluice_core::cluster::LoopbackShuffle` sends exchanges
//! over a real TCP connection (tests and benchmarks of the network shuffle), and a cluster's
//! workers wire theirs in `cluster/` from the placement of the attempt.

use sluice_state::blob::BoxFuture;
use sluice_transport::{LocalTransport, Transport, TransportError};

use crate::graph::JobGraph;

/// What a factory is told about the attempt it wires.
#[derive(Clone, Copy)]
pub struct AttemptWiring<'a> {
    /// The job's graph (its edges decide which channels exist).
    pub graph: &'a JobGraph,
    /// The execution attempt (network frames carry it, so stale ones are dropped).
    pub attempt: u32,
    /// Batches each channel holds before its producer waits.
    pub channel_capacity: usize,
    /// Where the transport logs.
    pub log: &'a slog::Logger,
}

impl std::fmt::Debug for AttemptWiring<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptWiring")
            .field("job", &self.graph.name)
            .field("attempt", &self.attempt)
            .field("channel_capacity", &self.channel_capacity)
            .finish()
    }
}

/// Makes the transport of each execution attempt of an embedded job.
pub trait TransportFactory: Send + Sync + std::fmt::Debug {
    /// The transport of one attempt; dropping it closes whatever it opened.
    fn connect<'a>(&'a self, wiring: AttemptWiring<'a>) -> BoxFuture<'a, Result<Box<dyn Transport>, TransportError>>;
}

/// Every channel in process (the default).
#[derive(Debug, Clone, Copy, Default)]
pub struct InProcess;

impl TransportFactory for InProcess {
    fn connect<'a>(&'a self, wiring: AttemptWiring<'a>) -> BoxFuture<'a, Result<Box<dyn Transport>, TransportError>> {
        Box::pin(async move { Ok(Box::new(LocalTransport::try_new(wiring.channel_capacity)?) as Box<dyn Transport>) })
    }
}
