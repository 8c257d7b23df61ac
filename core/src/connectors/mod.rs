//! Built-in sources and sinks.

mod file_source;
mod generator;
pub mod nexmark;
mod rate;
mod sinks;
mod vec_source;

pub use file_source::{FileReader, FileSource};
pub use generator::{GeneratorReader, GeneratorSource};
pub use sinks::{CollectSink, CollectWriter, DiscardSink, DiscardWriter, FileSink, FileWriter, PrintSink, PrintWriter};
pub use vec_source::{VecReader, VecSource};
