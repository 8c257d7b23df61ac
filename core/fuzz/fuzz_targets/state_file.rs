//! A state file off disk: decoding never panics (whatever its checksum, length fields and
//! key-group index claim).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_state::StateFile;

fuzz_target!(|data: &[u8]| {
    let _ = StateFile::decode("op/0.state", data);
});
