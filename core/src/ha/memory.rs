//! The standalone backend: one coordinator, always the leader, state in memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sluice_state::blob::BoxFuture;
use tokio::sync::watch;

use super::{Entries, HaBackend, HaError, Term};
use crate::sync::LockExt;

/// Always the leader (epoch 1); its store lives and dies with the process.
#[derive(Debug)]
pub struct MemoryHa {
    entries: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    epoch: u64,
    address: Mutex<Option<String>>,
    job_id_prefix: u64,
    deposed: watch::Sender<bool>,
}

impl MemoryHa {
    /// A standalone backend whose job ids start with `job_id_prefix` (the coordinator's start
    /// time, so ids stay unique across restarts of a standalone coordinator).
    pub fn new(job_id_prefix: u64) -> Self {
        MemoryHa {
            entries: Arc::default(),
            epoch: 1,
            address: Mutex::default(),
            job_id_prefix,
            deposed: watch::Sender::new(false),
        }
    }

    /// A successor's view of the same store, leading the next epoch (tests of a takeover:
    /// depose this one first).
    pub fn successor(&self, job_id_prefix: u64) -> Self {
        MemoryHa {
            entries: self.entries.clone(),
            epoch: self.epoch + 1,
            address: Mutex::default(),
            job_id_prefix,
            deposed: watch::Sender::new(false),
        }
    }

    /// Ends this backend's leadership: later writes fail as [`HaError::Deposed`] (tests of
    /// what a deposed coordinator does).
    pub fn depose(&self) {
        self.deposed.send_replace(true);
    }
}

impl HaBackend for MemoryHa {
    fn mode(&self) -> &'static str {
        "standalone"
    }

    fn campaign<'a>(&'a self, address: &'a str) -> BoxFuture<'a, Result<Term, HaError>> {
        *self.address.locked() = Some(address.to_string());
        self.deposed.send_replace(false);
        let term = Term {
            epoch: self.epoch,
            job_id_prefix: self.job_id_prefix,
        };
        Box::pin(async move { Ok(term) })
    }

    fn resign(&self) -> BoxFuture<'_, ()> {
        self.depose();
        Box::pin(async {})
    }

    fn deposed(&self) -> watch::Receiver<bool> {
        self.deposed.subscribe()
    }

    fn leader(&self) -> BoxFuture<'_, Result<Option<String>, HaError>> {
        let address = self.address.locked().clone();
        Box::pin(async move { Ok(address) })
    }

    fn write(&self, puts: Vec<(String, Vec<u8>)>, deletes: Vec<String>) -> BoxFuture<'_, Result<(), HaError>> {
        let result = if *self.deposed.borrow() {
            Err(HaError::Deposed("deposed by a test".into()))
        } else {
            let mut entries = self.entries.locked();
            for (k, v) in puts {
                entries.insert(k, v);
            }
            for k in deletes {
                entries.remove(&k);
            }
            Ok(())
        };
        Box::pin(async move { result })
    }

    fn read<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Entries, HaError>> {
        let found = self
            .entries
            .locked()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Box::pin(async move { Ok(found) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[real_tokio::test]
    async fn writes_are_read_back_by_prefix_and_refused_once_deposed() {
        let ha = MemoryHa::new(7);
        let term = ha.campaign("a:1").await.unwrap();
        assert_eq!((term.epoch, term.job_id_prefix), (1, 7));
        ha.write(
            vec![("jobs/a".into(), b"1".to_vec()), ("jobt".into(), b"2".to_vec())],
            vec![],
        )
        .await
        .unwrap();
        assert_eq!(
            ha.read("jobs/").await.unwrap(),
            vec![("jobs/a".to_string(), b"1".to_vec())]
        );
        ha.depose();
        assert!(*ha.deposed().borrow());
        let refused = ha.write(vec![], vec!["jobs/a".into()]).await.unwrap_err();
        assert!(matches!(refused, HaError::Deposed(_)));
        assert_eq!(
            ha.read("jobs/").await.unwrap().len(),
            1,
            "a refused write changes nothing"
        );
    }
}
