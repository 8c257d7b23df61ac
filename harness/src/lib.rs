//! Sluice as a library: [`App`] gives a binary of your own the whole `sluice` command line
//! with your jobs registered (the `sluice` binary is `App::new("sluice").builtins().main()`),
//! the built-in jobs, the embedded runner, the REST API, configuration and logging.

pub mod app;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod error;
pub mod ha;
pub mod jobs;
pub mod logging;
pub mod reporters;
pub mod rest;
pub mod runner;
pub mod savepoints;
pub mod security;
pub mod settings;

pub use app::{App, Job};
pub use error::HarnessError;
