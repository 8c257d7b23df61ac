//! The `sluice` binary: the built-in jobs with Sluice's whole command line.

fn main() -> std::process::ExitCode {
    sluice::App::new("sluice").builtins().main()
}
