//! What a cluster process needs beside its job registry ([`crate::app::AppRegistry`]).

use std::sync::Arc;

use sluice_core::cluster::StoreOpener;

/// Opens checkpoint locations for the cluster (local directories and `s3://`).
pub fn store_opener() -> StoreOpener {
    Arc::new(|location: &str| crate::settings::open_store(location))
}
