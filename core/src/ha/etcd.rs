//! The etcd backend: leader election on a lease, and a store whose every write is fenced by a
//! transaction on the leader's election key.
//!
//! - Each campaign takes a fresh lease (`lease_ttl`) and kept alive every TTL/6. A leader
//!   deposes itself once the last keep-alive etcd acknowledged was *sent* TTL/2 ago: by then
//!   etcd may expire the lease within another TTL/2, and this process must have stopped
//!   acting before a successor can be elected.
//! - The epoch is the create revision of the winner's election key: etcd's revisions only grow,
//!   and a successor's key is created after the predecessor's, so epochs strictly increase.
//! - The fence compares the election key's value (address and lease, unique per campaign)
//!   and, on a real etcd, its create revision; the simulation's twin knows only value compares.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
use sluice_state::blob::BoxFuture;
use tokio::sync::watch;

use super::{Entries, HaBackend, HaError, Term};
use crate::spawned::AbortOnDrop;
use crate::sync::LockExt;

/// etcd refuses transactions of more operations than this (its `--max-txn-ops` default).
const MAX_TXN_OPS: usize = 128;

/// How to reach etcd and how long a lease lives.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `http://host:port` of each etcd member.
    pub endpoints: Vec<String>,
    /// Keys live under `/sluice/<cluster_id>/`, so clusters can share one etcd.
    pub cluster_id: String,
    /// How long leadership outlives a leader that stopped renewing it.
    pub lease_ttl: Duration,
    /// How long any one request to etcd may take.
    pub request_timeout: Duration,
}

impl EtcdSettings {
    /// Checks the settings: a cluster id of 1 to 64 characters out of `a-z 0-9 - _`, a lease
    /// of 2 s to 1 h, and at least one endpoint.
    pub fn check(&self) -> Result<(), HaError> {
        let bad = |why: String| Err(HaError::Unavailable(why));
        let id_ok = (1..=64).contains(&self.cluster_id.len())
            && self
                .cluster_id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !id_ok {
            return bad(format!(
                "--cluster-id {:?} must be 1 to 64 characters of a-z, 0-9, '-' and '_'",
                self.cluster_id
            ));
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_ttl > Duration::from_secs(3600) {
            return bad(format!("--lease-ttl {:?} must be between 2 s and 1 h", self.lease_ttl));
        }
        if self.endpoints.is_empty() || self.endpoints.iter().any(|e| e.trim().is_empty()) {
            return bad("--etcd-endpoints names no endpoint".into());
        }
        Ok(())
    }
}

/// A won campaign.
#[derive(Debug)]
struct Session {
    lease: i64,
    key: Vec<u8>,
    value: Vec<u8>,
    epoch: u64,
    /// When the last renewal etcd acknowledged was sent.
    renewed: watch::Receiver<tokio::time::Instant>,
    _keeper: AbortOnDrop<()>,
    _own_key: AbortOnDrop<()>,
}

/// Election and fenced store on etcd.
pub struct EtcdHa {
    client: Client,
    prefix: String,
    settings: EtcdSettings,
    session: Mutex<Option<Session>>,
    /// Counts campaigns: a lost lease deposes only the campaign it belonged to.
    generation: Arc<AtomicU64>,
    deposed: watch::Sender<bool>,
    log: slog::Logger,
    /// The simulation's deliberately broken variant (see [`EtcdHa::unfenced`]).
    #[cfg(madsim)]
    unfenced: bool,
}

impl std::fmt::Debug for EtcdHa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdHa")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdHa {
    /// Connects to etcd (within the request timeout).
    pub async fn connect(settings: EtcdSettings, log: slog::Logger) -> Result<Self, HaError> {
        settings.check()?;
        let endpoints: Vec<String> = settings.endpoints.iter().map(|e| endpoint(e)).collect();
        let client = tokio::time::timeout(settings.request_timeout, Client::connect(&endpoints, None))
            .await
            .map_err(|_| unavailable(&settings, "no answer"))?
            .map_err(|e| unavailable(&settings, &e.to_string()))?;
        Ok(EtcdHa {
            client,
            prefix: format!("/sluice/{}/", settings.cluster_id),
            settings,
            session: Mutex::default(),
            generation: Arc::default(),
            deposed: watch::Sender::new(false),
            log,
            #[cfg(madsim)]
            unfenced: false,
        })
    }

    /// The simulation's deliberately broken variant: a leader that never notices it lost its
    /// lease and writes without the fence (the checker must catch two epochs writing).
    #[cfg(madsim)]
    #[doc(hidden)]
    pub fn unfenced(mut self) -> Self {
        self.unfenced = true;
        self
    }

    fn election_name(&self) -> String {
        format!("{}election", self.prefix)
    }

    /// Runs `f` under the request timeout; `what` names the request in the error.
    async fn timed<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, HaError> {
        match tokio::time::timeout(self.settings.request_timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(HaError::Unavailable(format!("{what}: {e}"))),
            Err(_) => Err(HaError::Unavailable(format!(
                "{what}: no answer within {:?}",
                self.settings.request_timeout
            ))),
        }
    }

    /// One campaign on a fresh lease: `Ok(None)` if the lease was lost while waiting.
    async fn campaign_once(&self, address: &str) -> Result<Option<Session>, HaError> {
        let ttl = self.settings.lease_ttl.as_secs().max(1) as i64;
        let lease = self
            .timed("granting a lease", self.client.lease_client().grant(ttl, None))
            .await?
            .id();
        let (alive_tx, mut alive) = watch::channel(true);
        let (renewed_tx, renewed) = watch::channel(tokio::time::Instant::now());
        let keeper = AbortOnDrop(tokio::spawn(keep_alive(
            self.client.clone(),
            lease,
            self.settings.lease_ttl,
            (alive_tx, renewed_tx),
            self.log.clone(),
        )));
        let value = format!("{address}|{lease:x}").into_bytes();
        let mut election = self.client.election_client();
        let won = tokio::select! {
            biased;
            _ = alive.wait_for(|a| !*a) => return Ok(None),
            won = election.campaign(self.election_name(), value.clone(), lease) => won,
        };
        let key = won
            .map_err(|e| HaError::Unavailable(format!("campaigning: {e}")))?
            .take_leader()
            .ok_or_else(|| HaError::Unavailable("the campaign answered without a leader key".into()))?
            .key()
            .to_vec();
        let epoch = self.create_revision(&key).await?;
        let deposed = self.deposed.clone();
        #[cfg(madsim)]
        let deposed = (!self.unfenced).then_some(deposed);
        #[cfg(not(madsim))]
        let deposed = Some(deposed);
        let (generation, mine) = (
            self.generation.clone(),
            self.generation.fetch_add(1, Ordering::SeqCst) + 1,
        );
        // The election key itself may go (deleted by hand, or etcd restored): checked as
        // often as the lease is renewed.
        let own_key = AbortOnDrop(tokio::spawn(watch_own_key(
            self.client.clone(),
            (key.clone(), value.clone()),
            self.settings.lease_ttl / 6,
            (deposed.clone(), generation.clone(), mine),
            self.log.clone(),
        )));
        // The keeper now also deposes this process when the lease is lost (unless a later
        // campaign has replaced this one).
        let watcher = tokio::spawn(async move {
            let _ = alive.wait_for(|a| !*a).await;
            if let Some(d) = deposed.filter(|_| generation.load(Ordering::SeqCst) == mine) {
                d.send_replace(true);
            }
        });
        drop(watcher);
        Ok(Some(Session {
            lease,
            key,
            value,
            epoch,
            renewed,
            _keeper: keeper,
            _own_key: own_key,
        }))
    }

    /// The create revision of `key` (the twin's campaign answer does not carry it).
    async fn create_revision(&self, key: &[u8]) -> Result<u64, HaError> {
        let got = self
            .timed("reading the election key", self.client.kv_client().get(key, None))
            .await?;
        match got.kvs().first().map(|kv| kv.create_revision()) {
            Some(rev) if rev > 0 => Ok(rev as u64),
            _ => Err(HaError::Unavailable(
                "the election key vanished right after the campaign".into(),
            )),
        }
    }

    /// The fence every write carries.
    fn fence(&self) -> Result<Vec<Compare>, HaError> {
        let session = self.session.locked();
        let s = session
            .as_ref()
            .ok_or_else(|| HaError::Deposed("this coordinator has not won a campaign".into()))?;
        #[allow(unused_mut)] // The twin has no create-revision compare.
        let mut fence = vec![Compare::value(s.key.clone(), CompareOp::Equal, s.value.clone())];
        #[cfg(not(madsim))]
        fence.push(Compare::create_revision(
            s.key.clone(),
            CompareOp::Equal,
            s.epoch as i64,
        ));
        Ok(fence)
    }

    async fn fenced_txn(&self, ops: Vec<TxnOp>) -> Result<(), HaError> {
        if *self.deposed.borrow() {
            return Err(HaError::Deposed("the lease was lost".into()));
        }
        #[allow(unused_mut)] // Only the simulation's broken variant drops the fence.
        let mut fence = self.fence()?;
        #[cfg(madsim)]
        if self.unfenced {
            fence.clear();
        }
        let txn = Txn::new().when(fence).and_then(ops);
        let answer = self.timed("a fenced write", self.client.kv_client().txn(txn)).await?;
        if answer.succeeded() {
            Ok(())
        } else {
            self.deposed.send_replace(true);
            Err(HaError::Deposed("the election key is no longer ours".into()))
        }
    }
}

impl HaBackend for EtcdHa {
    fn mode(&self) -> &'static str {
        "etcd"
    }

    fn campaign<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Term, HaError>> {
        Box::pin(async move {
            let session = loop {
                match self.campaign_once(address).await? {
                    Some(s) => break s,
                    None => {
                        slog::warn!(self.log, "lost the lease while campaigning; campaigning again");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            let epoch = session.epoch;
            *self.session.locked() = Some(session);
            self.deposed.send_replace(false);
            slog::info!(self.log, "leading the cluster"; "epoch" => epoch, "cluster_id" => &self.settings.cluster_id);
            Ok(Term {
                epoch,
                // The coordinator sets its own (the time its term began).
                job_id_prefix: 0,
            })
        })
    }

    fn resign(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.deposed.send_replace(true);
            self.generation.fetch_add(1, Ordering::SeqCst);
            let session = self.session.locked().take();
            if let Some(s) = session {
                // Best effort: otherwise the key lingers until the lease expires.
                let revoked = self
                    .timed("revoking the lease", self.client.lease_client().revoke(s.lease))
                    .await;
                if let Err(e) = revoked {
                    slog::warn!(self.log, "could not revoke the lease; it expires by itself"; "error" => %e);
                }
            }
        })
    }

    fn deposed(&self) -> watch::Receiver<bool> {
        self.deposed.subscribe()
    }

    fn holds(&self) -> bool {
        #[cfg(madsim)]
        if self.unfenced {
            return true;
        }
        let session = self.session.locked();
        let fresh = session
            .as_ref()
            .is_some_and(|s| s.renewed.borrow().elapsed() < self.settings.lease_ttl / 2);
        fresh && !*self.deposed.borrow()
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<String>, HaError>> {
        Box::pin(async move {
            let got = self
                .timed(
                    "looking up the leader",
                    self.client
                        .kv_client()
                        .get(self.election_name(), Some(GetOptions::new().with_prefix())),
                )
                .await?;
            // The leader is the candidate whose key is oldest.
            let oldest = got.kvs().iter().min_by_key(|kv| kv.create_revision());
            Ok(oldest.and_then(|kv| {
                let text = String::from_utf8_lossy(kv.value());
                text.rsplit_once('|').map(|(addr, _)| addr.to_string())
            }))
        })
    }

    fn write(&self, puts: Vec<(String, Vec<u8>)>, deletes: Vec<String>) -> BoxFuture<'_, Result<(), HaError>> {
        Box::pin(async move {
            let mut ops: Vec<TxnOp> = puts
                .into_iter()
                .map(|(k, v)| TxnOp::put(format!("{}{k}", self.prefix), v, None))
                .collect();
            ops.extend(
                deletes
                    .into_iter()
                    .map(|k| TxnOp::delete(format!("{}{k}", self.prefix), None)),
            );
            // Each chunk is fenced on its own: a deposed leader's chunk fails like the whole.
            while ops.len() > MAX_TXN_OPS {
                let rest = ops.split_off(MAX_TXN_OPS);
                self.fenced_txn(ops).await?;
                ops = rest;
            }
            self.fenced_txn(ops).await
        })
    }

    fn read<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Entries, HaError>> {
        Box::pin(async move {
            let full = format!("{}{prefix}", self.prefix);
            let got = self
                .timed(
                    "reading",
                    self.client.kv_client().get(full, Some(GetOptions::new().with_prefix())),
                )
                .await?;
            let mut out: Entries = got
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = std::str::from_utf8(kv.key()).ok()?.strip_prefix(&self.prefix)?;
                    Some((key.to_string(), kv.value().to_vec()))
                })
                .collect();
            out.sort();
            Ok(out)
        })
    }
}

/// Keeps lease `lease` alive until the process loses it; turns `alive` false once the last
/// acknowledged renewal was sent TTL/2 ago, or etcd says the lease is gone. A broken stream
/// (an etcd member restarting, a leader change) is reopened until then.
async fn keep_alive(
    client: Client,
    lease: i64,
    ttl: Duration,
    (alive, renewals): (watch::Sender<bool>, watch::Sender<tokio::time::Instant>),
    log: slog::Logger,
) {
    let give_up_after = ttl / 2;
    let mut last_acked = tokio::time::Instant::now();
    let why = loop {
        let deadline = last_acked + give_up_after;
        let opened = timeout_at(deadline, client.lease_client().keep_alive(lease)).await;
        let (mut keeper, mut answers) = match opened {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                slog::debug!(log, "could not open the keep-alive stream; trying again"; "error" => %e);
                tokio::time::sleep(ttl / 12).await;
                if tokio::time::Instant::now() >= deadline {
                    break format!("no renewal acknowledged for {give_up_after:?} (last: {e})");
                }
                continue;
            }
            Err(_) => break format!("no renewal acknowledged for {give_up_after:?}"),
        };
        match renew(
            &mut keeper,
            &mut answers,
            &mut last_acked,
            give_up_after,
            &renewals,
            ttl,
        )
        .await
        {
            Renewal::Expired => break "etcd says the lease expired".into(),
            Renewal::TooLate => break format!("no renewal acknowledged for {give_up_after:?}"),
            Renewal::StreamBroke(e) => {
                slog::debug!(log, "the keep-alive stream broke; reopening"; "error" => e);
                tokio::time::sleep(ttl / 12).await;
            }
        }
    };
    slog::warn!(log, "lost the etcd lease"; "lease" => format!("{lease:x}"), "reason" => why);
    alive.send_replace(false);
}

/// Why renewing over one keep-alive stream stopped.
enum Renewal {
    Expired,
    TooLate,
    StreamBroke(String),
}

/// Renews every TTL/6 over one stream, recording each acknowledged renewal's send time.
async fn renew(
    keeper: &mut etcd_client::LeaseKeeper,
    answers: &mut etcd_client::LeaseKeepAliveStream,
    last_acked: &mut tokio::time::Instant,
    give_up_after: Duration,
    renewals: &watch::Sender<tokio::time::Instant>,
    ttl: Duration,
) -> Renewal {
    loop {
        let sent = tokio::time::Instant::now();
        let renewed = timeout_at(*last_acked + give_up_after, async {
            keeper.keep_alive().await?;
            answers.message().await
        })
        .await;
        match renewed {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => {
                *last_acked = sent;
                renewals.send_replace(sent);
            }
            Ok(Ok(Some(_))) => return Renewal::Expired,
            Ok(Ok(None)) => return Renewal::StreamBroke("the stream ended".into()),
            Ok(Err(e)) => return Renewal::StreamBroke(e.to_string()),
            Err(_) => return Renewal::TooLate,
        }
        tokio::time::sleep_until(sent + ttl / 6).await;
    }
}

/// Deposes campaign `mine` if its election key no longer holds its value (checked every
/// `every`); an unreachable etcd is left to the keep-alive.
async fn watch_own_key(
    client: Client,
    (key, value): (Vec<u8>, Vec<u8>),
    every: Duration,
    (deposed, generation, mine): (Option<watch::Sender<bool>>, Arc<AtomicU64>, u64),
    log: slog::Logger,
) {
    let Some(deposed) = deposed else { return };
    loop {
        tokio::time::sleep(every).await;
        let Ok(Ok(got)) = tokio::time::timeout(every, client.kv_client().get(key.clone(), None)).await else {
            continue;
        };
        if got.kvs().first().map(|kv| kv.value()) != Some(value.as_slice()) {
            if generation.load(Ordering::SeqCst) == mine {
                slog::warn!(log, "the election key is gone or no longer ours: stepping down");
                deposed.send_replace(true);
            }
            return;
        }
    }
}

/// `f`, unless `deadline` passes first (madsim's tokio has no `timeout_at`).
async fn timeout_at<T>(
    deadline: tokio::time::Instant,
    f: impl std::future::Future<Output = T>,
) -> Result<T, tokio::time::error::Elapsed> {
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    tokio::time::timeout(left, f).await
}

/// What the client library takes: the twin dials `host:port`, the real client either form.
fn endpoint(e: &str) -> String {
    let e = e.trim();
    if cfg!(madsim) {
        e.trim_start_matches("http://").to_string()
    } else {
        e.to_string()
    }
}

fn unavailable(settings: &EtcdSettings, why: &str) -> HaError {
    HaError::Unavailable(format!("connecting to etcd at {}: {why}", settings.endpoints.join(",")))
}
