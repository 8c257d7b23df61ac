//! Savepoints stay canonical: a subtask's state file whose keyed state is in tiered runs is
//! rewritten with the entries themselves, grouped by key group, as the heap backend writes
//! them. The savepoint is then self-contained (it names no run of the checkpoint store) and
//! restores into either backend, at any parallelism.

use std::sync::Arc;

use bytes::Bytes;

use super::{BlockCache, Manifest, TableConfig, TieredTable};
use crate::blob::BlobStore;
use crate::{KeyGroupRange, RestoredState, StateError, StateFile, StateWriter};

/// Above every stored key: key groups are below 32768, so a key's first byte is below 0x80.
const PAST_ALL_KEYS: &[u8] = &[0x80];

/// The canonical form of state file `name` (its `bytes`), or `None` if it holds no tiered
/// manifest (it is canonical already). Reads the runs it names from `store`.
pub async fn to_canonical(store: Arc<dyn BlobStore>, name: &str, bytes: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
    let file = StateFile::decode(name, bytes)?;
    let manifests: Vec<Manifest> = file
        .operator_state()
        .iter()
        .filter(|op| Manifest::is_manifest(op))
        .map(|op| Manifest::decode(name, op))
        .collect::<Result<_, _>>()?;
    let Some(max_parallelism) = manifests.first().map(|m| m.max_parallelism) else {
        return Ok(None);
    };
    let mut w = StateWriter::new(max_parallelism);
    for op in file.operator_state().iter().filter(|op| !Manifest::is_manifest(op)) {
        w.add_operator_state_raw(op.clone());
    }
    let all = KeyGroupRange {
        start: 0,
        end: max_parallelism - 1,
    };
    // Entries kept beside the manifest (timers) stay as they are.
    let canonical = RestoredState::new(vec![Arc::new(file)], all, Vec::new());
    canonical.for_each_keyed(|e| {
        let t = w.typed_table(e.table, e.types);
        w.write_keyed_raw(t, e.key_group, e.key, e.value)
    })?;
    for m in &manifests {
        write_runs(&store, m, &mut w).await?;
    }
    w.finish().map(Some)
}

/// Writes the current entries of the runs `m` names into `w`.
async fn write_runs(store: &Arc<dyn BlobStore>, m: &Manifest, w: &mut StateWriter) -> Result<(), StateError> {
    // A cache of its own: a conversion reads every block once and must not evict the running
    // job's blocks.
    let mut table = TieredTable::new(
        Arc::clone(store),
        "",
        "canonical",
        TableConfig::default(),
        BlockCache::new(8 << 20),
    );
    let runs: Vec<_> = m
        .runs_for(0, m.max_parallelism - 1)
        .map(|(r, v)| (r.file.clone(), v))
        .collect();
    table.attach(&runs).await?;
    for (key, value) in table.scan(&[], PAST_ALL_KEYS).await? {
        let (kg, id, user_key) = split_key(&key)?;
        let state = m.states.iter().find(|s| s.id == id).ok_or_else(|| {
            StateError::Corrupt(format!(
                "a tiered run holds state id {id}, which its manifest does not list"
            ))
        })?;
        let t = w.typed_table(&state.name, &state.types);
        w.write_keyed_raw(t, kg, user_key, &value)?;
    }
    Ok(())
}

/// `[key group u16][state id u32][key]` apart.
fn split_key(key: &Bytes) -> Result<(u32, u32, &[u8]), StateError> {
    if key.len() < 6 {
        return Err(StateError::Corrupt(format!(
            "a tiered run holds a key of {} bytes",
            key.len()
        )));
    }
    let kg = u32::from(u16::from_be_bytes([key[0], key[1]]));
    let id = u32::from_be_bytes([key[2], key[3], key[4], key[5]]);
    Ok((kg, id, &key[6..]))
}
