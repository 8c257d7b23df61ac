//! Bytes off a data or control connection: decoding never panics, never allocates past the
//! frame limit, and a frame that decodes encodes back to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_transport::wire::{decode_frame, encode_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((msg, used))) = decode_frame(data) {
        assert!(used <= data.len());
        let again = encode_frame(&msg).expect("a decoded frame fits the limit");
        let (back, _) = decode_frame(&again).expect("re-encoded").expect("whole");
        assert_eq!(back, msg);
    }
});
