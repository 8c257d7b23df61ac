//! Checkpoint metadata whose header and checksum are valid but whose body is the fuzzer's:
//! decoding never panics or allocates past what the body describes, and what decodes encodes
//! back to the same metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::checkpoint::{CheckpointMetadata, METADATA_FORMAT_VERSION};

/// Wraps `body` the way `CheckpointMetadata::encode` does.
fn seal(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 22);
    out.extend_from_slice(b"SLCMETA1");
    out.extend_from_slice(&METADATA_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    if let Ok(meta) = CheckpointMetadata::decode("_metadata", &seal(data)) {
        let back = CheckpointMetadata::decode("_metadata", &meta.encode()).expect("round trip");
        assert_eq!(back, meta);
    }
});
