//! Nexmark: the auction-site benchmark's event model, a deterministic generator, and a source.

pub mod config;
pub mod generator;
pub mod model;
pub mod rng;
mod source;

pub use config::NexmarkConfig;
pub use generator::NexmarkGenerator;
pub use model::{Auction, Bid, Event, Person};
pub use source::NexmarkSource;
