//! Fault points for the simulation (FoundationDB's BUGGIFY): dangerous places in production
//! code where a simulated run may inject a delay or a fault. Outside `cfg(madsim)` every point
//! compiles to nothing.
//!
//! Points: a slow snapshot upload (`state upload`), a slow metadata write (`metadata write`),
//! a delayed barrier (`barrier`), and a lost checkpoint acknowledgement (`lost ack`).

/// Under simulation, sometimes (1 in 16) sleeps up to 200 ms at a dangerous point.
pub(crate) async fn maybe_delay(_point: &'static str) {
    #[cfg(madsim)]
    {
        if madsim::rand::random::<u8>() < 16 {
            let ms = madsim::rand::random::<u64>() % 200;
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        }
    }
}

/// Under simulation, true with probability `per_mille / 1000`: the caller then injects the
/// fault named by `point`. Always false outside the simulation.
pub(crate) fn fire(_point: &'static str, _per_mille: u32) -> bool {
    #[cfg(madsim)]
    {
        madsim::rand::random::<u32>() % 1000 < _per_mille
    }
    #[cfg(not(madsim))]
    {
        false
    }
}
