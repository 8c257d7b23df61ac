//! The network shuffle in one process: a [`TransportFactory`] whose exchanges cross a real
//! TCP connection on 127.0.0.1, encoded, framed and credit-controlled as between workers. For
//! tests and benchmarks of the data plane without a cluster.

use std::collections::BTreeSet;

use sluice_state::blob::BoxFuture;
use sluice_transport::net::{ConnectionConfig, TcpLoopbackTransport};
use sluice_transport::{Transport, TransportError};

use crate::partition::PartitionKind;
use crate::runtime::transport::{AttemptWiring, TransportFactory};

/// Every channel that is not a forward edge crosses a loopback TCP connection; forward edges
/// (chains across a parallelism change are not forward) stay in process.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopbackShuffle;

impl TransportFactory for LoopbackShuffle {
    fn connect<'a>(&'a self, w: AttemptWiring<'a>) -> BoxFuture<'a, Result<Box<dyn Transport>, TransportError>> {
        Box::pin(async move {
            let crossing: BTreeSet<u32> = (0..w.graph.edges.len())
                .filter(|&e| w.graph.edges[e].kind() != PartitionKind::Forward)
                .map(|e| e as u32)
                .collect();
            let net = ConnectionConfig {
                credits_per_channel: w.channel_capacity as u32,
                queue_per_channel: w.channel_capacity,
                frames_per_pass: 64,
                ..ConnectionConfig::default()
            };
            let t = TcpLoopbackTransport::connect(
                w.channel_capacity,
                net,
                w.attempt,
                move |id| crossing.contains(&id.edge),
                w.log.clone(),
            )
            .await?;
            Ok(Box::new(t) as Box<dyn Transport>)
        })
    }
}
