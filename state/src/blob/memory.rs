//! [`MemoryStore`]: objects in memory, with seeded fault and latency injection.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;

use super::{validate_path, BlobError, BlobStore, BoxFuture};
use crate::rng::SplitMix64;

/// Which faults and how much latency a [`MemoryStore`] injects.
///
/// Every decision comes from a SplitMix64 generator seeded with `seed`, drawn in the order the
/// operations are called, so the same seed and the same sequence of calls give the same
/// faults (under madsim, the same simulation seed gives the same sequence of calls). The
/// default injects nothing.
#[derive(Debug, Clone, Default)]
pub struct FaultConfig {
    /// Seed of the generator that decides faults and latencies.
    pub seed: u64,
    /// Probability that a put fails before storing anything.
    pub put_error_rate: f64,
    /// Probability that a put stores the object (if absent), then returns
    /// [`BlobError::Injected`] anyway: an ambiguous commit, as when the response of a
    /// successful write is lost.
    pub put_ambiguous_rate: f64,
    /// Probability that a get fails.
    pub get_error_rate: f64,
    /// Probability that a list fails.
    pub list_error_rate: f64,
    /// Probability that a delete fails (without deleting).
    pub delete_error_rate: f64,
    /// Each operation first sleeps a random `0..=max_latency_ms` milliseconds
    /// (`tokio::time::sleep`, simulated time under madsim).
    pub max_latency_ms: u64,
}

impl FaultConfig {
    /// Panics, naming the field, unless every rate is a probability and a put's two rates
    /// add up to at most 1.
    fn check(&self) {
        for (name, rate) in [
            ("put_error_rate", self.put_error_rate),
            ("put_ambiguous_rate", self.put_ambiguous_rate),
            ("get_error_rate", self.get_error_rate),
            ("list_error_rate", self.list_error_rate),
            ("delete_error_rate", self.delete_error_rate),
        ] {
            assert!(
                (0.0..=1.0).contains(&rate),
                "FaultConfig::{name} must be between 0 and 1, got {rate}"
            );
        }
        let put = self.put_error_rate + self.put_ambiguous_rate;
        assert!(
            put <= 1.0,
            "FaultConfig::put_error_rate + put_ambiguous_rate must be at most 1, got {put}"
        );
    }
}

/// The four operations, as fault injection tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Put = 0,
    Get = 1,
    List = 2,
    Delete = 3,
}

impl Op {
    fn from_name(name: &str) -> Option<Op> {
        match name {
            "put" => Some(Op::Put),
            "get" => Some(Op::Get),
            "list" => Some(Op::List),
            "delete" => Some(Op::Delete),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::List => "list",
            Op::Delete => "delete",
        }
    }
}

/// What fault injection decided for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Fail before doing anything.
    Fail,
    /// Do the put, then report failure.
    Ambiguous,
}

/// In-memory store with injectable faults and latency, for tests and the simulation.
///
/// Objects live in a `BTreeMap` behind a mutex (never held across an `.await`). Faults come
/// from a seeded [`FaultConfig`] and from [`fail_next`](MemoryStore::fail_next); an operation
/// on an invalid path fails with [`BlobError::InvalidPath`] before any fault is drawn.
///
/// ```
/// use bytes::Bytes;
/// use sluice_state::blob::{BlobError, BlobStore, FaultConfig, MemoryStore};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::with_faults(FaultConfig { put_ambiguous_rate: 1.0, ..FaultConfig::default() });
/// let put = store.put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"m")).await;
/// assert!(matches!(put, Err(BlobError::Injected { op: "put", .. })));
/// assert_eq!(store.paths(), ["job/chk-1/_metadata"]); // committed all the same
///
/// store.set_faults(FaultConfig::default());
/// store.fail_next("get", 1);
/// assert!(store.get("job/chk-1/_metadata").await.is_err());
/// assert_eq!(store.get("job/chk-1/_metadata").await.unwrap(), "m");
/// assert_eq!(store.injected_faults(), 2);
/// # });
/// ```
pub struct MemoryStore {
    state: Mutex<State>,
}

struct State {
    objects: BTreeMap<String, Bytes>,
    faults: FaultConfig,
    rng: SplitMix64,
    /// Per [`Op`]: how many of the next operations fail regardless of the rates.
    fail_next: [u32; 4],
    injected: u64,
}

impl MemoryStore {
    /// An empty store that injects no faults and no latency.
    pub fn new() -> Self {
        Self::with_faults(FaultConfig::default())
    }

    /// An empty store that injects faults and latency as `config` says.
    ///
    /// # Panics
    /// If a rate in `config` is not between 0 and 1, or the two put rates add up to more than 1.
    pub fn with_faults(config: FaultConfig) -> Self {
        config.check();
        MemoryStore {
            state: Mutex::new(State {
                objects: BTreeMap::new(),
                rng: SplitMix64::new(config.seed),
                faults: config,
                fail_next: [0; 4],
                injected: 0,
            }),
        }
    }

    /// Replaces the fault configuration at runtime (e.g. turns faults off for a liveness
    /// phase) and reseeds the generator with `config.seed`. Pending
    /// [`fail_next`](MemoryStore::fail_next) counts stay.
    ///
    /// # Panics
    /// As [`with_faults`](MemoryStore::with_faults).
    pub fn set_faults(&self, config: FaultConfig) {
        config.check();
        let mut state = self.state();
        state.rng = SplitMix64::new(config.seed);
        state.faults = config;
    }

    /// Makes exactly the next `n` operations of kind `op` (`"put"`, `"get"`, `"list"` or
    /// `"delete"`) fail with [`BlobError::Injected`], whatever the rates; a failed put stores
    /// nothing. Replaces any count still pending for that kind; `n = 0` cancels it.
    ///
    /// # Panics
    /// If `op` is not one of the four names.
    pub fn fail_next(&self, op: &'static str, n: u32) {
        let op = Op::from_name(op)
            .unwrap_or_else(|| panic!("fail_next: unknown op '{op}', expected put, get, list or delete"));
        self.state().fail_next[op as usize] = n;
    }

    /// Mutates the stored bytes of `path` with `f` (e.g. truncate, flip a byte), to test that
    /// readers detect corruption. `Err(BlobError::NotFound)` if absent.
    pub fn corrupt(&self, path: &str, f: impl FnOnce(&mut Vec<u8>)) -> Result<(), BlobError> {
        validate_path(path)?;
        let mut state = self.state();
        let stored = state
            .objects
            .get_mut(path)
            .ok_or_else(|| BlobError::NotFound(path.to_owned()))?;
        let mut bytes = stored.to_vec();
        f(&mut bytes);
        *stored = Bytes::from(bytes);
        Ok(())
    }

    /// The object at `path`, if any (no latency, no faults: for a test's oracle).
    pub fn peek(&self, path: &str) -> Option<Bytes> {
        self.state().objects.get(path).cloned()
    }

    /// The paths of all stored objects, sorted (no latency, no faults).
    pub fn paths(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// How many faults were injected so far (failed and ambiguous operations).
    pub fn injected_faults(&self) -> u64 {
        self.state().injected
    }

    /// The state, also after a panic elsewhere while it was locked (every update to it is
    /// a single step, so it is never left half-done).
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Draws the latency and the fault of one `op`, sleeps, and returns the fault. Both are
    /// drawn before sleeping, so the draws follow the order in which operations are called.
    async fn inject(&self, op: Op) -> Fault {
        let (delay_ms, fault) = {
            let mut state = self.state();
            let state = &mut *state;
            let max_latency_ms = state.faults.max_latency_ms;
            let delay_ms = if max_latency_ms == 0 {
                0
            } else {
                state.rng.next_below(max_latency_ms.saturating_add(1))
            };
            let (fail_rate, ambiguous_rate) = match op {
                Op::Put => (state.faults.put_error_rate, state.faults.put_ambiguous_rate),
                Op::Get => (state.faults.get_error_rate, 0.0),
                Op::List => (state.faults.list_error_rate, 0.0),
                Op::Delete => (state.faults.delete_error_rate, 0.0),
            };
            let fail_next = &mut state.fail_next[op as usize];
            let fault = if *fail_next > 0 {
                *fail_next -= 1;
                Fault::Fail
            } else if fail_rate + ambiguous_rate > 0.0 {
                let draw = state.rng.next_f64();
                if draw < fail_rate {
                    Fault::Fail
                } else if draw < fail_rate + ambiguous_rate {
                    Fault::Ambiguous
                } else {
                    Fault::None
                }
            } else {
                Fault::None
            };
            if fault != Fault::None {
                state.injected += 1;
            }
            (delay_ms, fault)
        };
        if delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        }
        fault
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct("MemoryStore");
        // try_lock: formatting must not deadlock when the caller holds the lock (in corrupt).
        match self.state.try_lock() {
            Ok(state) => out
                .field("objects", &state.objects.len())
                .field("faults", &state.faults)
                .field("injected_faults", &state.injected),
            Err(_) => out.field("state", &"<locked>"),
        };
        out.finish()
    }
}

fn injected(op: Op, path: &str) -> BlobError {
    BlobError::Injected {
        op: op.name(),
        path: path.to_owned(),
    }
}

impl BlobStore for MemoryStore {
    fn put_if_absent<'a>(&'a self, path: &'a str, bytes: Bytes) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            let fault = self.inject(Op::Put).await;
            if fault == Fault::Fail {
                return Err(injected(Op::Put, path));
            }
            let stored = match self.state().objects.entry(path.to_owned()) {
                Entry::Vacant(entry) => {
                    entry.insert(bytes);
                    Ok(())
                }
                Entry::Occupied(_) => Err(BlobError::AlreadyExists(path.to_owned())),
            };
            match fault {
                Fault::Ambiguous => Err(injected(Op::Put, path)),
                Fault::None | Fault::Fail => stored,
            }
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            if self.inject(Op::Get).await != Fault::None {
                return Err(injected(Op::Get, path));
            }
            self.state()
                .objects
                .get(path)
                .cloned()
                .ok_or_else(|| BlobError::NotFound(path.to_owned()))
        })
    }

    /// A ranged read counts as a get for fault injection (a slow or failing store is slow or
    /// failing for blocks too).
    fn get_range<'a>(&'a self, path: &'a str, range: std::ops::Range<u64>) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move {
            let whole = self.get(path).await?;
            let (start, end) = super::check_range(path, &range, whole.len() as u64)?;
            Ok(whole.slice(start..end))
        })
    }

    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        Box::pin(async move { Ok(self.get(path).await?.len() as u64) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, BlobError>> {
        Box::pin(async move {
            if self.inject(Op::List).await != Fault::None {
                return Err(injected(Op::List, prefix));
            }
            Ok(self
                .state()
                .objects
                .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
                .map(|(path, _)| path)
                .take_while(|path| path.starts_with(prefix))
                .cloned()
                .collect())
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            if self.inject(Op::Delete).await != Fault::None {
                return Err(injected(Op::Delete, path));
            }
            self.state().objects.remove(path);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::contract::{self, rt};

    #[test]
    fn put_then_get_round_trips() {
        rt().block_on(contract::put_then_get_round_trips(&MemoryStore::new()));
    }

    #[test]
    fn second_put_is_already_exists_and_keeps_first_content() {
        rt().block_on(contract::second_put_is_already_exists_and_keeps_first(
            &MemoryStore::new(),
        ));
    }

    #[test]
    fn get_of_missing_object_is_not_found() {
        rt().block_on(contract::get_of_missing_object_is_not_found(&MemoryStore::new()));
        rt().block_on(contract::ranged_reads_and_head_agree_with_get(&MemoryStore::new()));
    }

    #[test]
    fn list_returns_sorted_paths_by_prefix() {
        rt().block_on(contract::list_returns_sorted_paths_by_prefix(&MemoryStore::new()));
    }

    #[test]
    fn delete_is_idempotent() {
        rt().block_on(contract::delete_is_idempotent(&MemoryStore::new()));
    }

    #[test]
    fn invalid_paths_are_rejected_with_reason() {
        rt().block_on(contract::invalid_paths_are_rejected_with_reason(&MemoryStore::new()));
    }

    #[test]
    fn fail_next_makes_exactly_the_next_n_ops_fail() {
        let store = MemoryStore::new();
        rt().block_on(async {
            store.fail_next("put", 2);
            for _ in 0..2 {
                let err = store.put_if_absent("a", Bytes::from_static(b"a")).await.unwrap_err();
                assert!(matches!(&err, BlobError::Injected { op: "put", path } if path == "a"));
                assert_eq!(err.to_string(), "injected fault: put of object 'a' failed");
                assert!(store.paths().is_empty(), "a failed put stores nothing");
                // Other kinds of operation are not affected.
                assert!(matches!(store.get("a").await, Err(BlobError::NotFound(_))));
            }
            store.put_if_absent("a", Bytes::from_static(b"a")).await.unwrap();
            assert_eq!(store.injected_faults(), 2);

            store.fail_next("get", 1);
            store.fail_next("list", 1);
            store.fail_next("delete", 3);
            assert!(matches!(
                store.get("a").await,
                Err(BlobError::Injected { op: "get", .. })
            ));
            assert_eq!(store.get("a").await.unwrap(), "a");
            assert!(matches!(
                store.list("").await,
                Err(BlobError::Injected { op: "list", .. })
            ));
            assert_eq!(store.list("").await.unwrap(), ["a"]);
            for _ in 0..3 {
                assert!(matches!(
                    store.delete("a").await,
                    Err(BlobError::Injected { op: "delete", .. })
                ));
            }
            assert_eq!(store.paths(), ["a"], "a failed delete deletes nothing");
            store.delete("a").await.unwrap();
            assert!(store.paths().is_empty());
            assert_eq!(store.injected_faults(), 2 + 1 + 1 + 3);

            store.fail_next("get", 5);
            store.fail_next("get", 0);
            assert!(matches!(store.get("a").await, Err(BlobError::NotFound(_))));
        });
    }

    #[test]
    fn invalid_paths_fail_before_any_fault_is_drawn() {
        let store = MemoryStore::new();
        rt().block_on(async {
            store.fail_next("get", 1);
            assert!(matches!(store.get("/a").await, Err(BlobError::InvalidPath { .. })));
            assert!(matches!(store.get("a").await, Err(BlobError::Injected { .. })));
            assert_eq!(store.injected_faults(), 1);
        });
    }

    #[test]
    #[should_panic(expected = "unknown op 'rename'")]
    fn fail_next_rejects_an_unknown_op() {
        MemoryStore::new().fail_next("rename", 1);
    }

    #[test]
    #[should_panic(expected = "FaultConfig::get_error_rate must be between 0 and 1")]
    fn a_rate_outside_zero_to_one_is_rejected() {
        MemoryStore::with_faults(FaultConfig {
            get_error_rate: 1.5,
            ..FaultConfig::default()
        });
    }

    #[test]
    fn ambiguous_put_stores_the_object_yet_returns_an_error() {
        let store = MemoryStore::with_faults(FaultConfig {
            put_ambiguous_rate: 1.0,
            ..FaultConfig::default()
        });
        rt().block_on(async {
            let err = store
                .put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"first"))
                .await
                .unwrap_err();
            assert!(matches!(err, BlobError::Injected { op: "put", .. }));
            assert_eq!(store.paths(), ["job/chk-1/_metadata"]);
            // Also ambiguous when the object exists: the response is lost, the object kept.
            let err = store
                .put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"second"))
                .await
                .unwrap_err();
            assert!(matches!(err, BlobError::Injected { op: "put", .. }));
            assert_eq!(store.injected_faults(), 2);

            store.set_faults(FaultConfig::default());
            assert_eq!(store.get("job/chk-1/_metadata").await.unwrap(), "first");
            // The retry a committer makes finds its earlier write.
            assert!(matches!(
                store
                    .put_if_absent("job/chk-1/_metadata", Bytes::from_static(b"first"))
                    .await,
                Err(BlobError::AlreadyExists(_))
            ));
        });
    }

    #[test]
    fn failing_put_rate_stores_nothing() {
        let store = MemoryStore::with_faults(FaultConfig {
            put_error_rate: 1.0,
            ..FaultConfig::default()
        });
        rt().block_on(async {
            assert!(store.put_if_absent("a", Bytes::new()).await.is_err());
            assert!(store.paths().is_empty());
        });
    }

    /// Runs a fixed mix of operations and records each outcome.
    async fn outcomes(config: FaultConfig) -> Vec<String> {
        let store = MemoryStore::with_faults(config);
        let mut out = Vec::new();
        for i in 0..400 {
            let path = format!("job/chk-{}/_metadata", i % 37);
            let outcome = match i % 4 {
                0 => store.put_if_absent(&path, Bytes::from(path.clone())).await.map(|_| ()),
                1 => store.get(&path).await.map(|_| ()),
                2 => store.list("job/").await.map(|_| ()),
                _ => store.delete(&path).await,
            };
            out.push(match outcome {
                Ok(()) => "ok".to_owned(),
                Err(BlobError::Injected { op, .. }) => format!("injected {op}"),
                Err(BlobError::NotFound(_)) => "not found".to_owned(),
                Err(BlobError::AlreadyExists(_)) => "exists".to_owned(),
                Err(e) => panic!("unexpected {e}"),
            });
        }
        // Ambiguous puts report "injected put" too, so every injected fault shows.
        let injected = out.iter().filter(|o| o.starts_with("injected")).count();
        assert_eq!(store.injected_faults(), injected as u64);
        out
    }

    #[test]
    fn fault_rates_with_a_fixed_seed_give_the_same_failures_twice() {
        let config = |seed| FaultConfig {
            seed,
            put_error_rate: 0.2,
            put_ambiguous_rate: 0.1,
            get_error_rate: 0.3,
            list_error_rate: 0.25,
            delete_error_rate: 0.15,
            max_latency_ms: 0,
        };
        let rt = rt();
        let first = rt.block_on(outcomes(config(42)));
        let second = rt.block_on(outcomes(config(42)));
        assert_eq!(first, second);
        for kind in ["ok", "injected put", "injected get", "injected list", "injected delete"] {
            assert!(first.iter().any(|o| o == kind), "no '{kind}' in {first:?}");
        }
        assert_ne!(first, rt.block_on(outcomes(config(43))), "the seed matters");
    }

    #[test]
    fn set_faults_turns_faults_off_at_runtime() {
        let store = MemoryStore::with_faults(FaultConfig {
            get_error_rate: 1.0,
            ..FaultConfig::default()
        });
        rt().block_on(async {
            store.put_if_absent("a", Bytes::from_static(b"a")).await.unwrap();
            assert!(store.get("a").await.is_err());
            store.set_faults(FaultConfig::default());
            assert_eq!(store.get("a").await.unwrap(), "a");
            assert_eq!(store.injected_faults(), 1);
        });
    }

    #[test]
    fn ops_sleep_the_seeded_latency() {
        let max_latency_ms = 4;
        let seed = 9;
        let store = MemoryStore::with_faults(FaultConfig {
            seed,
            max_latency_ms,
            ..FaultConfig::default()
        });
        // With no fault rates, each operation makes exactly one draw: its latency.
        let mut rng = SplitMix64::new(seed);
        let expected_ms: u64 = (0..10).map(|_| rng.next_below(max_latency_ms + 1)).sum();
        assert!(expected_ms > 0);
        rt().block_on(async {
            let start = tokio::time::Instant::now();
            for i in 0..10 {
                store.list(&format!("{i}")).await.unwrap();
            }
            assert!(start.elapsed() >= Duration::from_millis(expected_ms));
        });
    }

    #[test]
    fn corrupt_changes_what_get_returns() {
        let store = MemoryStore::new();
        rt().block_on(async {
            store.put_if_absent("a", Bytes::from_static(b"hello")).await.unwrap();
            store.corrupt("a", |b| b[0] ^= 0xff).unwrap();
            assert_eq!(store.get("a").await.unwrap(), &b"\x97ello"[..]);
            store.corrupt("a", |b| b.truncate(2)).unwrap();
            assert_eq!(store.get("a").await.unwrap(), &b"\x97e"[..]);
            assert!(matches!(
                store.corrupt("missing", |b| b.clear()),
                Err(BlobError::NotFound(p)) if p == "missing"
            ));
        });
    }

    #[test]
    fn debug_shows_counts_not_contents() {
        let store = MemoryStore::new();
        rt().block_on(store.put_if_absent("a", Bytes::from_static(b"secret")))
            .unwrap();
        let debug = format!("{store:?}");
        assert!(debug.contains("objects: 1"), "{debug}");
        assert!(!debug.contains("secret"), "{debug}");
    }
}
