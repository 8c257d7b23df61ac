//! Checkpoint and savepoint files whose header and checksum are valid but whose contents are
//! wrong, as a bug or a hostile writer could seal them (the fuzz targets
//! `checkpoint_metadata_sealed` and `state_file_sealed` explore the same ground at random;
//! these are the cases worth keeping): every one is refused naming the file and the problem,
//! without large allocations, and a refused savepoint is never half deleted.

use bytes::Bytes;
use sluice_core::checkpoint::savepoint::{dispose_savepoint, load_savepoint, write_savepoint};
use sluice_core::checkpoint::{
    CheckpointMetadata, CheckpointStorage, OperatorStateMeta, StateFileMeta, METADATA_FORMAT_VERSION,
};
use sluice_core::error::CheckpointError;
use sluice_core::state::blob::{BlobStore, MemoryStore};
use sluice_core::state::{key_group_for, KeyGroupRange, RestoredState, StateWriter, STATE_FORMAT_VERSION};

/// Header and crc around `body`, as the writers produce them.
fn seal(magic: &[u8; 8], version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn file(subtask: u32, path: &str, bytes: &[u8]) -> StateFileMeta {
    StateFileMeta {
        subtask,
        path: path.into(),
        size: bytes.len() as u64,
        crc32: crc32fast::hash(bytes),
        shared: Vec::new(),
    }
}

fn metadata(parallelism: u32, files: Vec<StateFileMeta>) -> CheckpointMetadata {
    CheckpointMetadata {
        job_name: "j".into(),
        checkpoint_id: 1,
        triggered_at_ms: 0,
        completed_at_ms: 1,
        max_parallelism: 128,
        operators: vec![OperatorStateMeta {
            key: "count".into(),
            name: "Count".into(),
            parallelism,
            files,
        }],
    }
}

/// A state file with one entry of `key`.
fn state_with(key: u64) -> Vec<u8> {
    let mut w = StateWriter::new(128);
    let t = w.table("counts");
    w.write_keyed(t, &key, &1u64).unwrap();
    w.finish().unwrap()
}

fn corrupt_message(r: Result<CheckpointMetadata, CheckpointError>) -> String {
    match r {
        Err(CheckpointError::Corrupt(m)) => m,
        other => panic!("expected a corrupt-metadata error, got {other:?}"),
    }
}

#[test]
fn metadata_that_would_restore_wrongly_is_refused() {
    let s = state_with(1);
    let twice = metadata(2, vec![file(0, "count/0.state", &s), file(1, "count/0.state", &s)]);
    let beyond = metadata(2, vec![file(2, "count/2.state", &s)]);
    let same_subtask = metadata(2, vec![file(0, "count/0.state", &s), file(0, "count/1.state", &s)]);
    let mut no_groups = metadata(1, vec![]);
    no_groups.max_parallelism = 0;
    let mut duplicate_op = metadata(1, vec![]);
    duplicate_op.operators.push(duplicate_op.operators[0].clone());
    for (meta, expect) in [
        (twice, "named twice"),
        (beyond, "beyond its parallelism"),
        (same_subtask, "subtask 0 twice"),
        (no_groups, "max parallelism 0"),
        (duplicate_op, "'count' is empty or appears twice"),
    ] {
        let m = corrupt_message(CheckpointMetadata::decode("ck/_metadata", &meta.encode()));
        assert!(m.contains("'ck/_metadata'") && m.contains(expect), "{m}");
    }
}

#[test]
fn paths_leaving_the_directory_are_refused() {
    let s = state_with(1);
    for path in [
        "../x.state",
        "/etc/passwd",
        "a//b",
        "./a",
        "a/..",
        "a\\..\\b",
        "",
        "a\0b",
    ] {
        let meta = metadata(1, vec![file(0, path, &s)]);
        let m = corrupt_message(CheckpointMetadata::decode("_metadata", &meta.encode()));
        assert!(m.contains("not a plain relative path"), "{path:?}: {m}");
    }
}

#[test]
fn huge_length_claims_fail_without_allocating() {
    // A body that claims 2^61 operators after a short job name: bincode would have to
    // allocate for it if it trusted the length.
    let mut body = Vec::new();
    body.extend_from_slice(&1u64.to_le_bytes());
    body.push(b'j');
    body.extend_from_slice(&[0u8; 8 * 3]);
    body.extend_from_slice(&128u32.to_le_bytes());
    body.extend_from_slice(&(1u64 << 61).to_le_bytes());
    let sealed = seal(b"SLCMETA1", METADATA_FORMAT_VERSION, &body);
    let m = corrupt_message(CheckpointMetadata::decode("_metadata", &sealed));
    assert!(m.contains("undecodable"), "{m}");

    // A state file whose only key group's entry says its key is 4 GiB long.
    let mut entry = 0u16.to_le_bytes().to_vec();
    entry.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut state = Vec::new();
    for part in [&1u64.to_le_bytes()[..], &1u64.to_le_bytes(), b"t"] {
        state.extend_from_slice(part); // tables: ["t"]
    }
    state.extend_from_slice(&1u64.to_le_bytes()); // one key group
    state.extend_from_slice(&0u32.to_le_bytes());
    state.extend_from_slice(&(entry.len() as u64).to_le_bytes());
    state.extend_from_slice(&entry);
    state.extend_from_slice(&0u64.to_le_bytes()); // no operator state
    state.extend_from_slice(&1u64.to_le_bytes()); // types: [""]
    state.extend_from_slice(&0u64.to_le_bytes());
    let sealed = seal(b"SLCSTATE", STATE_FORMAT_VERSION, &state);
    let mut restored = RestoredState::empty();
    restored
        .add_file("op/0.state", &sealed, KeyGroupRange::for_subtask(128, 1, 0))
        .expect("the body itself is well formed");
    let err = restored.for_each_keyed(|_| Ok(())).unwrap_err();
    assert!(err.to_string().contains("cut short"), "{err}");
}

#[tokio::test]
async fn a_state_file_with_another_subtasks_key_groups_is_refused() {
    // Subtask 0 of 2 owns key groups 0..=63; find a key of subtask 1's.
    let key = (0u64..).find(|k| key_group_for(k, 128).0 >= 64).unwrap();
    let s = state_with(key);
    let store = MemoryStore::new();
    store
        .put_if_absent("count/0.state", Bytes::from(s.clone()))
        .await
        .unwrap();
    let meta = metadata(2, vec![file(0, "count/0.state", &s)]);
    store
        .put_if_absent("_metadata", Bytes::from(meta.encode()))
        .await
        .unwrap();
    let err = load_savepoint(&store).await.unwrap_err().to_string();
    assert!(
        err.contains("'count/0.state' holds key group") && err.contains("subtask 0 of 2"),
        "{err}"
    );
}

#[tokio::test]
async fn dispose_of_a_savepoint_naming_outside_files_deletes_nothing() {
    let store = MemoryStore::new();
    let s = state_with(1);
    store
        .put_if_absent("count/0.state", Bytes::from(s.clone()))
        .await
        .unwrap();
    let meta = metadata(1, vec![file(0, "count/0.state", &s), file(1, "../other/_metadata", &s)]);
    let mut meta = meta;
    meta.operators[0].parallelism = 2;
    store
        .put_if_absent("_metadata", Bytes::from(meta.encode()))
        .await
        .unwrap();
    let err = dispose_savepoint(&store).await.unwrap_err().to_string();
    assert!(err.contains("not a plain relative path"), "{err}");
    assert_eq!(
        store.paths(),
        vec!["_metadata".to_string(), "count/0.state".to_string()]
    );
}

#[tokio::test]
async fn a_damaged_checkpoint_file_is_not_copied_into_a_savepoint() {
    let store = std::sync::Arc::new(MemoryStore::new());
    let ck = CheckpointStorage::new(store.clone(), "j");
    let f = ck
        .write_state(1, "count", 0, (state_with(1), Vec::new()))
        .await
        .unwrap();
    let path = format!("{}{}", ck.dir(1), f.path);
    let meta = metadata(1, vec![f]);
    ck.commit(&meta).await.unwrap();
    store.corrupt(&path, |b| b[30] ^= 1).unwrap();
    let target = MemoryStore::new();
    let err = write_savepoint(&ck, &meta, &target, "sp")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains(&path) && err.contains("does not match"), "{err}");
    assert!(
        target.paths().iter().all(|p| !p.ends_with("_metadata")),
        "{:?}",
        target.paths()
    );
}
