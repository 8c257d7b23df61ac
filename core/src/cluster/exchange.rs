//! The data plane of one deployed attempt on one worker: channels between local tasks stay
//! in process; channels to or from another worker go over one TCP connection per peer and
//! direction (the sender dials), multiplexed and credit-controlled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use sluice_transport::net::{Connection, ConnectionConfig};
use sluice_transport::wire::{encode_frame, read_frame, write_frame, WireMessage};
use sluice_transport::{ChannelId, InputChannel, LocalTransport, OutputChannel, Transport, TransportError};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::graph::JobGraph;
use crate::partition::PartitionKind;
use crate::runtime::engine::TaskSpec;
use crate::sync::LockExt;

/// Identifies an inbound data connection: job, attempt, and the worker that dialed.
pub(crate) type InboundKey = (String, u32, String);

/// Data connections accepted by a worker, waiting for the deployment that reads them.
#[derive(Default)]
pub(crate) struct InboundConnections {
    waiting: Mutex<BTreeMap<InboundKey, Connection>>,
    arrived: Notify,
    /// Per job, the highest attempt discarded here: a connection for it that arrives later
    /// (a peer dialing late) is closed at once instead of waiting forever.
    discarded: Mutex<BTreeMap<String, u32>>,
}

impl InboundConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<InboundKey, Connection>> {
        self.waiting.locked()
    }

    /// A peer connected for `key`.
    pub(crate) fn arrive(&self, key: InboundKey, conn: Connection) {
        let stale = self.discarded.locked().get(&key.0).is_some_and(|&a| key.1 <= a);
        if stale {
            conn.close();
            return;
        }
        if let Some(old) = self.lock().insert(key, conn) {
            old.close();
        }
        self.arrived.notify_waiters();
    }

    /// Waits until the connection for `key` arrives, at most `timeout`.
    pub(crate) async fn take(&self, key: &InboundKey, timeout: Duration) -> Option<Connection> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some(c) = self.lock().remove(key) {
                return Some(c);
            }
            tokio::select! {
                biased;
                _ = &mut arrived => {}
                _ = tokio::time::sleep_until(deadline) => return None,
            }
        }
    }

    /// Closes connections of `job` for attempts up to `attempt` nobody took (a cancelled or
    /// superseded attempt).
    pub(crate) fn discard(&self, job: &str, attempt: u32) {
        {
            let mut d = self.discarded.locked();
            let a = d.entry(job.to_string()).or_insert(attempt);
            *a = (*a).max(attempt);
        }
        self.lock().retain(|(j, a, _), c| {
            let stale = j == job && *a <= attempt;
            if stale {
                c.close();
            }
            !stale
        });
    }
}

/// Which worker runs the producer and the consumer of every channel.
struct ChannelMap {
    /// `(source vertex, target vertex, forward)` of each edge.
    edges: Vec<(usize, usize, bool)>,
    /// The task number of `(vertex, subtask)`.
    task_of: BTreeMap<(usize, u32), usize>,
    placement: Vec<String>,
}

impl ChannelMap {
    fn new(graph: &JobGraph, specs: &[TaskSpec], placement: Vec<String>) -> Self {
        let mut task_of = BTreeMap::new();
        for (i, s) in specs.iter().enumerate() {
            for &v in &s.chain {
                task_of.insert((v, s.subtask), i);
            }
        }
        let edges = graph
            .edges
            .iter()
            .map(|e| (e.source, e.target, e.kind() == PartitionKind::Forward))
            .collect();
        ChannelMap {
            edges,
            task_of,
            placement,
        }
    }

    fn worker(&self, vertex: usize, subtask: u32) -> &str {
        let task = self.task_of[&(vertex, subtask)];
        &self.placement[task]
    }

    fn producer(&self, id: ChannelId) -> &str {
        self.worker(self.edges[id.edge as usize].0, id.from)
    }

    fn consumer(&self, id: ChannelId) -> &str {
        self.worker(self.edges[id.edge as usize].1, id.to)
    }

    /// Peers this worker sends to and receives from.
    fn peers(&self, graph: &JobGraph, me: &str) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut out, mut inp) = (BTreeSet::new(), BTreeSet::new());
        for (e, &(src, dst, forward)) in self.edges.iter().enumerate() {
            let up = graph.vertices[src].parallelism;
            let down = graph.vertices[dst].parallelism;
            for from in 0..up {
                let targets: Vec<u32> = if forward { vec![from] } else { (0..down).collect() };
                for to in targets {
                    let id = ChannelId {
                        edge: e as u32,
                        from,
                        to,
                    };
                    let (p, c) = (self.producer(id), self.consumer(id));
                    if p == me && c != me {
                        out.insert(c.to_string());
                    }
                    if c == me && p != me {
                        inp.insert(p.to_string());
                    }
                }
            }
        }
        (out, inp)
    }
}

/// The transport of one attempt on one worker.
pub(crate) struct ClusterTransport {
    me: String,
    attempt: u32,
    map: ChannelMap,
    local: LocalTransport,
    outbound: BTreeMap<String, Connection>,
    inbound: BTreeMap<String, Connection>,
}

/// What a worker needs to set up the data plane of an attempt.
pub(crate) struct ExchangeSetup<'a> {
    pub(crate) me: &'a str,
    pub(crate) job_id: &'a str,
    pub(crate) attempt: u32,
    pub(crate) graph: &'a JobGraph,
    pub(crate) specs: &'a [TaskSpec],
    pub(crate) placement: Vec<String>,
    pub(crate) addresses: &'a BTreeMap<String, String>,
    pub(crate) channel_capacity: usize,
    pub(crate) inbound: &'a InboundConnections,
    /// How long to keep trying to reach a peer, and to wait for peers to reach us.
    pub(crate) connect_timeout: Duration,
    pub(crate) log: &'a slog::Logger,
}

impl ClusterTransport {
    /// Dials every peer this worker sends to and waits for every peer it receives from.
    pub(crate) async fn connect(s: ExchangeSetup<'_>) -> Result<Self, String> {
        let map = ChannelMap::new(s.graph, s.specs, s.placement);
        let (out_peers, in_peers) = map.peers(s.graph, s.me);
        let net = ConnectionConfig {
            credits_per_channel: s.channel_capacity as u32,
            queue_per_channel: s.channel_capacity,
            frames_per_pass: 64,
        };
        let mut outbound = BTreeMap::new();
        for peer in &out_peers {
            let addr = s
                .addresses
                .get(peer)
                .ok_or_else(|| format!("no data address for worker {peer} in the deployment"))?;
            let stream = dial(addr, s.connect_timeout).await?;
            let mut stream = stream;
            let hello = WireMessage::DataHello {
                job_id: s.job_id.to_string(),
                attempt: s.attempt,
                worker_id: s.me.to_string(),
            };
            write_frame(&mut stream, &encode_frame(&hello))
                .await
                .map_err(|e| format!("greeting worker {peer} at {addr}: {e}"))?;
            let log = s.log.new(slog::o!("peer" => peer.clone(), "direction" => "out"));
            outbound.insert(peer.clone(), Connection::start(stream, net, log));
        }
        let mut inbound = BTreeMap::new();
        for peer in &in_peers {
            let key = (s.job_id.to_string(), s.attempt, peer.clone());
            let conn = s.inbound.take(&key, s.connect_timeout).await.ok_or_else(|| {
                format!(
                    "worker {peer} did not open its data connection within {} ms",
                    s.connect_timeout.as_millis()
                )
            })?;
            inbound.insert(peer.clone(), conn);
        }
        Ok(ClusterTransport {
            me: s.me.to_string(),
            attempt: s.attempt,
            map,
            local: LocalTransport::try_new(s.channel_capacity).map_err(|e| e.to_string())?,
            outbound,
            inbound,
        })
    }

    /// Closes every connection (a cancelled or failed attempt).
    pub(crate) fn close_all(&self) {
        for c in self.outbound.values().chain(self.inbound.values()) {
            c.close();
        }
    }

    /// Closes the connections this worker receives on (every local task has finished, so
    /// nothing more will come); the peers close theirs in turn.
    pub(crate) fn close_inbound(&self) {
        for c in self.inbound.values() {
            c.close();
        }
    }
}

async fn dial(addr: &str, timeout: Duration) -> Result<TcpStream, String> {
    let deadline = Instant::now() + timeout;
    let mut backoff = Duration::from_millis(20);
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) if Instant::now() + backoff >= deadline => {
                return Err(format!("cannot reach peer worker at {addr}: {e}"));
            }
            Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Accepts data connections: each starts with a `DataHello` naming its job, attempt and
/// sender; the connection then waits in `inbound` for its deployment.
pub(crate) async fn accept_data(
    mut stream: TcpStream,
    inbound: &InboundConnections,
    channel_capacity: usize,
    log: slog::Logger,
) {
    let _ = stream.set_nodelay(true);
    let hello = match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut stream)).await {
        Ok(Ok(Some(WireMessage::DataHello {
            job_id,
            attempt,
            worker_id,
        }))) => (job_id, attempt, worker_id),
        Ok(Ok(Some(other))) => {
            slog::warn!(log, "closing data connection: expected a DataHello"; "frame" => super::coordinator::frame_kind(&other));
            return;
        }
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            slog::warn!(log, "closing data connection: bad frame"; "reason" => %e);
            return;
        }
        Err(_) => {
            slog::info!(log, "closing data connection: no greeting within 10 s");
            return;
        }
    };
    let net = ConnectionConfig {
        credits_per_channel: channel_capacity as u32,
        queue_per_channel: channel_capacity,
        frames_per_pass: 64,
    };
    let conn_log = log
        .new(slog::o!("peer" => hello.2.clone(), "direction" => "in", "job" => hello.0.clone(), "attempt" => hello.1));
    inbound.arrive(hello, Connection::start(stream, net, conn_log));
}

impl Transport for ClusterTransport {
    fn output(&self, id: ChannelId) -> Result<OutputChannel, TransportError> {
        let consumer = self.map.consumer(id);
        if consumer == self.me {
            return self.local.output(id);
        }
        let conn = self
            .outbound
            .get(consumer)
            .expect("a connection was dialed to every worker this one sends to");
        Ok(OutputChannel::remote(id, conn.open_output(id, self.attempt)))
    }

    fn input(&self, id: ChannelId) -> Result<InputChannel, TransportError> {
        let producer = self.map.producer(id);
        if producer == self.me {
            return self.local.input(id);
        }
        let conn = self
            .inbound
            .get(producer)
            .expect("a connection arrived from every worker this one receives from");
        Ok(InputChannel::remote(id, conn.open_input(id, self.attempt)))
    }
}
