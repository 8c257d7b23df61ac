//! The built-in operators behind the DataStream API.

pub(crate) mod keyed_process;
pub(crate) mod keyed_reduce;
pub(crate) mod stateless;

use sluice_state::{KeyedEntry, RestoredState, StateError};

use crate::error::OperatorError;

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
