//! The `clicks` binary: Sluice's whole command line with the sessions job registered.
//!
//! ```text
//! clicks run sessions --input clicks.csv --print
//! clicks coordinator --bind 127.0.0.1:6123 --checkpoint-dir /tmp/ck
//! clicks worker --coordinator 127.0.0.1:6123
//! clicks submit --coordinator 127.0.0.1:6123 sessions --input clicks.csv --output out/
//! ```

fn main() -> std::process::ExitCode {
    sluice::App::new("clicks")
        .version(env!("CARGO_PKG_VERSION"))
        .job(clicks::Sessions)
        .main()
}
