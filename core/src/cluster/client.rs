//! The client side of `sluice submit`, `sluice list` and `sluice cancel`: one request and one
//! answer per connection.

use std::time::Duration;

use sluice_transport::tls::{ClusterTls, Identity, NetStream};
use sluice_transport::wire::{encode_frame, read_frame, write_frame, WireMessage, WireOption};
use tokio::net::TcpStream;

use super::{ClusterError, JobInfo, JobStatus};

/// Where the coordinator is and how to reach it: its control address, and the admin
/// certificate to present when the cluster uses TLS.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The coordinator's control address.
    pub addr: &'a str,
    /// Mutual TLS with an admin certificate, or `None` for a cluster without TLS.
    pub tls: Option<&'a ClusterTls>,
}

impl<'a> Target<'a> {
    /// A coordinator at `addr` without TLS.
    pub fn plain(addr: &'a str) -> Self {
        Target { addr, tls: None }
    }
}

async fn request(to: Target<'_>, msg: WireMessage) -> Result<WireMessage, ClusterError> {
    request_within(to, msg, Duration::from_secs(30)).await
}

async fn connect(to: Target<'_>) -> Result<NetStream, ClusterError> {
    let addr = to.addr;
    let tcp = TcpStream::connect(addr).await.map_err(|e| ClusterError::Io {
        what: format!("cannot reach the coordinator at {addr}"),
        source: e,
    })?;
    match to.tls {
        None => Ok(NetStream::Plain(tcp)),
        Some(tls) => Ok(tls
            .connect(tcp, &Identity::Coordinator, addr, Duration::from_secs(10))
            .await?),
    }
}

async fn request_within(to: Target<'_>, msg: WireMessage, timeout: Duration) -> Result<WireMessage, ClusterError> {
    let (addr, tls) = (to.addr, to.tls.is_some());
    let mut stream = connect(to).await?;
    let frame = encode_frame(&msg).map_err(|e| ClusterError::Frame {
        what: "encoding the request".into(),
        source: e,
    })?;
    write_frame(&mut stream, &frame)
        .await
        .map_err(|e| ClusterError::Frame {
            what: format!("sending to the coordinator at {addr}"),
            source: e,
        })?;
    match tokio::time::timeout(timeout, read_frame(&mut stream)).await {
        Err(_) => Err(ClusterError::Timeout(format!(
            "the coordinator at {addr} did not answer within {} s",
            timeout.as_secs()
        ))),
        Ok(Err(e)) => Err(unreadable_answer(addr, tls, e)),
        Ok(Ok(None)) => Err(ClusterError::Protocol {
            peer: addr.to_string(),
            what: "it closed the connection without answering".into(),
        }),
        Ok(Ok(Some(WireMessage::Rejected { reason, kind }))) => Err(ClusterError::Refused {
            kind: super::RefusalKind::from_wire(kind),
            reason,
        }),
        Ok(Ok(Some(answer))) => Ok(answer),
    }
}

/// Why an answer could not be read, said as plainly as can be known: a TLS alert after the
/// handshake is the coordinator refusing this client's certificate; bytes that are no frame
/// on a plain connection most likely come from a coordinator that speaks TLS.
fn unreadable_answer(addr: &str, tls: bool, e: sluice_transport::wire::FrameError) -> ClusterError {
    let text = e.to_string();
    if tls && text.contains("alert") {
        return ClusterError::Forbidden(format!(
            "the coordinator at {addr} refused this client's certificate ({text}): is it signed by the cluster's CA and still valid?"
        ));
    }
    if !tls {
        return ClusterError::Refused {
            kind: super::RefusalKind::Failed,
            reason: format!(
                "the coordinator at {addr} did not answer in Sluice frames ({text}); if it uses TLS, set [security] tls-ca, tls-cert and tls-key (an admin certificate)"
            ),
        };
    }
    ClusterError::Frame {
        what: format!("reading the answer of the coordinator at {addr}"),
        source: e,
    }
}

fn unexpected(addr: &str, m: &WireMessage) -> ClusterError {
    ClusterError::Protocol {
        peer: addr.to_string(),
        what: super::coordinator::frame_kind(m),
    }
}

/// Submits job `name` with `options` (`key` as `sluice submit` spells the option, without
/// `--`); returns the new job's id.
pub async fn submit_job(to: Target<'_>, name: &str, options: &[(String, String)]) -> Result<String, ClusterError> {
    let options = options
        .iter()
        .map(|(k, v)| WireOption {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    match request(
        to,
        WireMessage::SubmitJob {
            job_name: name.to_string(),
            options,
        },
    )
    .await?
    {
        WireMessage::JobSubmitted { job_id } => Ok(job_id),
        other => Err(unexpected(to.addr, &other)),
    }
}

/// Every job the coordinator knows, oldest first.
pub async fn list_jobs(to: Target<'_>) -> Result<Vec<JobInfo>, ClusterError> {
    match request(to, WireMessage::ListJobs).await? {
        WireMessage::JobList { jobs } => jobs
            .into_iter()
            .map(|j| {
                let status = JobStatus::parse(&j.status).ok_or_else(|| ClusterError::Protocol {
                    peer: to.addr.to_string(),
                    what: format!("unknown job status '{}'", j.status),
                })?;
                Ok(JobInfo {
                    id: j.job_id,
                    name: j.job_name,
                    status,
                    error: (!j.error.is_empty()).then_some(j.error),
                    attempt: 0,
                    // The wire listing carries no graph; `GET /jobs/{id}` has it.
                    vertices: Vec::new(),
                })
            })
            .collect(),
        other => Err(unexpected(to.addr, &other)),
    }
}

/// Cancels job `id`.
pub async fn cancel_job(to: Target<'_>, id: &str) -> Result<(), ClusterError> {
    match request(to, WireMessage::CancelJob { job_id: id.to_string() }).await? {
        WireMessage::JobCancelled { .. } => Ok(()),
        other => Err(unexpected(to.addr, &other)),
    }
}

/// Takes a savepoint of job `id` into `target_dir`; with `stop = Some(drain)` the job stops
/// after it (draining first if `drain`). Returns the savepoint's path and checkpoint id.
pub async fn trigger_savepoint(
    to: Target<'_>,
    id: &str,
    target_dir: &str,
    stop: Option<bool>,
) -> Result<(String, u64), ClusterError> {
    let msg = WireMessage::TriggerSavepoint {
        job_id: id.to_string(),
        target_dir: target_dir.to_string(),
        stop: stop.is_some(),
        drain: stop.unwrap_or(false),
    };
    // A savepoint of a large state takes a while: wait as long as a checkpoint may take.
    match request_within(to, msg, Duration::from_secs(600)).await? {
        WireMessage::SavepointDone { path, checkpoint_id } => Ok((path, checkpoint_id)),
        other => Err(unexpected(to.addr, &other)),
    }
}
