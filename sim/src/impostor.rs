//! An impostor on the cluster's network. It holds a valid certificate of the cluster's CA,
//! issued to a worker id that runs nothing, and tries two things, over and over:
//!
//! - to register under a real worker's id. A coordinator that checked identities refuses it.
//!   One that trusted the claimed id would let it take the victim's place: for every
//!   deployment it then receives, the impostor claims each task placed on it as finished,
//!   without running any of them;
//! - registered under its own id, to claim that the running job's tasks have finished. The
//!   coordinator drops frames about tasks that are not placed on the sender.
//!
//! Two oracles watch it: the output oracle (exactly once, as always), and a confidentiality
//! oracle: no deployment, which names the job's options, files and checkpoint location, may
//! reach the impostor. With identities trusted, the failovers it causes are survived (the
//! output stays exact), but deployments reach it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::cluster::tls::{ClusterTls, Identity, NetStream};
use sluice_core::sync::LockExt;
use sluice_transport::wire::{encode_frame, read_frame, write_frame, WireMessage};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::time::Instant;

/// What the impostor tried and got.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImpostorReport {
    /// Registrations under the victim's id that the coordinator accepted.
    pub accepted_as_victim: u32,
    /// Registrations under the victim's id that it refused.
    pub refused: u32,
    /// Frames about tasks sent that were not the impostor's to send.
    pub spoofed_frames: u32,
    /// Deployments the coordinator sent it (each naming the job's files and checkpoints).
    pub deployments: u32,
}

/// Where the impostor aims.
pub(crate) struct Plan {
    /// The coordinator's control address.
    pub(crate) coordinator: String,
    /// The impostor's own (valid) TLS identity.
    pub(crate) tls: ClusterTls,
    /// Its own worker id (the one its certificate names).
    pub(crate) own_id: String,
    /// The real worker whose id it claims.
    pub(crate) victim: String,
    /// The job it speaks about.
    pub(crate) job: String,
    /// When it gives up.
    pub(crate) until: Instant,
}

async fn send(w: &mut WriteHalf<NetStream>, msg: &WireMessage) -> bool {
    let frame = encode_frame(msg).expect("the impostor's frames encode");
    write_frame(w, &frame).await.is_ok()
}

async fn connect(plan: &Plan, claimed: &str) -> Option<(ReadHalf<NetStream>, WriteHalf<NetStream>, WireMessage)> {
    let register = WireMessage::Register {
        worker_id: claimed.to_string(),
        data_address: "10.255.0.98:7000".into(),
        slots: 2,
        build: String::new(),
    };
    connect_with_first(plan, register).await
}

/// Connects with the impostor's certificate, sends `first`, and reads the answer.
async fn connect_with_first(
    plan: &Plan,
    first: WireMessage,
) -> Option<(ReadHalf<NetStream>, WriteHalf<NetStream>, WireMessage)> {
    let tcp = tokio::net::TcpStream::connect(&plan.coordinator).await.ok()?;
    let wait = Duration::from_secs(2);
    let stream = plan
        .tls
        .connect(tcp, &Identity::Coordinator, &plan.coordinator, wait)
        .await
        .ok()?;
    let (mut r, mut w) = tokio::io::split(stream);
    if !send(&mut w, &first).await {
        return None;
    }
    let answer = tokio::time::timeout(wait, read_frame(&mut r)).await.ok()?.ok()??;
    Some((r, w, answer))
}

/// Plays the victim for as long as the coordinator talks to it: every task deployed to it is
/// "finished" at once, every cancellation "ended".
async fn play_victim(
    plan: &Plan,
    mut r: ReadHalf<NetStream>,
    mut w: WriteHalf<NetStream>,
    report: &Mutex<ImpostorReport>,
) {
    while Instant::now() < plan.until {
        match tokio::time::timeout(Duration::from_millis(200), read_frame(&mut r)).await {
            Err(_) => {
                if !send(
                    &mut w,
                    &WireMessage::Heartbeat {
                        worker_id: plan.victim.clone(),
                    },
                )
                .await
                {
                    return;
                }
            }
            Ok(Ok(Some(WireMessage::DeployTask {
                job_id,
                attempt,
                placement,
                ..
            }))) => {
                report.locked().deployments += 1;
                for task in (0..placement.len()).filter(|&t| placement[t] == plan.victim) {
                    let done = WireMessage::TaskFinished {
                        job_id: job_id.clone(),
                        attempt,
                        task: task as u32,
                        cancelled: false,
                    };
                    report.locked().spoofed_frames += 1;
                    if !send(&mut w, &done).await {
                        return;
                    }
                }
            }
            Ok(Ok(Some(WireMessage::CancelTask { job_id, attempt, .. }))) => {
                if !send(&mut w, &WireMessage::AttemptEnded { job_id, attempt }).await {
                    return;
                }
            }
            Ok(Ok(Some(_))) => {}
            Ok(_) => return,
        }
    }
}

/// Speaks for tasks without registering (refused: only a registration or an admin's request
/// may open a conversation), then registers as itself for a while. Registered, it is a worker
/// like any other and may be given tasks: it fails its own (it runs none, and says so
/// honestly: a holder of a valid worker certificate is trusted with its own tasks), and claims
/// every task of that attempt placed elsewhere finished (dropped: not its to speak for).
async fn spoof_as_self(plan: &Plan, report: &Mutex<ImpostorReport>) {
    if let Some((_r, mut w, _)) = connect_with_first(plan, spoofed(&plan.job, 0, 0)).await {
        report.locked().spoofed_frames += 1;
        let _ = send(&mut w, &spoofed(&plan.job, 0, 1)).await;
    }
    let Some((mut r, mut w, WireMessage::RegisterAck { .. })) = connect(plan, &plan.own_id).await else {
        return;
    };
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until.min(plan.until) {
        let frame = match tokio::time::timeout(Duration::from_millis(200), read_frame(&mut r)).await {
            Err(_) => WireMessage::Heartbeat {
                worker_id: plan.own_id.clone(),
            },
            Ok(Ok(Some(m))) => match answer_as_self(plan, m, report) {
                Some(frames) => {
                    for f in frames {
                        if !send(&mut w, &f).await {
                            return;
                        }
                    }
                    continue;
                }
                None => continue,
            },
            Ok(_) => return,
        };
        if !send(&mut w, &frame).await {
            return;
        }
    }
}

fn spoofed(job: &str, attempt: u32, task: u32) -> WireMessage {
    WireMessage::TaskFinished {
        job_id: job.to_string(),
        attempt,
        task,
        cancelled: false,
    }
}

/// What the impostor, registered as itself, answers to a frame of the coordinator.
fn answer_as_self(plan: &Plan, m: WireMessage, report: &Mutex<ImpostorReport>) -> Option<Vec<WireMessage>> {
    match m {
        WireMessage::DeployTask {
            job_id,
            attempt,
            placement,
            ..
        } => Some(
            (0..placement.len() as u32)
                .map(|task| {
                    if placement[task as usize] == plan.own_id {
                        WireMessage::TaskFailed {
                            job_id: job_id.clone(),
                            attempt,
                            task,
                            reason: "the impostor runs no tasks".into(),
                            permanent: false,
                        }
                    } else {
                        report.locked().spoofed_frames += 1;
                        spoofed(&job_id, attempt, task)
                    }
                })
                .collect(),
        ),
        WireMessage::CancelTask { job_id, attempt, .. } => Some(vec![WireMessage::AttemptEnded { job_id, attempt }]),
        _ => None,
    }
}

/// Runs the impostor until `plan.until`.
pub(crate) async fn run(plan: Plan, report: Arc<Mutex<ImpostorReport>>) {
    while Instant::now() < plan.until {
        match connect(&plan, &plan.victim).await {
            Some((r, w, WireMessage::RegisterAck { .. })) => {
                report.locked().accepted_as_victim += 1;
                play_victim(&plan, r, w, &report).await;
            }
            Some((_, _, WireMessage::Rejected { .. })) => {
                report.locked().refused += 1;
                spoof_as_self(&plan, &report).await;
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
