//! Keyed state for Sluice: key groups, a stable key hash, and the per-key state tables that
//! keyed operators read and write.
//!
//! Keyed state is partitioned into *key groups*, the unit in which state moves when a job is
//! rescaled: a key belongs to key group `hash(key) % max_parallelism`, and each parallel
//! subtask owns one contiguous range of key groups ([`KeyGroupRange::for_subtask`]). The hash
//! is [`stable_hash`], which does not change between runs, platforms or releases, so a key
//! lands in the same key group when a checkpoint is restored elsewhere.
//!
//! ```
//! use sluice_state::{key_group_for, KeyGroupRange};
//! let kg = key_group_for(&"alice", 128);
//! let owner = (0..4).find(|&i| KeyGroupRange::for_subtask(128, 4, i).contains(kg)).unwrap();
//! assert_eq!(owner, kg.subtask(128, 4));
//! ```

mod cow_map;
mod error;
mod key_group;
mod keyed_hot;
mod keyed_state;
mod keyed_tiered;
pub mod rng;
mod snapshot;
mod stable_hash;

pub use cow_map::{CowMap, FrozenMap};
pub use error::StateError;
pub use key_group::{key_group_for, KeyGroup, KeyGroupRange, DEFAULT_MAX_PARALLELISM, MAX_MAX_PARALLELISM};
pub use keyed_state::{KeyedSnapshot, KeyedStateStore, ListState, MapState, StateKey, StateValue, ValueState};
pub use snapshot::{check_types, KeyedEntry, RestoredState, StateFile, StateWriter, STATE_FORMAT_VERSION};
pub use stable_hash::{stable_hash, StableHasher};

pub mod blob;
pub mod tiered;
pub use blob::{delete_prefix, BlobError, BlobStore, FaultConfig, LocalFsStore, MemoryStore};
