//! What each operator subtask restores from a checkpoint.

use std::sync::Arc;

use sluice_state::{KeyGroupRange, RestoredState};

use crate::checkpoint::LoadedCheckpoint;
use crate::error::InvalidSetting;
use crate::graph::{JobGraph, VertexId};

/// The checkpoint key of a vertex: its uid, or its position and name.
pub(crate) fn operator_key(graph: &JobGraph, v: VertexId) -> String {
    match &graph.vertices[v].uid {
        Some(uid) => uid.clone(),
        None => format!(
            "v{v}-{}",
            crate::checkpoint::storage::path_segment(&graph.vertices[v].name)
        ),
    }
}

/// Checks that a checkpoint fits the job: same number of key groups, and every operator with
/// state still exists (unless `allow_non_restored`: then their state is dropped).
pub(crate) fn check_compatible(
    graph: &JobGraph,
    ck: &LoadedCheckpoint,
    allow_non_restored: bool,
) -> Result<(), String> {
    let m = &ck.metadata;
    if m.max_parallelism != graph.max_parallelism {
        return Err(format!(
            "it was taken with max parallelism {}, the job has {}; the number of key groups cannot change",
            m.max_parallelism, graph.max_parallelism
        ));
    }
    let keys: Vec<String> = (0..graph.vertices.len()).map(|v| operator_key(graph, v)).collect();
    for op in &m.operators {
        if !keys.contains(&op.key) && !allow_non_restored {
            return Err(format!(
                "it holds state for operator '{}' ({}), which the job does not have; to drop that state, start with --allow-non-restored-state",
                op.key, op.name
            ));
        }
    }
    Ok(())
}

/// Operators with state in `ck` that the job does not have.
pub(crate) fn unmatched_operators(graph: &JobGraph, ck: &LoadedCheckpoint) -> Vec<String> {
    let keys: Vec<String> = (0..graph.vertices.len()).map(|v| operator_key(graph, v)).collect();
    ck.metadata
        .operators
        .iter()
        .filter(|o| !keys.contains(&o.key))
        .map(|o| o.key.clone())
        .collect()
}

/// The state of subtask `subtask` of `parallelism` of the operator with `key`.
pub(crate) fn restored_for(
    ck: &LoadedCheckpoint,
    key: &str,
    subtask: u32,
    parallelism: u32,
    max_parallelism: u32,
) -> Result<RestoredState, String> {
    let Some(op) = ck.metadata.operators.iter().find(|o| o.key == key) else {
        return Ok(RestoredState::empty());
    };
    let mut files = Vec::with_capacity(op.files.len());
    for f in &op.files {
        let file = ck
            .files
            .get(&f.path)
            .ok_or_else(|| format!("state file '{}' of operator '{key}' was not loaded", f.path))?;
        files.push((f.subtask, Arc::clone(file)));
    }
    let operator: Vec<Vec<u8>> = if op.parallelism == parallelism {
        files
            .iter()
            .filter(|(s, _)| *s == subtask)
            .flat_map(|(_, f)| f.operator_state().iter().cloned())
            .collect()
    } else {
        // At another parallelism every subtask gets all of the operator list state (Flink's
        // union redistribution): a sink's pre-committed transactions must each be committed
        // by someone, and commits are idempotent, so all subtasks commit all of them and
        // none aborts a transaction another one was handed.
        files
            .iter()
            .flat_map(|(_, f)| f.operator_state().iter().cloned())
            .collect()
    };
    let range = KeyGroupRange::for_subtask(max_parallelism, parallelism, subtask);
    Ok(RestoredState::new(
        files.into_iter().map(|(_, f)| f).collect(),
        range,
        operator,
    ))
}

/// Renames operators of a savepoint (old uid → new uid) before it is matched with the job.
pub(crate) fn map_uids(
    ck: &mut LoadedCheckpoint,
    mapping: &std::collections::BTreeMap<String, String>,
) -> Result<(), String> {
    for (old, new) in mapping {
        if ck.metadata.operators.iter().any(|o| &o.key == new) {
            return Err(format!(
                "uid mapping {old}={new}: the savepoint already has an operator '{new}'"
            ));
        }
        let Some(op) = ck.metadata.operators.iter_mut().find(|o| &o.key == old) else {
            let known: Vec<&str> = ck.metadata.operators.iter().map(|o| o.key.as_str()).collect();
            return Err(format!(
                "uid mapping {old}={new}: the savepoint has no operator '{old}' (it has: {})",
                known.join(", ")
            ));
        };
        op.key = new.clone();
    }
    Ok(())
}

/// Parses `old=new[,old=new...]` (the `--uid-mapping` option).
pub fn parse_uid_mapping(s: &str) -> Result<std::collections::BTreeMap<String, String>, InvalidSetting> {
    let mut map = std::collections::BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (old, new) = pair
            .split_once('=')
            .ok_or_else(|| InvalidSetting(format!("uid mapping '{pair}' is not OLD=NEW")))?;
        let (old, new) = (old.trim(), new.trim());
        if old.is_empty() || new.is_empty() {
            return Err(InvalidSetting(format!("uid mapping '{pair}' is not OLD=NEW")));
        }
        if map.insert(old.to_string(), new.to_string()).is_some() {
            return Err(InvalidSetting(format!("uid mapping names '{old}' twice")));
        }
    }
    Ok(map)
}
