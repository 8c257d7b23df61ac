//! Receives from all input channels of a task and combines their progress.
//!
//! The gate polls its channels round-robin so that no channel starves, and turns per-channel
//! watermarks, idleness and end-of-partition into task-level events: the task's watermark is
//! the minimum over the channels that are neither idle nor finished, and it never goes back.

use std::future::poll_fn;
use std::task::{Context, Poll, Waker};

use std::sync::Arc;

use sluice_transport::{Barrier, ChannelStatus, InputChannel, Payload, StreamMessage, TransportError};

use crate::codec::BatchCodec;
use crate::metrics::Meter;

use crate::data::EventTime;

/// What the task must react to.
#[derive(Debug)]
pub(crate) enum GateEvent {
    Data(Payload),
    /// The combined watermark advanced.
    Watermark(EventTime),
    /// Every live channel is idle: the task itself is idle.
    Idle,
    /// A channel became active again after the task was idle.
    Active,
    /// A checkpoint barrier arrived.
    Barrier(Barrier),
    /// Every channel has finished.
    End,
}

struct Slot {
    ch: InputChannel,
    /// Decodes batches that arrive encoded (from the network).
    codec: Arc<dyn BatchCodec>,
    watermark: EventTime,
    idle: bool,
    finished: bool,
    /// The channel delivered the barrier being aligned: hold its data back until every
    /// channel has (aligned checkpoints).
    blocked: bool,
}

pub(crate) struct InputGate {
    slots: Vec<Slot>,
    next: usize,
    emitted: EventTime,
    idle: bool,
    live: usize,
    aligning: Option<Barrier>,
    /// When the barrier being aligned first arrived.
    align_started: Option<tokio::time::Instant>,
    /// How long the last completed alignment took.
    last_alignment: std::time::Duration,
    /// Encoded bytes received.
    bytes_in: Meter,
}

impl InputGate {
    pub(crate) fn new(channels: Vec<(InputChannel, Arc<dyn BatchCodec>)>, bytes_in: Meter) -> Self {
        let live = channels.len();
        InputGate {
            slots: channels
                .into_iter()
                .map(|(ch, codec)| Slot {
                    ch,
                    codec,
                    watermark: EventTime::MIN,
                    idle: false,
                    finished: false,
                    blocked: false,
                })
                .collect(),
            next: 0,
            emitted: EventTime::MIN,
            idle: false,
            live,
            aligning: None,
            align_started: None,
            last_alignment: std::time::Duration::ZERO,
            bytes_in,
        }
    }

    /// The task's current input watermark.
    pub(crate) fn watermark(&self) -> EventTime {
        self.emitted
    }

    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Result<(usize, StreamMessage), TransportError>> {
        let n = self.slots.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            let slot = &mut self.slots[i];
            if slot.finished || slot.blocked {
                continue;
            }
            match slot.ch.poll_recv(cx) {
                Poll::Ready(Some(m)) => {
                    self.next = (i + 1) % n;
                    return Poll::Ready(Ok((i, m)));
                }
                // The producer vanished without end-of-partition: it failed.
                Poll::Ready(None) => return Poll::Ready(Err(TransportError::Closed(slot.ch.id()))),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// The next event, waiting for one.
    pub(crate) async fn next(&mut self) -> Result<GateEvent, TransportError> {
        loop {
            if self.live == 0 {
                return Ok(GateEvent::End);
            }
            let (i, m) = poll_fn(|cx| self.poll_raw(cx)).await?;
            if let Some(ev) = self.on_message(i, m)? {
                return Ok(ev);
            }
        }
    }

    /// The next event if one is already queued; never waits.
    pub(crate) fn try_next(&mut self) -> Result<Option<GateEvent>, TransportError> {
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if self.live == 0 {
                return Ok(Some(GateEvent::End));
            }
            match self.poll_raw(&mut cx) {
                Poll::Ready(r) => {
                    let (i, m) = r?;
                    if let Some(ev) = self.on_message(i, m)? {
                        return Ok(Some(ev));
                    }
                }
                Poll::Pending => return Ok(None),
            }
        }
    }

    fn on_message(&mut self, i: usize, m: StreamMessage) -> Result<Option<GateEvent>, TransportError> {
        Ok(match m {
            StreamMessage::Data(Payload::Encoded(bytes)) => {
                self.bytes_in.mark(bytes.len() as u64);
                let batch = self.slots[i].codec.decode(&bytes).map_err(TransportError::Frame)?;
                Some(GateEvent::Data(Payload::Local(batch)))
            }
            StreamMessage::Data(p) => Some(GateEvent::Data(p)),
            StreamMessage::Watermark(w) => {
                let slot = &mut self.slots[i];
                slot.watermark = slot.watermark.max(EventTime(w));
                slot.idle = false;
                self.reactivate().or_else(|| self.advance())
            }
            StreamMessage::Status(ChannelStatus::Idle) => {
                self.slots[i].idle = true;
                self.advance().or_else(|| self.check_all_idle())
            }
            StreamMessage::Status(ChannelStatus::Active) => {
                self.slots[i].idle = false;
                self.reactivate()
            }
            StreamMessage::Barrier(b) => {
                match self.aligning {
                    None => {
                        self.aligning = Some(b);
                        self.align_started = Some(tokio::time::Instant::now());
                    }
                    Some(cur) if cur.checkpoint_id == b.checkpoint_id => {}
                    Some(cur) if cur.checkpoint_id < b.checkpoint_id => {
                        // A newer checkpoint started: the one being aligned can't complete.
                        for s in &mut self.slots {
                            s.blocked = false;
                        }
                        self.aligning = Some(b);
                        self.align_started = Some(tokio::time::Instant::now());
                    }
                    // A barrier of an abandoned checkpoint.
                    Some(_) => return Ok(None),
                }
                self.slots[i].blocked = true;
                self.check_aligned()
            }
            StreamMessage::EndOfPartition => {
                self.slots[i].finished = true;
                self.slots[i].blocked = false;
                self.live -= 1;
                if self.aligning.is_some() {
                    return Ok(self.check_aligned());
                }
                if self.live == 0 {
                    Some(GateEvent::End)
                } else {
                    self.advance()
                }
            }
        })
    }

    /// The barrier, once every live channel delivered it.
    fn check_aligned(&mut self) -> Option<GateEvent> {
        let aligned = self.slots.iter().all(|s| s.finished || s.blocked);
        if !aligned {
            return None;
        }
        for s in &mut self.slots {
            s.blocked = false;
        }
        if let Some(t) = self.align_started.take() {
            self.last_alignment = t.elapsed();
        }
        self.aligning.take().map(GateEvent::Barrier)
    }

    /// How long the last completed barrier alignment took (first barrier to last).
    pub(crate) fn last_alignment(&self) -> std::time::Duration {
        self.last_alignment
    }

    fn reactivate(&mut self) -> Option<GateEvent> {
        if self.idle {
            self.idle = false;
            return Some(GateEvent::Active);
        }
        None
    }

    fn check_all_idle(&mut self) -> Option<GateEvent> {
        let all_idle = self.slots.iter().filter(|s| !s.finished).all(|s| s.idle);
        if all_idle && !self.idle {
            self.idle = true;
            return Some(GateEvent::Idle);
        }
        None
    }

    /// Emits the combined watermark if it moved forward.
    fn advance(&mut self) -> Option<GateEvent> {
        let min = self
            .slots
            .iter()
            .filter(|s| !s.finished && !s.idle)
            .map(|s| s.watermark)
            .min()?;
        if min > self.emitted {
            self.emitted = min;
            return Some(GateEvent::Watermark(min));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_transport::{ChannelId, LocalTransport, OutputChannel, Transport};

    fn gate(n: u32) -> (InputGate, Vec<OutputChannel>) {
        let t = LocalTransport::new(16);
        let mut ins = Vec::new();
        let mut outs = Vec::new();
        for i in 0..n {
            let id = ChannelId {
                edge: 0,
                from: i,
                to: 0,
            };
            outs.push(t.output(id).unwrap());
            ins.push((t.input(id).unwrap(), crate::codec::codec_of::<u8>()));
        }
        (InputGate::new(ins, Meter::default()), outs)
    }

    async fn drain(g: &mut InputGate) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(ev) = g.try_next().unwrap() {
            let end = matches!(ev, GateEvent::End);
            v.push(format!("{ev:?}"));
            if end {
                break;
            }
        }
        v
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn watermark_is_min_over_channels_and_monotonic() {
        rt().block_on(async {
            let (mut g, mut outs) = gate(2);
            outs[0].send(StreamMessage::Watermark(10)).await.unwrap();
            assert!(drain(&mut g).await.is_empty(), "channel 1 still at -inf");
            outs[1].send(StreamMessage::Watermark(5)).await.unwrap();
            assert_eq!(drain(&mut g).await, ["Watermark(EventTime(5))"]);
            outs[1].send(StreamMessage::Watermark(20)).await.unwrap();
            assert_eq!(drain(&mut g).await, ["Watermark(EventTime(10))"]);
            outs[1].send(StreamMessage::Watermark(3)).await.unwrap();
            assert!(drain(&mut g).await.is_empty(), "a smaller watermark never goes back");
        });
    }

    #[test]
    fn idle_channel_does_not_hold_back_watermark() {
        rt().block_on(async {
            let (mut g, mut outs) = gate(2);
            outs[0].send(StreamMessage::Watermark(10)).await.unwrap();
            outs[1].send(StreamMessage::Status(ChannelStatus::Idle)).await.unwrap();
            assert_eq!(drain(&mut g).await, ["Watermark(EventTime(10))"]);
            outs[0].send(StreamMessage::Status(ChannelStatus::Idle)).await.unwrap();
            assert_eq!(drain(&mut g).await, ["Idle"]);
            outs[1].send(StreamMessage::Watermark(30)).await.unwrap();
            assert_eq!(drain(&mut g).await, ["Active"]);
        });
    }

    #[test]
    fn end_after_all_channels_finish_and_finished_channels_release_watermark() {
        rt().block_on(async {
            let (mut g, mut outs) = gate(2);
            outs[0].send(StreamMessage::Watermark(7)).await.unwrap();
            outs[1].send(StreamMessage::EndOfPartition).await.unwrap();
            assert_eq!(drain(&mut g).await, ["Watermark(EventTime(7))"]);
            outs[0].send(StreamMessage::EndOfPartition).await.unwrap();
            assert_eq!(drain(&mut g).await, ["End"]);
        });
    }

    #[test]
    fn barrier_blocks_its_channel_until_all_channels_deliver_it() {
        rt().block_on(async {
            let (mut g, mut outs) = gate(2);
            let b = |id| {
                StreamMessage::Barrier(Barrier {
                    checkpoint_id: id,
                    timestamp_ms: 0,
                })
            };
            outs[0].send(b(1)).await.unwrap();
            outs[0].send(StreamMessage::Watermark(50)).await.unwrap();
            outs[1].send(StreamMessage::Watermark(5)).await.unwrap();
            // Channel 0 is blocked after its barrier: its watermark 50 is not seen yet.
            assert!(drain(&mut g).await.is_empty());
            outs[1].send(b(1)).await.unwrap();
            let evs = drain(&mut g).await;
            assert!(evs[0].starts_with("Barrier"), "{evs:?}");
            assert_eq!(evs[1..], ["Watermark(EventTime(5))".to_string()]);
        });
    }

    #[test]
    fn finished_channel_counts_as_aligned() {
        rt().block_on(async {
            let (mut g, mut outs) = gate(2);
            outs[0]
                .send(StreamMessage::Barrier(Barrier {
                    checkpoint_id: 3,
                    timestamp_ms: 0,
                }))
                .await
                .unwrap();
            outs[1].send(StreamMessage::EndOfPartition).await.unwrap();
            let evs = drain(&mut g).await;
            assert!(evs[0].starts_with("Barrier"), "{evs:?}");
        });
    }

    #[test]
    fn vanished_producer_is_an_error() {
        rt().block_on(async {
            let (mut g, mut outs) = gate(1);
            outs.clear();
            assert!(g.next().await.is_err());
        });
    }
}
