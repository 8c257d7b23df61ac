//! A worker's share of one execution attempt: build the graph, connect the data plane, run
//! the tasks placed here, and report to the coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_transport::wire::{WireMessage, WireOption, WirePeer};
use tokio::sync::mpsc;

use super::exchange::{ClusterTransport, ExchangeSetup};
use super::framed::FrameSender;
use super::worker::WorkerShared;
use crate::checkpoint::protocol::{TaskCommand, TaskEvent};
use crate::checkpoint::CheckpointStorage;
use crate::error::JobError;
use crate::metrics::VertexMetrics;
use crate::runtime::attempt::{build_task, task_specs, TaskEnv};
use crate::runtime::control::{self, ControlReceiver, ControlSender};
use crate::runtime::task::{CheckpointLink, TaskExit};
use crate::runtime::JobControl;

/// A `DeployTask` frame's contents.
pub(crate) struct DeployRequest {
    pub(crate) job_id: String,
    pub(crate) attempt: u32,
    pub(crate) job_name: String,
    pub(crate) options: Vec<WireOption>,
    pub(crate) placement: Vec<String>,
    pub(crate) peers: Vec<WirePeer>,
    pub(crate) checkpoint_store: String,
    pub(crate) restore_checkpoint: u64,
    pub(crate) restore_savepoint: String,
    pub(crate) uid_mapping: Vec<WireOption>,
}

/// The worker's hold on a running deployment.
pub(crate) struct DeploymentHandle {
    /// Cancel by sending `Cancel` (or dropping the handle).
    pub(crate) control: ControlSender,
    /// Checkpoint commands for each local task, by task number.
    pub(crate) commands: BTreeMap<usize, mpsc::Sender<TaskCommand>>,
}

/// Creates the handle of a deployment and what its runner consumes.
pub(crate) fn prepare(
    req: &DeployRequest,
    me: &str,
) -> (
    DeploymentHandle,
    ControlReceiver,
    BTreeMap<usize, mpsc::Receiver<TaskCommand>>,
) {
    let (control, control_rx) = control::channel(JobControl::Run);
    let mut commands = BTreeMap::new();
    let mut receivers = BTreeMap::new();
    if !req.checkpoint_store.is_empty() {
        for (task, w) in req.placement.iter().enumerate() {
            if w == me {
                let (tx, rx) = mpsc::channel(64);
                commands.insert(task, tx);
                receivers.insert(task, rx);
            }
        }
    }
    (DeploymentHandle { control, commands }, control_rx, receivers)
}

/// Reports a task that panicked: its own report never comes.
struct PanicReport {
    tx: mpsc::UnboundedSender<(usize, Result<TaskExit, JobError>)>,
    task: usize,
    name: String,
    armed: bool,
}

impl Drop for PanicReport {
    fn drop(&mut self) {
        if self.armed && std::thread::panicking() {
            let _ = self.tx.send((
                self.task,
                Err(JobError::TaskPanicked {
                    task: self.name.clone(),
                    message: "panicked".into(),
                }),
            ));
        }
    }
}

async fn cancelled(mut rx: ControlReceiver) {
    let _ = rx.wait_for(|c| *c == JobControl::Cancel).await;
}

/// Runs the deployment until its tasks end or it is cancelled.
pub(crate) async fn run(
    worker: Arc<WorkerShared>,
    to_coordinator: FrameSender,
    req: DeployRequest,
    control_rx: ControlReceiver,
    mut command_rxs: BTreeMap<usize, mpsc::Receiver<TaskCommand>>,
) {
    let me = worker.id.clone();
    let log = worker
        .log
        .new(slog::o!("job" => req.job_id.clone(), "name" => req.job_name.clone(), "attempt" => req.attempt));
    let local: Vec<usize> = (0..req.placement.len()).filter(|&t| req.placement[t] == me).collect();
    let fail = |task: usize, reason: String| {
        slog::warn!(log, "task failed"; "task" => task, "reason" => &reason);
        to_coordinator.send(WireMessage::TaskFailed {
            job_id: req.job_id.clone(),
            attempt: req.attempt,
            task: task as u32,
            reason,
        });
    };
    let Some(&first) = local.first() else {
        slog::warn!(log, "deployment places no task on this worker");
        return;
    };
    let options = req.options.iter().map(|o| (o.key.clone(), o.value.clone())).collect();
    let mut graph = match worker.registry.build(&req.job_name, &options) {
        Ok(g) => g,
        Err(e) => return fail(first, format!("building job '{}' on worker {me}: {e}", req.job_name)),
    };
    if let Err(e) = graph.finalize() {
        return fail(first, e.to_string());
    }
    let specs = task_specs(&graph);
    if specs.len() != req.placement.len() {
        return fail(
            first,
            format!(
                "the coordinator placed {} tasks but job '{}' has {} here: do the coordinator and worker run the same build?",
                req.placement.len(),
                req.job_name,
                specs.len()
            ),
        );
    }
    let setup = async {
        let storage = if req.checkpoint_store.is_empty() {
            None
        } else {
            let store = (worker.opener)(&req.checkpoint_store)
                .map_err(|e| format!("opening checkpoint store {}: {e}", req.checkpoint_store))?;
            Some(CheckpointStorage::new(store, &req.job_id))
        };
        let restored = if !req.restore_savepoint.is_empty() {
            let store = (worker.opener)(&req.restore_savepoint)
                .map_err(|e| format!("opening savepoint {}: {e}", req.restore_savepoint))?;
            let mut sp = crate::checkpoint::savepoint::load_savepoint(store.as_ref())
                .await
                .map_err(|e| format!("loading savepoint {}: {e}", req.restore_savepoint))?;
            let mapping = req
                .uid_mapping
                .iter()
                .map(|o| (o.key.clone(), o.value.clone()))
                .collect();
            crate::runtime::restore::map_uids(&mut sp, &mapping)
                .map_err(|e| format!("savepoint {}: {e}", req.restore_savepoint))?;
            Some(sp)
        } else {
            match (&storage, req.restore_checkpoint) {
                (Some(st), id) if id > 0 => {
                    Some(st.load(id).await.map_err(|e| format!("loading checkpoint {id}: {e}"))?)
                }
                _ => None,
            }
        };
        let addresses: BTreeMap<String, String> = req
            .peers
            .iter()
            .map(|p| (p.worker_id.clone(), p.data_address.clone()))
            .collect();
        let transport = ClusterTransport::connect(ExchangeSetup {
            me: &me,
            job_id: &req.job_id,
            attempt: req.attempt,
            graph: &graph,
            specs: &specs,
            placement: req.placement.clone(),
            addresses: &addresses,
            channel_capacity: worker.config.execution.channel_capacity,
            inbound: &worker.inbound,
            connect_timeout: worker.config.connect_timeout,
            log: &log,
        })
        .await?;
        Ok::<_, String>((storage, restored, transport))
    };
    let (storage, restored, transport) = tokio::select! {
        biased;
        _ = cancelled(control_rx.clone()) => return,
        r = setup => match r {
            Ok(v) => v,
            Err(e) => return fail(first, e),
        },
    };
    let (events_tx, mut events_rx) = mpsc::channel::<TaskEvent>(256);
    let metrics: Vec<Arc<VertexMetrics>> = graph.vertices.iter().map(|_| VertexMetrics::new_shared()).collect();
    // The deployment's task metrics leave the worker's registry when it ends.
    let scope = worker
        .metrics
        .scope(&[("job_id", req.job_id.as_str()), ("job_name", req.job_name.as_str())]);
    let _unregister = scope.guard();
    let env = TaskEnv {
        metrics: &scope,
        graph: &graph,
        config: &worker.config.execution,
        attempt: req.attempt,
        clock: worker.config.clock,
        log: &log,
        control_rx: &control_rx,
        checkpointing: storage.is_some(),
    };
    let mut tasks = Vec::new();
    for &t in &local {
        let link = match &storage {
            Some(st) => {
                let rx = command_rxs
                    .remove(&t)
                    .expect("a command channel was made for every local task");
                Some(CheckpointLink::new(
                    t,
                    rx,
                    events_tx.clone(),
                    st.clone(),
                    graph.max_parallelism,
                    restored.as_ref(),
                ))
            }
            None => None,
        };
        match build_task(&env, &specs[t], &transport, &metrics, link, restored.as_ref()) {
            Ok(task) => tasks.push((t, task)),
            Err(e) => {
                transport.close_all();
                return fail(t, e.to_string());
            }
        }
    }
    drop(events_tx);
    slog::info!(log, "deployment running"; "tasks" => tasks.len());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let mut handles = Vec::new();
    for (t, task) in tasks {
        let tx = done_tx.clone();
        handles.push(tokio::spawn(async move {
            let mut guard = PanicReport {
                tx: tx.clone(),
                task: t,
                name: task.name.clone(),
                armed: true,
            };
            let r = task.run().await;
            guard.armed = false;
            let _ = tx.send((t, r));
        }));
    }
    drop(done_tx);
    let (job_id, attempt) = (req.job_id.clone(), req.attempt);
    let event_frame = |ev: TaskEvent| match ev {
        TaskEvent::Acked {
            task,
            checkpoint_id,
            files,
            alignment_ms,
        } => WireMessage::AckCheckpoint {
            job_id: job_id.clone(),
            attempt,
            checkpoint_id,
            task: task as u32,
            state: bincode::serialize(&files)
                .expect("state file metadata is plain data and always encodes")
                .into(),
            alignment_ms,
        },
        TaskEvent::Declined {
            task,
            checkpoint_id,
            reason,
        } => WireMessage::DeclineCheckpoint {
            job_id: job_id.clone(),
            attempt,
            checkpoint_id,
            task: task as u32,
            reason,
        },
        TaskEvent::InputFinished { task } => WireMessage::InputFinished {
            job_id: job_id.clone(),
            attempt,
            task: task as u32,
        },
    };
    let mut events_open = true;
    let mut left = local.len();
    let mut cancel = std::pin::pin!(cancelled(control_rx.clone()));
    while left > 0 {
        tokio::select! {
            biased;
            _ = &mut cancel => {
                slog::info!(log, "deployment cancelled");
                for h in &handles {
                    h.abort();
                }
                transport.close_all();
                return;
            }
            // Polled before task ends: a task's checkpoint events reach the coordinator
            // before its end does.
            ev = events_rx.recv(), if events_open => match ev {
                Some(ev) => {
                    to_coordinator.send(event_frame(ev));
                }
                None => events_open = false,
            },
            done = done_rx.recv() => {
                let Some((t, r)) = done else { break };
                left -= 1;
                match r {
                    Ok(exit) => {
                        to_coordinator.send(WireMessage::TaskFinished {
                            job_id: job_id.clone(),
                            attempt,
                            task: t as u32,
                            cancelled: exit == TaskExit::Cancelled,
                        });
                    }
                    Err(e) => fail(t, e.to_string()),
                }
            }
        }
    }
    transport.close_inbound();
    worker.finished(&job_id, attempt);
}
