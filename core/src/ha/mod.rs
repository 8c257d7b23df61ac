//! High availability: who leads the cluster, and the state a new leader takes over.
//!
//! A coordinator campaigns through an [`HaBackend`]; the winner gets a [`Term`] whose epoch
//! is larger than every earlier leader's. Everything a successor needs lives in the backend,
//! under keys relative to the cluster's prefix:
//!
//! - `jobs/<id>`: a submitted job ([`JobRecord`]: name, options, attempt, result);
//! - `ckpt/<id>/<checkpoint:020>`: a completed checkpoint of the job. This entry, not the
//!   checkpoint's `_metadata` file, is the commit point: a deposed leader that still writes a
//!   `_metadata` cannot add the entry, so its checkpoint is never restored;
//! - `meta/max_epoch`: the highest epoch that ever led (a restored etcd whose revisions went
//!   backwards is refused rather than letting two leaders share an epoch).
//!
//! Every write is fenced: it succeeds only while the writer still leads ([`HaError::Deposed`]
//! otherwise), so a leader that lost its lease can neither commit a checkpoint, nor delete
//! one, nor start an attempt. Standalone mode uses [`MemoryHa`]: always the leader, epoch 1.

mod memory;
mod records;

#[cfg(feature = "etcd")]
pub mod etcd;

use sluice_state::blob::BoxFuture;
use tokio::sync::watch;

pub use memory::MemoryHa;
pub use records::{JobRecord, JobResult};

/// Why an HA operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HaError {
    /// This coordinator no longer leads: the write was not applied.
    #[error("this coordinator is no longer the leader: {0}")]
    Deposed(String),
    /// The backend could not be reached or did not answer in time; a write may or may not
    /// have been applied.
    #[error("the HA store is unavailable: {0}")]
    Unavailable(String),
    /// A stored value could not be read back.
    #[error("the HA store's entry {key} is unreadable: {reason}")]
    Corrupt {
        /// The key, relative to the cluster's prefix.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The backend's state contradicts itself (epochs went backwards): leading now could let
    /// two leaders act as one.
    #[error("refusing to lead: {0}")]
    Inconsistent(String),
}

/// One leader's tenure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    /// Strictly larger than every earlier leader's epoch.
    pub epoch: u64,
    /// The high part of the ids of jobs submitted during this term (the time the term or the
    /// standalone coordinator began), so a job id never names two jobs.
    pub job_id_prefix: u64,
}

/// Entries read from the HA store: (key relative to the cluster's prefix, value).
pub type Entries = Vec<(String, Vec<u8>)>;

/// Leader election plus the fenced store a leader keeps its jobs in.
pub trait HaBackend: Send + Sync + std::fmt::Debug {
    /// `standalone` or `etcd`, as `/overview` shows it.
    fn mode(&self) -> &'static str;

    /// Waits until this process leads, publishing `address` as the leader's control address
    /// for workers and clients to find.
    fn campaign<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Term, HaError>>;

    /// Gives leadership up at once (revoking the lease, so a standby need not wait for it to
    /// expire); this process is deposed until it campaigns again.
    fn resign(&self) -> BoxFuture<'_, ()>;

    /// Turns true when leadership is lost (the lease expired or could not be renewed in time).
    /// Before a campaign won, it is false.
    fn deposed(&self) -> watch::Receiver<bool>;

    /// The current leader's published address, if any leads.
    fn leader(&self) -> BoxFuture<'_, Result<Option<String>, HaError>>;

    /// Applies `puts` and `deletes` (keys relative to the cluster's prefix) at once, only if
    /// this process still leads.
    fn write(&self, puts: Vec<(String, Vec<u8>)>, deletes: Vec<String>) -> BoxFuture<'_, Result<(), HaError>>;

    /// Whether leadership is still certain now: false once the last renewal the store
    /// acknowledged is too old, even before the task that notices it has run (a process
    /// woken from a pause answers nobody as the leader). Checked before answering peers;
    /// durable effects are fenced regardless.
    fn holds(&self) -> bool {
        !*self.deposed().borrow()
    }

    /// Every entry under `prefix` (relative), in key order.
    fn read<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Entries, HaError>>;
}

/// The key of job `id`'s record.
pub fn job_key(id: &str) -> String {
    format!("jobs/{id}")
}

/// The prefix of job `id`'s completed checkpoint entries.
pub fn checkpoint_prefix(job: &str) -> String {
    format!("ckpt/{job}/")
}

/// The key of completed checkpoint `checkpoint` of job `job` (fixed width: key order is id
/// order).
pub fn checkpoint_key(job: &str, checkpoint: u64) -> String {
    format!("ckpt/{job}/{checkpoint:020}")
}

/// The key holding the highest epoch that ever led.
pub const MAX_EPOCH_KEY: &str = "meta/max_epoch";

/// Checks a freshly won epoch against the highest recorded one and records it (fenced).
pub async fn claim_epoch(ha: &dyn HaBackend, epoch: u64) -> Result<(), HaError> {
    let stored = ha.read(MAX_EPOCH_KEY).await?;
    if let Some((_, v)) = stored.iter().find(|(k, _)| k == MAX_EPOCH_KEY) {
        let text = std::str::from_utf8(v).unwrap_or("");
        let old: u64 = text.parse().map_err(|_| HaError::Corrupt {
            key: MAX_EPOCH_KEY.into(),
            reason: format!("not an epoch: {text:?}"),
        })?;
        if old >= epoch {
            return Err(HaError::Inconsistent(format!(
                "this term's epoch {epoch} is not above the highest recorded epoch {old}: the store's revisions went backwards (was etcd restored without --bump-revision?)"
            )));
        }
    }
    ha.write(
        vec![(MAX_EPOCH_KEY.into(), format!("{epoch:020}").into_bytes())],
        vec![],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[real_tokio::test]
    async fn an_epoch_not_above_the_recorded_one_is_refused() {
        let ha = MemoryHa::new(0);
        claim_epoch(&ha, 5).await.unwrap();
        let e = claim_epoch(&ha, 5).await.unwrap_err();
        assert!(matches!(e, HaError::Inconsistent(_)), "{e}");
        assert!(e.to_string().contains("--bump-revision"), "{e}");
        claim_epoch(&ha, 7).await.unwrap();
        ha.write(vec![(MAX_EPOCH_KEY.into(), b"seven".to_vec())], vec![])
            .await
            .unwrap();
        assert!(matches!(claim_epoch(&ha, 9).await, Err(HaError::Corrupt { .. })));
    }
}
