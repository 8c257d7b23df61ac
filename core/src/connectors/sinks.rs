use std::io::Write;

use std::sync::{Arc, Mutex};

use crate::data::{Data, Record};
use crate::error::OperatorError;
use crate::sink::{Sink, SinkWriter};
use crate::sync::LockExt;

type FormatFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// Prints each record on standard output as `subtask> record`, like Flink's print sink.
/// At-least-once: after a restore, records since the checkpoint are printed again.
pub struct PrintSink<T> {
    format: FormatFn<T>,
}

impl<T> std::fmt::Debug for PrintSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrintSink")
    }
}

impl<T: Data> PrintSink<T> {
    /// Prints records with their `Debug` form.
    pub fn new() -> Self {
        Self::with_format(|v: &T| format!("{v:?}"))
    }

    /// Prints records formatted by `f`.
    pub fn with_format(f: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        PrintSink { format: Arc::new(f) }
    }
}

impl<T: Data> Default for PrintSink<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// One subtask of a [`PrintSink`].
pub struct PrintWriter<T> {
    prefix: String,
    format: FormatFn<T>,
}

impl<T: Data> Sink for PrintSink<T> {
    type In = T;
    type Writer = PrintWriter<T>;
    fn writer(&self, subtask: u32, parallelism: u32) -> Result<PrintWriter<T>, OperatorError> {
        Ok(PrintWriter {
            prefix: if parallelism > 1 {
                format!("{}> ", subtask + 1)
            } else {
                String::new()
            },
            format: self.format.clone(),
        })
    }
}

impl<T: Data> SinkWriter for PrintWriter<T> {
    type In = T;
    fn write(&mut self, batch: Vec<Record<T>>) -> Result<(), OperatorError> {
        let mut s = String::new();
        for r in &batch {
            s.push_str(&self.prefix);
            s.push_str(&(self.format)(&r.value));
            s.push('\n');
        }
        std::io::stdout()
            .lock()
            .write_all(s.as_bytes())
            .map_err(|e| OperatorError::io("cannot write to standard output", e))
    }
    fn finish(&mut self) -> Result<(), OperatorError> {
        std::io::stdout()
            .flush()
            .map_err(|e| OperatorError::io("cannot flush standard output", e))
    }
}

/// Collects every record in memory (for tests). Clones share the same buffer. At-least-once:
/// after a restore, records since the checkpoint are collected again (use
/// [`super::TransactionalStore`] to test exactly-once).
pub struct CollectSink<T> {
    records: Arc<Mutex<Vec<Record<T>>>>,
}

impl<T> Clone for CollectSink<T> {
    fn clone(&self) -> Self {
        CollectSink {
            records: self.records.clone(),
        }
    }
}

impl<T> std::fmt::Debug for CollectSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CollectSink")
    }
}

impl<T: Data> Default for CollectSink<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Data> CollectSink<T> {
    /// An empty collector.
    pub fn new() -> Self {
        CollectSink {
            records: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The records collected so far, with timestamps, in arrival order.
    pub fn records(&self) -> Vec<Record<T>> {
        self.records.locked().clone()
    }

    /// The values collected so far, in arrival order.
    pub fn values(&self) -> Vec<T> {
        self.records().into_iter().map(|r| r.value).collect()
    }
}

/// One subtask of a [`CollectSink`].
pub struct CollectWriter<T> {
    records: Arc<Mutex<Vec<Record<T>>>>,
}

impl<T: Data> Sink for CollectSink<T> {
    type In = T;
    type Writer = CollectWriter<T>;
    fn writer(&self, _subtask: u32, _parallelism: u32) -> Result<CollectWriter<T>, OperatorError> {
        Ok(CollectWriter {
            records: self.records.clone(),
        })
    }
}

impl<T: Data> SinkWriter for CollectWriter<T> {
    type In = T;
    fn write(&mut self, batch: Vec<Record<T>>) -> Result<(), OperatorError> {
        self.records.locked().extend(batch);
        Ok(())
    }
    fn finish(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
}

/// Drops every record (Flink's blackhole): for benchmarks, where only the count matters. The
/// runtime still counts the records written.
#[derive(Debug)]
pub struct DiscardSink<T>(std::marker::PhantomData<fn(T)>);

impl<T: Data> Default for DiscardSink<T> {
    fn default() -> Self {
        DiscardSink(std::marker::PhantomData)
    }
}

/// One subtask of a [`DiscardSink`].
#[derive(Debug)]
pub struct DiscardWriter<T>(std::marker::PhantomData<fn(T)>);

impl<T: Data> Sink for DiscardSink<T> {
    type In = T;
    type Writer = DiscardWriter<T>;
    fn writer(&self, _subtask: u32, _parallelism: u32) -> Result<DiscardWriter<T>, OperatorError> {
        Ok(DiscardWriter(std::marker::PhantomData))
    }
}

impl<T: Data> SinkWriter for DiscardWriter<T> {
    type In = T;
    fn write(&mut self, _batch: Vec<Record<T>>) -> Result<(), OperatorError> {
        Ok(())
    }
    fn finish(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }
}
