//! High availability in the simulation: an etcd twin on its own node, coordinators that
//! campaign through it, the faults that matter to leadership (kills, pauses that make a
//! zombie, cuts between a leader and etcd while it still reaches the workers), and an audit
//! of every write the coordinators made to etcd.
//!
//! The audit's invariant: no write of an older epoch may be *sent* after a write of a newer
//! epoch *succeeded*. The newer epoch exists only once the older leader's election key is
//! gone, and every fenced write compares that key at apply time, so with the fence such a
//! write fails; without it (the broken variant) a deposed leader's writes land after its
//! successor's, and the checker reports them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_core::ha::etcd::{EtcdHa, EtcdSettings};
use sluice_core::ha::{Entries, HaBackend, HaError, Term};
use sluice_core::state::blob::BoxFuture;
use sluice_core::sync::LockExt;
use tokio::sync::watch;

/// The etcd twin's port on its node.
pub const ETCD_PORT: u16 = 2379;

/// One successful write to etcd.
#[derive(Debug, Clone)]
pub struct WriteRecord {
    /// The writer's epoch.
    pub epoch: u64,
    /// When it was sent and when it succeeded (simulated time).
    pub sent: tokio::time::Instant,
    /// When its success came back.
    pub done: tokio::time::Instant,
    /// The keys it wrote or deleted.
    pub keys: Vec<String>,
}

/// Every coordinator's successful writes, in the order they came back.
pub type WriteLog = Arc<Mutex<Vec<WriteRecord>>>;

/// Writes that break the invariant: (the late write, the newer epoch that had written before
/// it was sent).
pub fn stale_writes(log: &[WriteRecord]) -> Vec<(WriteRecord, u64)> {
    let mut out = Vec::new();
    for w in log {
        let newer = log
            .iter()
            .filter(|o| o.epoch > w.epoch && o.done < w.sent)
            .map(|o| o.epoch)
            .max();
        if let Some(e) = newer {
            out.push((w.clone(), e));
        }
    }
    out
}

/// An [`HaBackend`] that records its successful writes with its epoch.
#[derive(Debug)]
pub struct AuditedHa {
    inner: EtcdHa,
    epoch: Mutex<Option<u64>>,
    log: WriteLog,
}

impl AuditedHa {
    /// Connects to the twin at `etcd`, retrying until it answers; `unfenced` is the broken
    /// variant.
    pub async fn connect(etcd: SocketAddr, lease_ttl: Duration, unfenced: bool, log: WriteLog) -> Self {
        let settings = EtcdSettings {
            endpoints: vec![etcd.to_string()],
            cluster_id: "sim".into(),
            lease_ttl,
            request_timeout: lease_ttl / 2,
        };
        loop {
            match EtcdHa::connect(settings.clone(), crate::cluster::sim_logger()).await {
                Ok(ha) => {
                    let inner = if unfenced { ha.unfenced() } else { ha };
                    return AuditedHa {
                        inner,
                        epoch: Mutex::new(None),
                        log,
                    };
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl HaBackend for AuditedHa {
    fn mode(&self) -> &'static str {
        self.inner.mode()
    }

    fn campaign<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Term, HaError>> {
        Box::pin(async move {
            let term = self.inner.campaign(address).await?;
            *self.epoch.locked() = Some(term.epoch);
            Ok(term)
        })
    }

    fn resign(&self) -> BoxFuture<'_, ()> {
        self.inner.resign()
    }

    fn deposed(&self) -> watch::Receiver<bool> {
        self.inner.deposed()
    }

    fn holds(&self) -> bool {
        self.inner.holds()
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<String>, HaError>> {
        self.inner.leader()
    }

    fn write(&self, puts: Vec<(String, Vec<u8>)>, deletes: Vec<String>) -> BoxFuture<'_, Result<(), HaError>> {
        Box::pin(async move {
            let keys: Vec<String> = puts
                .iter()
                .map(|(k, _)| k.clone())
                .chain(deletes.iter().cloned())
                .collect();
            let sent = tokio::time::Instant::now();
            // The epoch this write is made under (the campaign's, set before any write).
            let epoch = self.epoch.locked().unwrap_or(0);
            self.inner.write(puts, deletes).await?;
            self.log.locked().push(WriteRecord {
                epoch,
                sent,
                done: tokio::time::Instant::now(),
                keys,
            });
            Ok(())
        })
    }

    fn read<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Entries, HaError>> {
        self.inner.read(prefix)
    }
}
