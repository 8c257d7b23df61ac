//! Fault points for the simulation (FoundationDB's BUGGIFY): places in production code where a
//! simulated run may inject a delay or a fault. Outside `cfg(madsim)` they compile to nothing.

/// Under simulation, sometimes sleeps a little at a dangerous point (named for logs).
pub(crate) async fn maybe_delay(_point: &'static str) {
    #[cfg(madsim)]
    {
        if madsim::rand::random::<u8>() < 16 {
            let ms = madsim::rand::random::<u64>() % 200;
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
}

