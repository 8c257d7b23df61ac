//! The data plane of one deployed attempt on one worker: channels between local tasks stay
//! in process; channels to or from another worker go over one TCP connection per peer and
//! direction (the sender dials), multiplexed and credit-controlled.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_transport::net::{Connection, ConnectionConfig, Role};
use sluice_transport::tls::{ClusterTls, Identity, NetStream};
use sluice_transport::wire::{encode_frame, read_frame_limited, write_frame, WireMessage};
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

/// How many jobs' discarded attempts a worker remembers (to close late connections for
/// them); the oldest are forgotten beyond it.
const REMEMBERED_JOBS: usize = 4096;

/// Data connections accepted by a worker, waiting for the deployment that reads them. One
/// that no deployment takes within the claim timeout is closed: a peer (or anyone) greeting
/// for an attempt that never runs here must not hold a descriptor forever.
pub(crate) struct InboundConnections {
    waiting: Mutex<BTreeMap<InboundKey, (u64, Connection)>>,
    /// The most connections waiting at once; more are closed on arrival.
    limit: usize,
    arrived: Notify,
    /// Numbers the arrivals, so a claim timeout removes only the connection it was set for.
    next: std::sync::atomic::AtomicU64,
    /// Per job, the highest attempt discarded here: a connection for it that arrives later
    /// (a peer dialing late) is closed at once instead of waiting. Bounded: the jobs in
    /// insertion order, the oldest forgotten first.
    discarded: Mutex<(BTreeMap<String, u32>, std::collections::VecDeque<String>)>,
}

impl InboundConnections {
    /// Waiting room for at most `limit` connections.
    pub(crate) fn with_limit(limit: usize) -> Self {
        InboundConnections {
            waiting: Mutex::default(),
            limit,
            arrived: Notify::new(),
            next: Default::default(),
            discarded: Mutex::default(),
        }
    }

    /// A peer connected for `key`; it waits for its deployment at most `claim_timeout`.
    /// Returns false (and closes it) if it is for an attempt discarded here, or the waiting
    /// room is full.
    pub(crate) fn arrive(self: &Arc<Self>, key: InboundKey, conn: Connection, claim_timeout: Duration) -> bool {
        let stale = self.discarded.locked().0.get(&key.0).is_some_and(|&a| key.1 <= a);
        if stale {
            conn.close();
            return false;
        }
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut waiting = self.waiting.locked();
            if waiting.len() >= self.limit && !waiting.contains_key(&key) {
                drop(waiting);
                conn.close();
                return false;
            }
            if let Some((_, old)) = waiting.insert(key.clone(), (n, conn)) {
                old.close();
            }
        }
        self.arrived.notify_waiters();
        let this = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(claim_timeout).await;
            let Some(this) = this.upgrade() else { return };
            let mut waiting = this.waiting.locked();
            if waiting.get(&key).is_some_and(|(m, _)| *m == n) {
                if let Some((_, c)) = waiting.remove(&key) {
                    c.close();
                }
            }
        });
        true
    }

    /// Waits until the connection for `key` arrives, at most `timeout`.
    pub(crate) async fn take(&self, key: &InboundKey, timeout: Duration) -> Option<Connection> {
        let deadline = Instant::now() + timeout;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            if let Some((_, c)) = self.waiting.locked().remove(key) {
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
            let (highest, order) = &mut *d;
            match highest.get_mut(job) {
                Some(a) => *a = (*a).max(attempt),
                None => {
                    highest.insert(job.to_string(), attempt);
                    order.push_back(job.to_string());
                    if order.len() > REMEMBERED_JOBS {
                        if let Some(oldest) = order.pop_front() {
                            highest.remove(&oldest);
                        }
                    }
                }
            }
        }
        self.waiting.locked().retain(|(j, a, _), (_, c)| {
            let stale = j == job && *a <= attempt;
            if stale {
                c.close();
            }
            !stale
        });
    }

    /// Connections waiting to be taken (for tests and metrics).
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.locked().len()
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

    fn worker(&self, vertex: usize, subtask: u32) -> Option<&str> {
        let task = *self.task_of.get(&(vertex, subtask))?;
        self.placement.get(task).map(String::as_str)
    }

    /// The worker that sends on channel `id`; `None` for a channel the job does not have (ids
    /// also come from peers' frames).
    fn producer(&self, id: ChannelId) -> Option<&str> {
        self.worker(self.edges.get(id.edge as usize)?.0, id.from)
    }

    /// The worker that receives on channel `id`; `None` for a channel the job does not have.
    fn consumer(&self, id: ChannelId) -> Option<&str> {
        self.worker(self.edges.get(id.edge as usize)?.1, id.to)
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
                    let both = self.producer(id).zip(self.consumer(id));
                    let (p, c) = both.expect("channels enumerated from the graph exist");
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
    map: Arc<ChannelMap>,
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
    pub(crate) inbound: &'a Arc<InboundConnections>,
    /// How long to keep trying to reach a peer, and to wait for peers to reach us.
    pub(crate) connect_timeout: Duration,
    /// A data frame that has begun must be complete within this.
    pub(crate) frame_timeout: Duration,
    /// Mutual TLS between workers, if configured: each side proves its worker id.
    pub(crate) tls: Option<&'a ClusterTls>,
    pub(crate) log: &'a slog::Logger,
}

impl ClusterTransport {
    /// Dials every peer this worker sends to and waits for every peer it receives from.
    pub(crate) async fn connect(s: ExchangeSetup<'_>) -> Result<Self, String> {
        let map = Arc::new(ChannelMap::new(s.graph, s.specs, s.placement.clone()));
        let (out_peers, in_peers) = map.peers(s.graph, s.me);
        // Built first and filled as connections open: if a later one fails, dropping it
        // closes the ones already open.
        let mut t = ClusterTransport {
            me: s.me.to_string(),
            attempt: s.attempt,
            map: map.clone(),
            local: LocalTransport::try_new(s.channel_capacity).map_err(|e| e.to_string())?,
            outbound: BTreeMap::new(),
            inbound: BTreeMap::new(),
        };
        for peer in &out_peers {
            let conn = dial_peer(&s, &map, peer).await?;
            t.outbound.insert(peer.clone(), conn);
        }
        for peer in &in_peers {
            let key = (s.job_id.to_string(), s.attempt, peer.clone());
            let conn = s.inbound.take(&key, s.connect_timeout).await.ok_or_else(|| {
                format!(
                    "worker {peer} did not open its data connection within {} ms",
                    s.connect_timeout.as_millis()
                )
            })?;
            t.inbound.insert(peer.clone(), conn);
        }
        Ok(t)
    }

    /// Closes every connection (a cancelled or failed attempt).
    pub(crate) fn close_all(&self) {
        for c in self.outbound.values().chain(self.inbound.values()) {
            c.close();
        }
    }

    /// Every local task has finished: closes the connections this worker receives on (nothing
    /// more will come), and the ones it sends on once everything queued on them is written
    /// (the peer's tasks still need it).
    pub(crate) fn close_finished(&self) {
        for c in self.inbound.values() {
            c.close();
        }
        for c in self.outbound.values() {
            c.close_when_sent();
        }
    }
}

/// Dials `peer`, greets it, and starts the connection that sends it this worker's channels.
async fn dial_peer(s: &ExchangeSetup<'_>, map: &Arc<ChannelMap>, peer: &str) -> Result<Connection, String> {
    let addr = s
        .addresses
        .get(peer)
        .ok_or_else(|| format!("no data address for worker {peer} in the deployment"))?;
    let mut stream = dial_secured(s, peer, addr).await?;
    let hello = WireMessage::DataHello {
        job_id: s.job_id.to_string(),
        attempt: s.attempt,
        worker_id: s.me.to_string(),
    };
    let hello = encode_frame(&hello).map_err(|e| format!("greeting worker {peer}: {e}"))?;
    write_frame(&mut stream, &hello)
        .await
        .map_err(|e| format!("greeting worker {peer} at {addr}: {e}"))?;
    let log = s.log.new(slog::o!("peer" => peer.to_string(), "direction" => "out"));
    // This connection carries exactly the channels from here to that peer.
    let (carried, me, to) = (map.clone(), s.me.to_string(), peer.to_string());
    let role = Role::Sender(Arc::new(move |id| {
        carried.producer(id) == Some(me.as_str()) && carried.consumer(id) == Some(to.as_str())
    }));
    Ok(Connection::start(
        stream,
        connection_config(s.channel_capacity, s.frame_timeout),
        role,
        log,
    ))
}

/// Dials `peer` at `addr`, with TLS if configured (the peer must prove it is the worker the
/// deployment placed there); a failed handshake is retried until the connect timeout, as a
/// failed dial is (the peer may be busy refusing a flood, or restarting).
async fn dial_secured(s: &ExchangeSetup<'_>, peer: &str, addr: &str) -> Result<NetStream, String> {
    let Some(tls) = s.tls else {
        return Ok(NetStream::Plain(dial(addr, s.connect_timeout).await?));
    };
    let deadline = Instant::now() + s.connect_timeout;
    let expected = Identity::Worker(peer.to_string());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let tcp = dial(addr, left).await?;
        match tls
            .connect(tcp, &expected, addr, left.max(Duration::from_millis(1)))
            .await
        {
            Ok(stream) => return Ok(stream),
            Err(e) if Instant::now() + Duration::from_millis(100) >= deadline => {
                return Err(format!("connecting to worker {peer}: {e}"));
            }
            Err(e) => {
                slog::debug!(s.log, "TLS handshake with a peer failed; retrying"; "peer" => peer, "error" => %e);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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

/// The most a data connection's greeting may hold (a job id, an attempt and a worker id).
const MAX_GREETING: usize = 4 << 10;

/// How long a new data connection has to greet.
const GREETING_WAIT: Duration = Duration::from_secs(10);

/// The limits of a data connection whose channels hold `capacity` batches.
pub(crate) fn connection_config(capacity: usize, frame_timeout: Duration) -> ConnectionConfig {
    ConnectionConfig {
        credits_per_channel: capacity as u32,
        queue_per_channel: capacity,
        frames_per_pass: 64,
        frame_timeout,
    }
}

/// Accepts data connections: each starts with a `DataHello` naming its job, attempt and
/// sender; the connection then waits in `inbound` for its deployment.
/// Who a new data connection is from, and how it must introduce itself.
pub(crate) struct Arrival<'a> {
    /// The peer's address.
    pub(crate) peer: &'a str,
    /// Released once the peer has greeted.
    pub(crate) pending: super::acceptor::Pending,
    /// Mutual TLS, if configured.
    pub(crate) tls: Option<&'a ClusterTls>,
    /// How long a greeted connection waits for its deployment.
    pub(crate) claim_timeout: Duration,
}

pub(crate) async fn accept_data(
    tcp: TcpStream,
    arrival: Arrival<'_>,
    inbound: &Arc<InboundConnections>,
    net: ConnectionConfig,
    log: slog::Logger,
) {
    let _ = tcp.set_nodelay(true);
    let (peer, claim_timeout) = (arrival.peer, arrival.claim_timeout);
    let (mut stream, who) = match arrival.tls {
        None => (NetStream::Plain(tcp), None),
        Some(tls) => match tls.accept(tcp, peer, GREETING_WAIT).await {
            Ok((stream, who)) => (stream, Some(who)),
            Err(e) => {
                slog::warn!(log, "refused a data connection: TLS handshake failed"; "reason" => %e);
                return;
            }
        },
    };
    let greeting = read_frame_limited(&mut stream, MAX_GREETING, Some(GREETING_WAIT));
    let hello = match tokio::time::timeout(GREETING_WAIT, greeting).await {
        Ok(Ok(Some(WireMessage::DataHello {
            job_id,
            attempt,
            worker_id,
        }))) => (job_id, attempt, worker_id),
        Ok(Ok(Some(other))) => {
            slog::warn!(log, "closing data connection: expected a DataHello"; "frame" => super::framed::frame_kind(&other));
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
    drop(arrival.pending);
    if let Some(who) = who.filter(|w| *w != Identity::Worker(hello.2.clone())) {
        slog::warn!(log, "refused a data connection: its greeting names another worker than its certificate";
            "greeting_worker" => &hello.2, "certificate" => who.to_string());
        return;
    }
    let conn_log = log
        .new(slog::o!("peer" => hello.2.clone(), "direction" => "in", "job" => hello.0.clone(), "attempt" => hello.1));
    let conn = Connection::start(stream, net, Role::Receiver, conn_log);
    if !inbound.arrive(hello.clone(), conn, claim_timeout) {
        slog::info!(log, "closed a data connection: its attempt was discarded here, or too many wait";
            "job" => &hello.0, "attempt" => hello.1, "worker" => &hello.2);
    }
}

impl Drop for ClusterTransport {
    /// Nothing of an ended attempt stays open: received connections close now, sent ones
    /// once their queues are written (a no-op for connections already closed).
    fn drop(&mut self) {
        for c in self.inbound.values() {
            c.close();
        }
        for c in self.outbound.values() {
            c.close_when_sent();
        }
    }
}

impl Transport for ClusterTransport {
    fn output(&self, id: ChannelId) -> Result<OutputChannel, TransportError> {
        let consumer = self
            .map
            .consumer(id)
            .expect("the runtime opens only channels of its graph");
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
        let producer = self
            .map
            .producer(id)
            .expect("the runtime opens only channels of its graph");
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
