//! Nexmark: the auction-site benchmark's event model, a deterministic generator, and a source.

pub mod config;
pub mod csv;
mod event_files;
pub mod generator;
pub mod model;
mod source;

pub use config::NexmarkConfig;
pub use event_files::{
    event_count, part_name, parts_mismatch, write_event_files, EventFilesError, EventFilesReader, EventFilesSource,
    EventKinds, COUNT_FILE,
};
pub use generator::NexmarkGenerator;
pub use model::{Auction, Bid, Event, Person};
pub use source::NexmarkSource;
