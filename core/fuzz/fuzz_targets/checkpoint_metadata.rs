//! A checkpoint's or savepoint's `_metadata` off disk: decoding never panics, and what
//! decodes encodes back to the same metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::checkpoint::CheckpointMetadata;

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = CheckpointMetadata::decode("_metadata", data) {
        let back = CheckpointMetadata::decode("_metadata", &meta.encode()).expect("round trip");
        assert_eq!(back, meta);
    }
});
