//! The seam between the runtime and cluster mode. `cluster/` reaches the runtime only through
//! this module:
//!
//! - **Tasks.** A graph's tasks are numbered by [`task_specs`] (chains in the order of their
//!   heads, subtasks within a chain), the same in every process that builds the same graph,
//!   so a deployment names tasks by number. [`build_task`] builds one on a transport with the
//!   attempt's shared [`TaskEnv`]; a [`TaskSet`] runs a process's tasks and reports how each
//!   ended.
//! - **Checkpoints.** The coordinator's checkpoint coordinator ([`CheckpointCoordinator`])
//!   sends a task [`TaskCommand`]s and hears its [`TaskEvent`]s; a task's end of that
//!   conversation is its [`CheckpointLink`]. In cluster mode both travel as frames between the
//!   coordinator and the worker; embedded, over in-process channels.
//! - **Control.** Every task of an attempt watches one [`ControlReceiver`] (run, drain,
//!   cancel); the worker holds the [`ControlSender`].
//! - **Restarts.** The attempt/restart loop ([`run_attempts`]) with an [`AttemptRunner`] of
//!   the job master's, the same loop the embedded runtime uses.

pub(crate) use super::control::{channel as control_channel, ControlReceiver, ControlSender};
pub(crate) use super::job_loop::{
    first_checkpoint_id, load_mapped_savepoint, next_savepoint_request, run_attempts, savepoint_between_attempts,
    AttemptEnd, AttemptRunner, AttemptStart, JobAttempts, LoopEnd,
};
pub(crate) use super::task::{CheckpointLink, Task, TaskExit};
pub(crate) use super::task_builder::{build_task, task_name, task_specs, TaskEnv, TaskSpec};
pub(crate) use super::task_set::{panic_message, TaskSet};
pub(crate) use super::JobControl;
pub(crate) use crate::checkpoint::coordinator::{
    Coordinator as CheckpointCoordinator, JobCheckpointing, SavepointRequest, SavepointRequests, StopAction, StopHook,
    TaskRef,
};
pub(crate) use crate::checkpoint::protocol::{TaskCommand, TaskEvent};
