use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::mpsc;

use crate::{ChannelId, InputChannel, OutputChannel, Transport, TransportError};

/// In-process transport: each channel is a bounded queue of `capacity` batches.
#[derive(Debug)]
pub struct LocalTransport {
    capacity: usize,
    pending: Mutex<BTreeMap<ChannelId, Halves>>,
}

#[derive(Debug, Default)]
struct Halves {
    tx: Option<OutputChannel>,
    rx: Option<InputChannel>,
    tx_taken: bool,
    rx_taken: bool,
}

impl LocalTransport {
    /// A transport whose channels hold up to `capacity` messages each.
    ///
    /// # Panics
    /// If `capacity` is zero (use [`LocalTransport::try_new`] to get an error instead).
    pub fn new(capacity: usize) -> Self {
        Self::try_new(capacity).expect("LocalTransport::new needs a capacity of at least 1")
    }

    /// A transport whose channels hold up to `capacity` messages each.
    pub fn try_new(capacity: usize) -> Result<Self, TransportError> {
        if capacity == 0 {
            return Err(TransportError::ZeroCapacity(capacity));
        }
        Ok(LocalTransport {
            capacity,
            pending: Mutex::new(BTreeMap::new()),
        })
    }

    fn with_halves<R>(
        &self,
        id: ChannelId,
        f: impl FnOnce(&mut Halves) -> Result<R, TransportError>,
    ) -> Result<R, TransportError> {
        let mut pending = self
            .pending
            .lock()
            .expect("LocalTransport lock poisoned: a panic while wiring channels");
        let halves = pending.entry(id).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.capacity);
            Halves {
                tx: Some(OutputChannel::new(id, tx)),
                rx: Some(InputChannel::new(id, rx)),
                tx_taken: false,
                rx_taken: false,
            }
        });
        let r = f(halves);
        if halves.tx_taken && halves.rx_taken {
            pending.remove(&id);
        }
        r
    }
}

impl Transport for LocalTransport {
    fn output(&self, id: ChannelId) -> Result<OutputChannel, TransportError> {
        self.with_halves(id, |h| {
            let tx = h.tx.take().ok_or(TransportError::AlreadyTaken(id, "output"))?;
            h.tx_taken = true;
            Ok(tx)
        })
    }

    fn input(&self, id: ChannelId) -> Result<InputChannel, TransportError> {
        self.with_halves(id, |h| {
            let rx = h.rx.take().ok_or(TransportError::AlreadyTaken(id, "input"))?;
            h.rx_taken = true;
            Ok(rx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StreamMessage;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("test runtime")
    }

    #[test]
    fn halves_can_be_taken_in_either_order_once() {
        let t = LocalTransport::new(2);
        let id = ChannelId {
            edge: 1,
            from: 0,
            to: 0,
        };
        let _rx = t.input(id).unwrap();
        let _tx = t.output(id).unwrap();
        // Both halves taken: the entry is gone, so asking again opens a fresh channel rather
        // than handing out a half that is in use.
        assert!(t.pending.lock().unwrap().is_empty());
        let id2 = ChannelId {
            edge: 2,
            from: 0,
            to: 0,
        };
        let _tx2 = t.output(id2).unwrap();
        assert_eq!(t.output(id2).unwrap_err(), TransportError::AlreadyTaken(id2, "output"));
    }

    #[test]
    fn zero_capacity_is_rejected() {
        assert_eq!(LocalTransport::try_new(0).unwrap_err(), TransportError::ZeroCapacity(0));
    }

    #[test]
    fn full_channel_blocks_sender_until_drained() {
        rt().block_on(async {
            let t = LocalTransport::new(1);
            let id = ChannelId {
                edge: 0,
                from: 0,
                to: 0,
            };
            let mut tx = t.output(id).unwrap();
            let mut rx = t.input(id).unwrap();
            tx.send(StreamMessage::Watermark(1)).await.unwrap();
            assert_eq!(tx.queued(), 1);
            let second = tokio::time::timeout(
                std::time::Duration::from_millis(20),
                tx.send(StreamMessage::Watermark(2)),
            )
            .await;
            assert!(second.is_err(), "send into a full channel must wait");
            assert!(matches!(rx.recv().await, Some(StreamMessage::Watermark(1))));
            tx.send(StreamMessage::Watermark(2)).await.unwrap();
            assert!(matches!(rx.recv().await, Some(StreamMessage::Watermark(2))));
        });
    }

    #[test]
    fn dropped_receiver_closes_channel() {
        rt().block_on(async {
            let t = LocalTransport::new(1);
            let id = ChannelId {
                edge: 0,
                from: 0,
                to: 0,
            };
            let mut tx = t.output(id).unwrap();
            drop(t.input(id).unwrap());
            assert_eq!(
                tx.send(StreamMessage::EndOfPartition).await.unwrap_err(),
                TransportError::Closed(id)
            );
        });
    }
}
