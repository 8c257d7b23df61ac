//! The loop of one task: a chain of operators fed by a source or by input channels.

use sluice_transport::{ChannelStatus, Payload, StreamMessage};
use tokio::sync::watch;

use crate::data::EventTime;
use crate::error::{JobError, OperatorError};
use crate::operator::OperatorContext;
use crate::runtime::chain::ChainOps;
use crate::runtime::input_gate::{GateEvent, InputGate};
use crate::runtime::outputs::Outputs;
use crate::runtime::JobControl;
use crate::source::{ErasedSource, SourcePoll};

/// How a task ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskExit {
    Finished,
    Cancelled,
}

pub(crate) struct SourceHead {
    pub(crate) source: Box<dyn ErasedSource>,
    pub(crate) ctx: OperatorContext,
}

pub(crate) enum Head {
    Source(SourceHead),
    Inputs(InputGate),
}

pub(crate) struct Task {
    pub(crate) name: String,
    pub(crate) head: Head,
    pub(crate) chain: ChainOps,
    pub(crate) outputs: Outputs,
    pub(crate) control: watch::Receiver<JobControl>,
    pub(crate) batch_size: usize,
    pub(crate) watermark_interval_ms: i64,
    pub(crate) log: slog::Logger,
}

impl Task {
    fn op_err(&self, source: OperatorError) -> JobError {
        JobError::TaskFailed {
            task: self.name.clone(),
            source,
        }
    }

    fn net_err(&self, source: sluice_transport::TransportError) -> JobError {
        JobError::Transport {
            task: self.name.clone(),
            source,
        }
    }

    pub(crate) async fn run(mut self) -> Result<TaskExit, JobError> {
        slog::debug!(self.log, "task starting");
        self.chain.open().map_err(|e| self.op_err(e))?;
        let head = std::mem::replace(&mut self.head, Head::Inputs(InputGate::new(Vec::new())));
        let exit = match head {
            Head::Source(src) => self.run_source(src).await?,
            Head::Inputs(gate) => self.run_inputs(gate).await?,
        };
        slog::debug!(self.log, "task ended"; "exit" => ?exit);
        Ok(exit)
    }

    fn control(&self) -> JobControl {
        *self.control.borrow()
    }

    async fn fire_processing_timers(&mut self, now_ms: i64) -> Result<(), JobError> {
        let out = self.chain.processing_time(now_ms).map_err(|e| self.op_err(e))?;
        self.outputs.emit_all(out).await.map_err(|e| self.net_err(e))
    }

    async fn advance_watermark(&mut self, wm: EventTime) -> Result<(), JobError> {
        let out = self.chain.watermark(wm).map_err(|e| self.op_err(e))?;
        self.outputs.emit_all(out).await.map_err(|e| self.net_err(e))?;
        self.outputs
            .broadcast(|| StreamMessage::Watermark(wm.0))
            .await
            .map_err(|e| self.net_err(e))
    }

    /// End of input: the final watermark fires every timer, then operators flush and the
    /// consumers are told that nothing follows.
    async fn finish(&mut self, last_wm: EventTime) -> Result<TaskExit, JobError> {
        if last_wm < EventTime::MAX {
            self.advance_watermark(EventTime::MAX).await?;
        }
        let out = self.chain.end_of_input().map_err(|e| self.op_err(e))?;
        self.outputs.emit_all(out).await.map_err(|e| self.net_err(e))?;
        self.outputs
            .broadcast(|| StreamMessage::EndOfPartition)
            .await
            .map_err(|e| self.net_err(e))?;
        Ok(TaskExit::Finished)
    }

    async fn run_source(&mut self, mut src: SourceHead) -> Result<TaskExit, JobError> {
        let clock = src.ctx.clock;
        let mut last_wm = EventTime::MIN;
        let mut last_wm_at = clock.now_ms();
        let mut last_data_at = clock.now_ms();
        let mut idle = false;
        let mut polls: u32 = 0;
        loop {
            match self.control() {
                JobControl::Cancel => return Ok(TaskExit::Cancelled),
                JobControl::Drain => return self.finish(last_wm).await,
                JobControl::Run => {}
            }
            let now = clock.now_ms();
            if self.chain.next_processing_timer().is_some_and(|t| t <= now) {
                self.fire_processing_timers(now).await?;
            }
            let (batch, state) = src
                .source
                .poll(self.batch_size, &src.ctx)
                .map_err(|e| self.op_err(e))?;
            if let Some(b) = batch {
                if idle {
                    idle = false;
                    self.outputs
                        .broadcast(|| StreamMessage::Status(ChannelStatus::Active))
                        .await
                        .map_err(|e| self.net_err(e))?;
                }
                last_data_at = now;
                let out = self.chain.push_from(0, b).map_err(|e| self.op_err(e))?;
                if let Some(out) = out {
                    self.outputs.emit(out).await.map_err(|e| self.net_err(e))?;
                }
            }
            let wm = src.source.watermark();
            let waiting = !matches!(state, SourcePoll::Ready);
            if wm > last_wm && (waiting || now - last_wm_at >= self.watermark_interval_ms) {
                self.advance_watermark(wm).await?;
                last_wm = wm;
                last_wm_at = now;
            }
            match state {
                SourcePoll::Ready => {
                    polls = polls.wrapping_add(1);
                    // A chained source never awaits a full channel, so give other tasks on
                    // this worker thread a turn now and then.
                    if polls.is_multiple_of(8) {
                        tokio::task::yield_now().await;
                    }
                }
                SourcePoll::Finished => return self.finish(last_wm).await,
                SourcePoll::WaitUntil(t) => {
                    self.outputs.flush().await.map_err(|e| self.net_err(e))?;
                    let mut wake = t;
                    if let Some(timeout) = src.source.idle_timeout_ms() {
                        if !idle && now - last_data_at >= timeout {
                            idle = true;
                            slog::debug!(self.log, "source idle");
                            self.outputs
                                .broadcast(|| StreamMessage::Status(ChannelStatus::Idle))
                                .await
                                .map_err(|e| self.net_err(e))?;
                        } else if !idle {
                            wake = wake.min(last_data_at + timeout);
                        }
                    }
                    if let Some(timer) = self.chain.next_processing_timer() {
                        wake = wake.min(timer);
                    }
                    if wake > now {
                        let mut control = self.control.clone();
                        tokio::select! {
                            _ = tokio::time::sleep_until(clock.instant_at(wake)) => {}
                            _ = control.changed() => {}
                        }
                    }
                }
            }
        }
    }

    async fn run_inputs(&mut self, mut gate: InputGate) -> Result<TaskExit, JobError> {
        let clock = match self.chain.ops.first() {
            Some((_, ctx)) => ctx.clock,
            None => unreachable!("a task without a source has at least one operator"),
        };
        let mut control = self.control.clone();
        loop {
            if self.control() == JobControl::Cancel {
                return Ok(TaskExit::Cancelled);
            }
            let timer = self.chain.next_processing_timer();
            if let Some(t) = timer {
                let now = clock.now_ms();
                if t <= now {
                    self.fire_processing_timers(now).await?;
                    continue;
                }
            }
            let event = match gate.try_next().map_err(|e| self.net_err(e))? {
                Some(ev) => ev,
                None => {
                    // Nothing queued: send what is buffered so records don't wait for a full
                    // batch while the input is quiet.
                    self.outputs.flush().await.map_err(|e| self.net_err(e))?;
                    let far = clock.instant_at(timer.unwrap_or(i64::MAX / 4));
                    tokio::select! {
                        ev = gate.next() => ev.map_err(|e| self.net_err(e))?,
                        _ = tokio::time::sleep_until(far), if timer.is_some() => continue,
                        _ = control.changed() => continue,
                    }
                }
            };
            match event {
                GateEvent::Data(Payload::Local(b)) => {
                    if let Some(out) = self.chain.push_from(0, b).map_err(|e| self.op_err(e))? {
                        self.outputs.emit(out).await.map_err(|e| self.net_err(e))?;
                    }
                }
                GateEvent::Data(Payload::Encoded(_)) => {
                    unreachable!("the in-process runtime only wires local channels")
                }
                GateEvent::Watermark(wm) => self.advance_watermark(wm).await?,
                GateEvent::Idle => self
                    .outputs
                    .broadcast(|| StreamMessage::Status(ChannelStatus::Idle))
                    .await
                    .map_err(|e| self.net_err(e))?,
                GateEvent::Active => self
                    .outputs
                    .broadcast(|| StreamMessage::Status(ChannelStatus::Active))
                    .await
                    .map_err(|e| self.net_err(e))?,
                GateEvent::Barrier(b) => self
                    .outputs
                    .broadcast(|| StreamMessage::Barrier(b))
                    .await
                    .map_err(|e| self.net_err(e))?,
                GateEvent::End => return self.finish(gate.watermark()).await,
            }
        }
    }
}
