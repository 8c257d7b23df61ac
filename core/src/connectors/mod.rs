//! Built-in sources and sinks.

mod file_sink;
mod file_source;
mod generator;
pub mod nexmark;
mod rate;
mod sinks;
mod strided;
mod txn_memory;
mod vec_source;

pub use file_sink::{FileSink, FileSinkWriter, PartFile, PENDING_DIR};
pub use file_source::{FileReader, FileSource};
pub use generator::{GeneratorReader, GeneratorSource};
pub use sinks::{CollectSink, CollectWriter, DiscardSink, DiscardWriter, PrintSink, PrintWriter};
pub use txn_memory::{TransactionalStore, TransactionalStoreSink, TransactionalStoreWriter, TxnId};
pub use vec_source::{VecReader, VecSource};
