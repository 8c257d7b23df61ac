//! The wire format of cluster mode: length-prefixed FlatBuffers frames.
//!
//! A frame is a `u32` little-endian length followed by that many bytes of a FlatBuffer whose
//! root is `Frame` (schema: `transport/schema/frame.fbs`). Decoding never trusts the peer:
//! the length is checked against [`MAX_FRAME_BYTES`] before anything is allocated, the buffer
//! is run through the FlatBuffers verifier, the protocol version must be
//! [`PROTOCOL_VERSION`], and every required field must be present. Any violation is a
//! [`FrameError`]; the caller closes that connection and logs why.
//!
//! ```
//! use sluice_transport::wire::{decode_frame, encode_frame, WireMessage};
//! let msg = WireMessage::Heartbeat { worker_id: "w1".into() };
//! let bytes = encode_frame(&msg);
//! let (decoded, used) = decode_frame(&bytes).unwrap().unwrap();
//! assert_eq!(decoded, msg);
//! assert_eq!(used, bytes.len());
//! ```

mod codec;
mod message;
mod stream;

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    unreachable_pub,
    unused_imports,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    dead_code,
    unsafe_op_in_unsafe_fn,
    mismatched_lifetime_syntaxes
)]
#[path = "generated/frame_generated.rs"]
mod generated;

pub use codec::{decode_frame, encode_frame, FrameError};
pub use message::{WireJobEntry, WireMessage, WireMetric, WireOption, WirePeer};
pub use stream::{read_frame, write_frame};

/// The protocol version this build speaks; frames of another version are refused.
pub const PROTOCOL_VERSION: u16 = 1;

/// The largest frame accepted (and sent): 16 MiB. A bigger length prefix closes the
/// connection before any allocation.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
