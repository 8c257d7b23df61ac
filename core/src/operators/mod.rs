//! The built-in operators behind the DataStream API.

pub(crate) mod keyed_process;
pub(crate) mod keyed_reduce;
pub(crate) mod stateless;

use sluice_state::{KeyGroupRange, KeyedEntry, KeyedStateStore, RestoredState, StateError, StateKey};

use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::state_backend::StateBackend;

/// Puts `store` in the backend `ctx` names (before any state is registered or restored).
pub(crate) fn use_backend<K: StateKey>(store: &mut KeyedStateStore<K>, ctx: &OperatorContext) {
    if let StateBackend::Tiered(env) = &ctx.state_backend {
        let table = env.table();
        crate::state_backend::register_table(ctx.metrics.group(), table.gauges());
        store.use_tiered(table, ctx.max_parallelism, owned_range(ctx));
    }
}

/// A failed fetch of tiered state: a damaged run fails the job for good (a restart would read
/// the same bytes again), naming the file; anything else (a store that failed) is retried.
pub(crate) fn fetch_err(e: StateError) -> OperatorError {
    match e {
        StateError::Corrupt(why) => OperatorError::Unrecoverable(why),
        other => other.into(),
    }
}

/// Fetches what a call reading `keys` needs (tiered state): unpins the last call's blocks,
/// keeps the memory table within its budget (between batches, and between chunks of timers
/// on a large watermark jump), then fetches the blocks `keys` can be in.
pub(crate) async fn fetch_keys<K: StateKey>(store: &mut KeyedStateStore<K>, keys: &[K]) -> Result<(), OperatorError> {
    store.release();
    store.maintain().await.map_err(fetch_err)?;
    store.prefetch(keys).await.map_err(fetch_err)
}

/// Writes the memory table out before a snapshot (tiered state). A failed write leaves the
/// state in memory: the snapshot then declines the checkpoint saying why, and processing
/// goes on.
pub(crate) async fn flush_for_snapshot<K: StateKey>(store: &mut KeyedStateStore<K>, log: &slog::Logger) {
    store.release();
    if let Err(e) = store.flush().await {
        slog::warn!(log, "tiered state could not be written out for a checkpoint"; "error" => %e);
    }
}

/// The key groups subtask `ctx` owns.
pub(crate) fn owned_range(ctx: &OperatorContext) -> KeyGroupRange {
    KeyGroupRange::for_subtask(ctx.max_parallelism, ctx.parallelism, ctx.subtask)
}

/// Restores the tiered manifests among `state`'s operator state; a keyed operator has no
/// other operator state, so anything else is refused.
pub(crate) fn restore_manifests<K: StateKey>(
    store: &mut KeyedStateStore<K>,
    state: &RestoredState,
    ctx: &OperatorContext,
) -> Result<(), OperatorError> {
    for bytes in state.operator_state() {
        // What a manifest can be refused for (another backend, changed types, another max
        // parallelism) stays so after a restart: refused at once, not retried forever.
        let restored = store
            .restore_manifest(&ctx.vertex_name, bytes, owned_range(ctx))
            .map_err(|e| OperatorError::Unrecoverable(format!("operator '{}': {e}", ctx.vertex_name)))?;
        if !restored {
            return Err(OperatorError::user(format!(
                "keyed operator '{}' found operator state it does not write in its snapshot",
                ctx.vertex_name
            )));
        }
    }
    Ok(())
}

/// Feeds every keyed entry of `state` to `restore`, which returns whether it knew the entry's
/// table; an unknown table is an error naming it.
pub(crate) fn restore_keyed(
    state: &RestoredState,
    mut restore: impl FnMut(&KeyedEntry<'_>) -> Result<bool, StateError>,
) -> Result<(), OperatorError> {
    state
        .for_each_keyed(|e| {
            if restore(&e)? {
                Ok(())
            } else {
                Err(StateError::UnknownState(e.table.to_string()))
            }
        })
        .map_err(OperatorError::from)
}
