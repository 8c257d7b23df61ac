//! Tiered state under object-store faults, in simulation (`sluice_sim::tiered`): on every
//! seed the committed output equals the failure-free result exactly, and no run a completed
//! checkpoint names is ever missing. The broken deletion is caught in
//! `checker_catches_broken_protocol.rs`.
#![cfg(madsim)]

use sluice_sim::tiered::run;

#[madsim::test]
async fn tiered_output_is_exact_and_no_named_run_is_ever_deleted() {
    let seed = madsim::runtime::Handle::current().seed();
    let r = run(false, seed).await;
    println!("seed {seed}: {r}");
    assert!(r.exact, "seed {seed}: the committed output is not exact: {r}");
    assert_eq!(
        r.missing, 0,
        "seed {seed}: runs a completed checkpoint names were deleted: {r}"
    );
    assert!(r.checks > 0, "seed {seed}: the watcher checked nothing");
}
