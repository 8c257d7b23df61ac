//! A savepoint directory off disk: a `_metadata` and the state file it may name, both from
//! the fuzzer. Loading and checking it never panics and never reads outside the directory.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice_core::checkpoint::savepoint::load_savepoint;
use sluice_state::blob::{BlobStore, MemoryStore};

fuzz_target!(|data: &[u8]| {
    // The first byte splits the input between `_metadata` and one state file.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize * rest.len()) / 255;
    let (meta, state) = rest.split_at(at.min(rest.len()));
    let store = Arc::new(MemoryStore::new());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        store
            .put_if_absent("_metadata", Bytes::copy_from_slice(meta))
            .await
            .expect("put");
        store
            .put_if_absent("op/0.state", Bytes::copy_from_slice(state))
            .await
            .expect("put");
        let _ = load_savepoint(store.as_ref()).await;
    });
});
