//! How a batch of records is turned into bytes to cross the network, and back.

use std::marker::PhantomData;
use std::sync::Arc;

use bytes::Bytes;

use crate::data::{Data, Record};
use crate::operator::AnyBatch;

/// Encodes and decodes the batches of one edge (its record type is known where the edge is
/// built, and erased after).
pub(crate) trait BatchCodec: Send + Sync {
    fn encode(&self, batch: &AnyBatch) -> Result<Bytes, String>;
    fn decode(&self, bytes: &[u8]) -> Result<AnyBatch, String>;
}

struct BincodeCodec<T>(PhantomData<fn() -> T>);

impl<T: Data> BatchCodec for BincodeCodec<T> {
    fn encode(&self, batch: &AnyBatch) -> Result<Bytes, String> {
        let b = batch
            .downcast_ref::<Vec<Record<T>>>()
            .ok_or("a batch of the wrong type reached the codec: mismatched job graph")?;
        bincode::serialize(b)
            .map(Bytes::from)
            .map_err(|e| format!("cannot encode a batch: {e}"))
    }

    fn decode(&self, bytes: &[u8]) -> Result<AnyBatch, String> {
        let v: Vec<Record<T>> = bincode::deserialize(bytes).map_err(|e| format!("cannot decode a batch: {e}"))?;
        Ok(Box::new(v))
    }
}

/// The codec of an edge carrying `T`.
pub(crate) fn codec_of<T: Data>() -> Arc<dyn BatchCodec> {
    Arc::new(BincodeCodec::<T>(PhantomData))
}
