//! The client side of `sluice submit`, `sluice list` and `sluice cancel`: one request and one
//! answer per connection.

use std::time::Duration;

use sluice_transport::tls::{ClusterTls, Identity, NetStream};
use sluice_transport::wire::{encode_frame, read_frame, write_frame, WireMessage, WireOption, WireProgress};
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

/// Sends `msg` to the coordinator; with several addresses (`A,B,C`: a leader and standbys),
/// to each in turn until one that leads answers. Only answers that prove the request was not
/// carried out (unreachable, or "not the leader") move on to the next: a request that may
/// have been applied is never sent twice.
async fn request_within(to: Target<'_>, msg: WireMessage, timeout: Duration) -> Result<WireMessage, ClusterError> {
    let addrs: Vec<&str> = to.addr.split(',').map(str::trim).filter(|a| !a.is_empty()).collect();
    let mut last = None;
    for addr in addrs.iter().take(16) {
        let one = Target { addr, tls: to.tls };
        match request_one(one, &msg, timeout).await {
            Err(e @ ClusterError::Io { .. }) => last = Some(e),
            Err(e) if e.kind() == super::RefusalKind::NotLeader => last = Some(e),
            answer => return answer,
        }
    }
    Err(last.unwrap_or_else(|| ClusterError::Config(format!("--coordinator {:?} names no address", to.addr))))
}

async fn request_one(to: Target<'_>, msg: &WireMessage, timeout: Duration) -> Result<WireMessage, ClusterError> {
    let (addr, tls) = (to.addr, to.tls.is_some());
    let mut stream = connect(to).await?;
    let frame = encode_frame(msg).map_err(|e| ClusterError::Frame {
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
        what: super::framed::frame_kind(m),
    }
}

/// Submits job `name` with `options` (`key` as `sluice submit` spells the option, without
/// `--`); returns the new job's id. `submission` is the caller's id for this submission
/// (see [`submission_id`]; empty for none): with one, a try whose outcome is unknown (no
/// answer in time, the connection closed, the leader busy or changing) is sent again, for
/// up to [`SUBMIT_RETRY_FOR`], since a coordinator answers a repeated id with the job the
/// first try created.
pub async fn submit_job(
    to: Target<'_>,
    name: &str,
    options: &[(String, String)],
    submission: &str,
) -> Result<String, ClusterError> {
    let msg = WireMessage::SubmitJob {
        job_name: name.to_string(),
        options: options
            .iter()
            .map(|(k, v)| WireOption {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        submission: submission.to_string(),
    };
    let deadline = tokio::time::Instant::now() + SUBMIT_RETRY_FOR;
    let mut pause = Duration::from_millis(250);
    loop {
        match request(to, msg.clone()).await {
            Ok(WireMessage::JobSubmitted { job_id }) => return Ok(job_id),
            Ok(other) => return Err(unexpected(to.addr, &other)),
            Err(e)
                if !submission.is_empty() && outcome_unknown(&e) && tokio::time::Instant::now() + pause < deadline =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How long [`submit_job`] keeps sending a submission whose outcome is unknown.
pub const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(30);

/// Whether a failed request may have been carried out, or may succeed if sent again soon:
/// no answer, a connection broken after the request went out, a busy or changing leader. A
/// coordinator that could not be reached at all (its address is wrong, or it is down) did
/// nothing, and neither did one that refused with a reason (a bad option, an unknown job).
pub fn outcome_unknown(e: &ClusterError) -> bool {
    match e {
        ClusterError::Io { .. } => false,
        ClusterError::Timeout(_)
        | ClusterError::Protocol { .. }
        | ClusterError::Frame { .. }
        | ClusterError::Busy(_) => true,
        e => matches!(
            e.kind(),
            super::RefusalKind::Unavailable | super::RefusalKind::NotLeader
        ),
    }
}

/// A fresh submission id for [`submit_job`]: the time, the process and 64 bits of std's
/// per-process random hash keys (drawn from the operating system), so two submissions never
/// share one.
pub fn submission_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let now_ms = crate::clock::Clock::system().now_ms();
    format!("{now_ms:x}-{:x}-{random:016x}", std::process::id())
}

/// Every job the coordinator knows, oldest first.
pub async fn list_jobs(to: Target<'_>) -> Result<Vec<JobInfo>, ClusterError> {
    Ok(list_jobs_with_progress(to).await?.into_iter().map(|(j, _)| j).collect())
}

/// Every job the coordinator knows, oldest first, with how each is doing.
pub async fn list_jobs_with_progress(to: Target<'_>) -> Result<Vec<(JobInfo, WireProgress)>, ClusterError> {
    match request(to, WireMessage::ListJobs).await? {
        WireMessage::JobList { jobs } => jobs
            .into_iter()
            .map(|j| {
                let status = JobStatus::parse(&j.status).ok_or_else(|| ClusterError::Protocol {
                    peer: to.addr.to_string(),
                    what: format!("unknown job status '{}'", j.status),
                })?;
                let info = JobInfo {
                    id: j.job_id,
                    name: j.job_name,
                    status,
                    error: (!j.error.is_empty()).then_some(j.error),
                    attempt: 0,
                    // The wire listing carries no graph nor options; `GET /jobs/{id}` has them.
                    vertices: Vec::new(),
                    options: Vec::new(),
                };
                Ok((info, j.progress))
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
