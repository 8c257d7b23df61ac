//! The `sluice` binary's library: the built-in job registry (also as the cluster's registry), the embedded runner and logging
//! setup. The CLI in `main.rs` is a thin layer over these functions.

pub mod certs;
pub mod cluster;
pub mod config;
pub mod error;
pub mod jobs;
pub mod logging;
pub mod reporters;
pub mod rest;
pub mod runner;
pub mod savepoints;
pub mod security;
pub mod settings;

pub use error::HarnessError;
