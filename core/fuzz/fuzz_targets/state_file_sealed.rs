//! A state file whose header and checksum are valid but whose body is the fuzzer's: what a
//! bug or a hostile writer could leave behind. Decoding and reading every keyed entry never
//! panics and never allocates more than the body could describe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_state::{KeyGroupRange, RestoredState, STATE_FORMAT_VERSION};

/// Wraps `body` the way `StateWriter::finish` does, in format `version`.
fn seal(version: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 22);
    out.extend_from_slice(b"SLCSTATE");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the body's format: version 1 (no types) or the current one.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let version = if pick & 1 == 0 { 1 } else { STATE_FORMAT_VERSION };
    let mut restored = RestoredState::empty();
    let all = KeyGroupRange::for_subtask(128, 1, 0);
    if restored.add_file("op/0.state", &seal(version, body), all).is_ok() {
        let _ = restored.for_each_keyed(|e| {
            let _: Result<u64, _> = bincode::deserialize(e.value);
            let _: Result<String, _> = bincode::deserialize(e.key);
            Ok(())
        });
        for element in restored.operator_state() {
            let _: Result<Vec<String>, _> = bincode::deserialize(element);
        }
    }
});
