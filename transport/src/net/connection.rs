//! One multiplexed, credit-controlled connection.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, Notify};

use crate::wire::{encode_frame, read_frame_limited, write_frame, FrameError, WireMessage, MAX_FRAME_BYTES};
use crate::{Barrier, ChannelId, ChannelStatus, Payload, StreamMessage, TransportError};

/// Limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Data batches a receiver buffers per channel (the credits it grants).
    pub credits_per_channel: u32,
    /// Messages a sender queues per channel before `send` waits.
    pub queue_per_channel: usize,
    /// Frames written per pass before the writer flushes and looks again (fairness).
    pub frames_per_pass: usize,
    /// A frame that has begun must be complete within this (a peer that sends half a frame
    /// and stops is cut off instead of holding its buffer).
    pub frame_timeout: std::time::Duration,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            credits_per_channel: 8,
            queue_per_channel: 8,
            frames_per_pass: 64,
            frame_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Which way data flows on a connection: one connection per pair of peers and direction.
/// The peer of a sender sends only credits, and only for the channels the sender carries;
/// the peer of a receiver sends only data. Anything else closes the connection (a credit for
/// a channel nobody carries would otherwise make an entry that is never removed).
#[derive(Clone)]
pub enum Role {
    /// This side sends data on the channels for which the function is true.
    Sender(Arc<dyn Fn(ChannelId) -> bool + Send + Sync>),
    /// This side receives data (and grants credits).
    Receiver,
}

impl std::fmt::Debug for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Sender(_) => "Sender",
            Role::Receiver => "Receiver",
        })
    }
}

#[derive(Default)]
struct OutChannel {
    attempt: u32,
    queue: VecDeque<WireMessage>,
    credits: u32,
    /// The receiver opened the channel (sent its first credit): sending may start.
    opened: bool,
    /// This side opened the channel (`open_output`); before that, credits may arrive early.
    bound: bool,
    space: Arc<Notify>,
}

struct InChannel {
    attempt: u32,
    /// Unbounded because progress messages need no credit; data batches are bounded by the
    /// credits granted, checked with `in_flight`.
    tx: mpsc::UnboundedSender<StreamMessage>,
    /// Data batches received and not yet taken by the consumer.
    in_flight: Arc<AtomicU32>,
}

#[derive(Default)]
struct Shared {
    out: BTreeMap<ChannelId, OutChannel>,
    inbound: BTreeMap<ChannelId, InChannel>,
    /// Credit frames waiting to go (they need no credit themselves).
    control: VecDeque<WireMessage>,
    /// Why the connection closed, once it has.
    closed: Option<String>,
    /// Where the writer resumes its round-robin over channels.
    cursor: Option<ChannelId>,
    /// Close once everything queued is written ([`Connection::close_when_sent`]).
    closing: bool,
}

struct Inner {
    config: ConnectionConfig,
    role: Role,
    shared: Mutex<Shared>,
    writer_wake: Notify,
    /// Wakes the reader when the connection closes locally (a stored permit if the reader is
    /// not waiting at that moment).
    reader_stop: Notify,
    log: slog::Logger,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // Every critical section is a single table update: a panic elsewhere leaves it whole,
        // so poison is not fatal (as `sluice_core::sync::LockExt` argues).
        self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn close(&self, why: String) {
        let mut s = self.lock();
        if s.closed.is_none() {
            slog::info!(self.log, "connection closed"; "reason" => &why);
            s.closed = Some(why);
        }
        // Dropping the inbound senders ends every input channel: consumers see the failure.
        s.inbound.clear();
        for c in s.out.values() {
            c.space.notify_waiters();
        }
        drop(s);
        self.writer_wake.notify_one();
        // The reader stops too: its half of the socket must go for the socket to close.
        self.reader_stop.notify_one();
    }
}

/// A connection to one peer, carrying any number of channels in both directions.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Runs the connection over `stream` (reader and writer tasks on the current runtime).
    pub fn start<S>(stream: S, config: ConnectionConfig, role: Role, log: slog::Logger) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        assert!(
            config.credits_per_channel >= 1 && config.queue_per_channel >= 1,
            "connection limits must be at least 1"
        );
        let inner = Arc::new(Inner {
            config,
            role,
            shared: Mutex::new(Shared::default()),
            writer_wake: Notify::new(),
            reader_stop: Notify::new(),
            log,
        });
        let (r, w) = tokio::io::split(stream);
        tokio::spawn(read_loop(inner.clone(), r));
        tokio::spawn(write_loop(inner.clone(), w));
        Connection { inner }
    }

    /// Why the connection closed, if it has.
    pub fn closed(&self) -> Option<String> {
        self.inner.lock().closed.clone()
    }

    /// Closes the connection; its channels end.
    pub fn close(&self) {
        self.inner.close("closed locally".into());
    }

    /// Closes the connection once everything queued on it is written (the sender's tasks
    /// have ended, and the peer still needs their last frames); at once if nothing is queued.
    pub fn close_when_sent(&self) {
        self.inner.lock().closing = true;
        self.inner.writer_wake.notify_one();
    }

    /// The sending half of `channel` for execution attempt `attempt`.
    pub fn open_output(&self, channel: ChannelId, attempt: u32) -> RemoteOutput {
        let space = {
            let mut s = self.inner.lock();
            let c = s.out.entry(channel).or_default();
            if c.attempt != attempt {
                // Whatever was there belongs to another attempt.
                c.queue.clear();
                c.credits = 0;
                c.opened = false;
                c.attempt = attempt;
            }
            c.bound = true;
            c.space.clone()
        };
        RemoteOutput {
            inner: self.inner.clone(),
            channel,
            attempt,
            seq: 0,
            space,
        }
    }

    /// The receiving half of `channel` for attempt `attempt`: grants the peer its first
    /// credits. Frames of any other attempt on this channel are dropped.
    pub fn open_input(&self, channel: ChannelId, attempt: u32) -> RemoteInput {
        let credits = self.inner.config.credits_per_channel;
        let (tx, rx) = mpsc::unbounded_channel();
        let in_flight = Arc::new(AtomicU32::new(0));
        {
            let mut s = self.inner.lock();
            s.inbound.insert(
                channel,
                InChannel {
                    attempt,
                    tx,
                    in_flight: in_flight.clone(),
                },
            );
            s.control.push_back(WireMessage::Credit {
                channel,
                attempt,
                credits,
            });
        }
        self.inner.writer_wake.notify_one();
        RemoteInput {
            inner: self.inner.clone(),
            channel,
            attempt,
            rx,
            in_flight,
        }
    }

    /// Messages queued at this side for `channel` and not yet sent (for memory accounting).
    pub fn queued(&self, channel: ChannelId) -> usize {
        self.inner.lock().out.get(&channel).map_or(0, |c| c.queue.len())
    }
}

/// Sends on one channel of a [`Connection`].
pub struct RemoteOutput {
    inner: Arc<Inner>,
    channel: ChannelId,
    attempt: u32,
    seq: u64,
    space: Arc<Notify>,
}

impl std::fmt::Debug for RemoteOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteOutput({})", self.channel)
    }
}

impl RemoteOutput {
    /// Messages queued for this channel and not yet sent.
    pub fn queued(&self) -> usize {
        self.inner.lock().out.get(&self.channel).map_or(0, |c| c.queue.len())
    }

    /// The most messages queued before `send` waits.
    pub fn capacity(&self) -> usize {
        self.inner.config.queue_per_channel
    }

    /// Reads this channel's queue use (0..=1) later, without keeping the connection alive;
    /// `None` once the connection is gone.
    pub fn usage_probe(&self) -> impl Fn() -> Option<f64> + Send + Sync + 'static {
        let inner = Arc::downgrade(&self.inner);
        let channel = self.channel;
        move || {
            let inner = inner.upgrade()?;
            let cap = inner.config.queue_per_channel.max(1);
            let queued = inner.lock().out.get(&channel).map_or(0, |c| c.queue.len());
            Some(queued as f64 / cap as f64)
        }
    }

    fn wire_message(&mut self, msg: StreamMessage) -> Result<WireMessage, TransportError> {
        let (channel, attempt) = (self.channel, self.attempt);
        Ok(match msg {
            StreamMessage::Data(Payload::Encoded(payload)) => {
                self.seq += 1;
                WireMessage::Data {
                    channel,
                    attempt,
                    seq: self.seq,
                    records: 0,
                    payload,
                }
            }
            StreamMessage::Data(Payload::Local(_)) => return Err(TransportError::NotEncoded(channel)),
            StreamMessage::Watermark(t) => WireMessage::Watermark {
                channel,
                attempt,
                timestamp_ms: t,
            },
            StreamMessage::Status(s) => WireMessage::Status {
                channel,
                attempt,
                idle: s == ChannelStatus::Idle,
            },
            StreamMessage::Barrier(b) => WireMessage::Barrier {
                channel,
                attempt,
                checkpoint_id: b.checkpoint_id,
                timestamp_ms: b.timestamp_ms,
            },
            StreamMessage::EndOfPartition => WireMessage::EndOfPartition { channel, attempt },
        })
    }

    /// Queues one message, waiting while the channel's queue is full (backpressure).
    pub async fn send(&mut self, msg: StreamMessage) -> Result<(), TransportError> {
        if let StreamMessage::Data(Payload::Encoded(p)) = &msg {
            // The frame adds little to its payload; one this large could not be sent.
            if p.len() > MAX_FRAME_BYTES - 1024 {
                return Err(TransportError::Frame(format!(
                    "a batch of {} bytes on channel {} exceeds the frame limit of {MAX_FRAME_BYTES} bytes: lower the batch size",
                    p.len(),
                    self.channel
                )));
            }
        }
        let wire = self.wire_message(msg)?;
        let cap = self.inner.config.queue_per_channel;
        loop {
            let notified = self.space.notified();
            {
                let mut s = self.inner.lock();
                if s.closed.is_some() {
                    return Err(TransportError::Closed(self.channel));
                }
                let c = s.out.entry(self.channel).or_default();
                if c.queue.len() < cap {
                    c.queue.push_back(wire);
                    drop(s);
                    self.inner.writer_wake.notify_one();
                    return Ok(());
                }
            }
            notified.await;
        }
    }
}

/// Receives on one channel of a [`Connection`].
pub struct RemoteInput {
    inner: Arc<Inner>,
    channel: ChannelId,
    attempt: u32,
    rx: mpsc::UnboundedReceiver<StreamMessage>,
    in_flight: Arc<AtomicU32>,
}

impl std::fmt::Debug for RemoteInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteInput({})", self.channel)
    }
}

impl RemoteInput {
    /// The next message; `None` once the connection closed. Taking a data batch returns one
    /// credit to the sender.
    pub async fn recv(&mut self) -> Option<StreamMessage> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message (see [`RemoteInput::recv`]).
    pub fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<StreamMessage>> {
        let m = std::task::ready!(self.rx.poll_recv(cx));
        if let Some(StreamMessage::Data(_)) = &m {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.inner.lock().control.push_back(WireMessage::Credit {
                channel: self.channel,
                attempt: self.attempt,
                credits: 1,
            });
            self.inner.writer_wake.notify_one();
        }
        std::task::Poll::Ready(m)
    }
}

fn from_wire(m: WireMessage) -> Option<(ChannelId, u32, StreamMessage)> {
    Some(match m {
        WireMessage::Data {
            channel,
            attempt,
            payload,
            ..
        } => (channel, attempt, StreamMessage::Data(Payload::Encoded(payload))),
        WireMessage::Watermark {
            channel,
            attempt,
            timestamp_ms,
        } => (channel, attempt, StreamMessage::Watermark(timestamp_ms)),
        WireMessage::Status { channel, attempt, idle } => (
            channel,
            attempt,
            StreamMessage::Status(if idle {
                ChannelStatus::Idle
            } else {
                ChannelStatus::Active
            }),
        ),
        WireMessage::Barrier {
            channel,
            attempt,
            checkpoint_id,
            timestamp_ms,
        } => (
            channel,
            attempt,
            StreamMessage::Barrier(Barrier {
                checkpoint_id,
                timestamp_ms,
            }),
        ),
        WireMessage::EndOfPartition { channel, attempt } => (channel, attempt, StreamMessage::EndOfPartition),
        _ => return None,
    })
}

async fn read_loop<R: AsyncRead + Unpin>(inner: Arc<Inner>, mut r: R) {
    let why = loop {
        let read = read_frame_limited(&mut r, MAX_FRAME_BYTES, Some(inner.config.frame_timeout));
        let frame = tokio::select! {
            // Fixed polling order: tokio's random branch order is not seeded by the simulator.
            biased;
            // Closed here: stop reading, so the socket (both halves) goes.
            _ = inner.reader_stop.notified() => return,
            f = read => f,
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break "peer closed the connection".to_string(),
            Err(e) => break format!("bad frame from peer: {e}"),
        };
        let outcome = match frame {
            WireMessage::Credit {
                channel,
                attempt,
                credits,
            } => on_credit(&inner, channel, attempt, credits),
            other => on_data(&inner, other),
        };
        if let Err(why) = outcome {
            break why;
        }
    };
    inner.close(why);
}

/// A credit from the receiving peer; `Err` (closing the connection) if this side does not
/// send on that channel.
fn on_credit(inner: &Inner, channel: ChannelId, attempt: u32, credits: u32) -> Result<(), String> {
    match &inner.role {
        Role::Receiver => {
            return Err(format!(
                "a credit for channel {channel} arrived on a receiving connection"
            ))
        }
        Role::Sender(carries) if !carries(channel) => {
            return Err(format!(
                "a credit for channel {channel}, which this connection does not carry"
            ))
        }
        Role::Sender(_) => {}
    }
    let mut s = inner.lock();
    let c = s.out.entry(channel).or_default();
    if !c.bound && c.attempt != attempt {
        // The receiver opened the channel before this side did: keep the credit for the
        // attempt it names, `open_output` checks it.
        c.attempt = attempt;
        c.credits = 0;
    }
    if c.attempt == attempt {
        c.credits = c.credits.saturating_add(credits);
        c.opened = true;
    }
    drop(s);
    inner.writer_wake.notify_one();
    Ok(())
}

/// A data-plane frame from the sending peer, for the channel it names; frames of another
/// attempt, or for a channel not open here, are dropped.
fn on_data(inner: &Inner, frame: WireMessage) -> Result<(), String> {
    if matches!(inner.role, Role::Sender(_)) {
        return Err("a data frame arrived on a sending connection".to_string());
    }
    let Some((channel, attempt, msg)) = from_wire(frame) else {
        return Err("a control-plane frame arrived on a data connection".to_string());
    };
    let target = {
        let s = inner.lock();
        match s.inbound.get(&channel) {
            Some(c) if c.attempt == attempt => Some((c.tx.clone(), c.in_flight.clone())),
            // A frame of an earlier (or unknown) attempt: stale, dropped.
            _ => None,
        }
    };
    let Some((tx, in_flight)) = target else {
        slog::debug!(inner.log, "dropped a frame of a stale attempt"; "channel" => %channel, "attempt" => attempt);
        return Ok(());
    };
    if matches!(msg, StreamMessage::Data(_)) {
        // Data arrives only against credit; more in flight than granted means the peer
        // ignored its credit.
        if in_flight.fetch_add(1, Ordering::SeqCst) >= inner.config.credits_per_channel {
            return Err(format!("peer sent more than its credit on channel {channel}"));
        }
    }
    // The consumer may be gone (its task ended): the frame has nowhere to go.
    let _ = tx.send(msg);
    Ok(())
}

/// Takes what may be sent now, round-robin over channels from the cursor.
fn take_sendable(inner: &Inner) -> Option<Vec<WireMessage>> {
    let mut s = inner.lock();
    if s.closed.is_some() {
        return None;
    }
    let limit = inner.config.frames_per_pass;
    let mut out: Vec<WireMessage> = s.control.drain(..).collect();
    let keys: Vec<ChannelId> = s.out.keys().copied().collect();
    let start = s.cursor.and_then(|c| keys.iter().position(|k| *k > c)).unwrap_or(0);
    let mut last = None;
    for i in 0..keys.len() {
        if out.len() >= limit {
            break;
        }
        let k = keys[(start + i) % keys.len()];
        let c = s.out.get_mut(&k).expect("listed above");
        if !c.opened {
            continue;
        }
        let mut took = false;
        while out.len() < limit {
            let is_data = match c.queue.front() {
                Some(WireMessage::Data { .. }) => true,
                Some(_) => false,
                None => break,
            };
            if is_data {
                if c.credits == 0 {
                    break;
                }
                c.credits -= 1;
            }
            out.push(c.queue.pop_front().expect("front checked"));
            took = true;
        }
        if took {
            c.space.notify_waiters();
            last = Some(k);
        }
    }
    if last.is_some() {
        s.cursor = last;
    }
    Some(out)
}

/// Whether a connection asked to close once sent has nothing left to send.
fn drained_and_closing(inner: &Inner) -> bool {
    let s = inner.lock();
    s.closing && s.control.is_empty() && s.out.values().all(|c| c.queue.is_empty())
}

async fn write_loop<W: AsyncWrite + Unpin>(inner: Arc<Inner>, mut w: W) {
    loop {
        let wake = inner.writer_wake.notified();
        let Some(batch) = take_sendable(&inner) else {
            // Closed: say so to the peer (it sees the end of the stream and closes its side).
            let _ = w.shutdown().await;
            return;
        };
        if batch.is_empty() {
            if drained_and_closing(&inner) {
                inner.close("closed locally after sending everything queued".into());
                let _ = w.shutdown().await;
                return;
            }
            wake.await;
            continue;
        }
        let mut bytes = Vec::new();
        for m in &batch {
            match encode_frame(m) {
                Ok(f) => bytes.extend_from_slice(&f),
                // `send` refuses batches this large, so this is a bug; close rather than send
                // something the peer would refuse.
                Err(e) => {
                    inner.close(format!("cannot encode a frame: {e}"));
                    return;
                }
            }
        }
        // The peer granted credits for this data, so it has room for it: a write that does
        // not finish within the frame timeout means the peer stopped reading.
        let limit = inner.config.frame_timeout;
        match tokio::time::timeout(limit, write_frame(&mut w, &Bytes::from(bytes))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                inner.close(format!("cannot write to peer: {e}"));
                let _ = w.shutdown().await;
                return;
            }
            Err(_) => {
                inner.close(format!(
                    "the peer stopped reading: a frame took more than {} ms to write",
                    limit.as_millis()
                ));
                return;
            }
        }
    }
}

impl From<FrameError> for TransportError {
    fn from(e: FrameError) -> Self {
        TransportError::Frame(e.to_string())
    }
}
