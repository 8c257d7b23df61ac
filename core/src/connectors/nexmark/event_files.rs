//! Nexmark events written to files once and read back as a source, so that Sluice and another
//! engine (the Flink comparison) process exactly the same input and pay the same parsing.
//!
//! [`write_event_files`] writes `parts` files `part-0000` … into a directory: event `n` of the
//! generator goes to part `n % parts`, so every part covers the whole time range in order.
//! [`EventFilesSource`] reads them: subtask `i` of `p` reads the parts `j` with `j % p == i`,
//! one after the other, so run it at a parallelism that divides `parts` (each subtask then
//! reads whole, time-ordered parts; with several parts per subtask the later ones would start
//! behind its watermark).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::csv::{parse_line, to_line};
use super::{Event, NexmarkConfig, NexmarkGenerator};
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{decode_position, encode_position, Source, SourcePoll, SourceReader};

/// The file name of part `i`.
pub fn part_name(i: usize) -> String {
    format!("part-{i:04}")
}

/// Writes events `0..events` of `config`'s generator into `parts` files in `dir` (created if
/// missing); returns the bytes written.
pub fn write_event_files(config: NexmarkConfig, events: u64, dir: &Path, parts: usize) -> Result<u64, String> {
    if parts == 0 {
        return Err("parts must be at least 1".into());
    }
    let generator = NexmarkGenerator::try_new(config)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let mut files = Vec::with_capacity(parts);
    for i in 0..parts {
        let path = dir.join(part_name(i));
        let f = File::create(&path).map_err(|e| format!("creating {}: {e}", path.display()))?;
        files.push(BufWriter::with_capacity(1 << 20, f));
    }
    let mut bytes = 0u64;
    for n in 0..events {
        let line = to_line(&generator.event(n))?;
        let w = &mut files[(n % parts as u64) as usize];
        w.write_all(line.as_bytes()).and_then(|_| w.write_all(b"\n")).map_err(|e| format!("writing events: {e}"))?;
        bytes += line.len() as u64 + 1;
    }
    for w in &mut files {
        w.flush().map_err(|e| format!("writing events: {e}"))?;
    }
    Ok(bytes)
}

/// Reads Nexmark events from the part files of a directory (see the module docs).
#[derive(Debug, Clone)]
pub struct EventFilesSource {
    parts: Vec<PathBuf>,
}

impl EventFilesSource {
    /// A source over the `part-*` files in `dir`, in name order. Fails if there are none.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, OperatorError> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir).map_err(|e| OperatorError::io(format!("cannot list the event directory {}", dir.display()), e))?;
        let mut parts: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("part-")))
            .collect();
        parts.sort();
        if parts.is_empty() {
            return Err(OperatorError::user(format!("no part-* event files in {}", dir.display())));
        }
        Ok(EventFilesSource { parts })
    }
}

impl Source for EventFilesSource {
    type Out = Event;
    type Reader = EventFilesReader;

    fn reader(&self, subtask: u32, parallelism: u32) -> Result<EventFilesReader, OperatorError> {
        if !self.parts.len().is_multiple_of(parallelism as usize) {
            return Err(OperatorError::user(format!(
                "{} event files cannot be shared evenly by {parallelism} subtasks: write a multiple of the parallelism",
                self.parts.len()
            )));
        }
        let mine = self
            .parts
            .iter()
            .enumerate()
            .filter(|(j, _)| *j % parallelism as usize == subtask as usize)
            .map(|(_, p)| p.clone())
            .collect();
        Ok(EventFilesReader {
            parts: mine,
            current: 0,
            reader: None,
            offset: 0,
            line: String::new(),
        })
    }
}

/// One subtask of an [`EventFilesSource`].
#[derive(Debug)]
pub struct EventFilesReader {
    parts: Vec<PathBuf>,
    /// The part being read (index into `parts`).
    current: usize,
    reader: Option<BufReader<File>>,
    /// Byte offset of the next line in the current part.
    offset: u64,
    line: String,
}

impl EventFilesReader {
    fn open(&mut self) -> Result<(), OperatorError> {
        let path = &self.parts[self.current];
        let mut f = File::open(path).map_err(|e| OperatorError::io(format!("cannot open event file {}", path.display()), e))?;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| OperatorError::io(format!("cannot seek in event file {}", path.display()), e))?;
        self.reader = Some(BufReader::with_capacity(1 << 20, f));
        Ok(())
    }
}

impl SourceReader for EventFilesReader {
    type Out = Event;

    fn poll_batch(&mut self, max: usize, out: &mut Vec<Event>, _ctx: &OperatorContext) -> Result<SourcePoll, OperatorError> {
        while out.len() < max {
            if self.current >= self.parts.len() {
                return Ok(SourcePoll::Finished);
            }
            if self.reader.is_none() {
                self.open()?;
            }
            let reader = self.reader.as_mut().expect("opened just above");
            self.line.clear();
            let n = reader
                .read_line(&mut self.line)
                .map_err(|e| OperatorError::io(format!("cannot read event file {}", self.parts[self.current].display()), e))?;
            if n == 0 {
                self.current += 1;
                self.offset = 0;
                self.reader = None;
                continue;
            }
            self.offset += n as u64;
            let text = self.line.trim_end_matches(['\n', '\r']);
            let event = parse_line(text).map_err(|e| {
                OperatorError::user(format!("{} at byte {}: {e}", self.parts[self.current].display(), self.offset - n as u64))
            })?;
            out.push(event);
        }
        Ok(if self.current >= self.parts.len() { SourcePoll::Finished } else { SourcePoll::Ready })
    }

    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        encode_position(&(self.current as u64, self.offset))
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let (current, offset): (u64, u64) = decode_position(position)?;
        self.current = current as usize;
        self.offset = offset;
        self.reader = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::task::OperatorMetrics;
    use std::sync::Arc;

    fn ctx() -> OperatorContext {
        OperatorContext {
            vertex_name: "events".into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism: 128,
            watermark: crate::data::EventTime::MIN,
            clock: crate::clock::Clock::starting_at(0),
            log: slog::Logger::root(slog::Discard, slog::o!()),
            attempt: 0,
            checkpointing: true,
            metrics: Arc::new(OperatorMetrics::detached()),
        }
    }

    fn read_all(r: &mut EventFilesReader) -> Vec<Event> {
        let mut all = Vec::new();
        loop {
            let mut out = Vec::new();
            let state = r.poll_batch(7, &mut out, &ctx()).unwrap();
            all.extend(out);
            if state == SourcePoll::Finished {
                return all;
            }
        }
    }

    #[test]
    fn subtasks_read_every_event_once_and_resume_from_a_position() {
        let dir = tempfile::tempdir().unwrap();
        write_event_files(NexmarkConfig::default(), 1000, dir.path(), 4).unwrap();
        let src = EventFilesSource::new(dir.path()).unwrap();
        let g = NexmarkGenerator::new(NexmarkConfig::default());
        let mut seen: Vec<Event> = Vec::new();
        for i in 0..2 {
            let mut r = src.reader(i, 2).unwrap();
            // Read a little, checkpoint, resume in a fresh reader.
            let mut first = Vec::new();
            r.poll_batch(100, &mut first, &ctx()).unwrap();
            let pos = r.snapshot_position().unwrap();
            let mut again = src.reader(i, 2).unwrap();
            again.restore_position(&pos).unwrap();
            seen.extend(first);
            seen.extend(read_all(&mut again));
        }
        let mut want: Vec<Event> = (0..1000).map(|n| g.event(n)).collect();
        let key = |e: &Event| format!("{e:?}");
        seen.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(seen, want);
        assert!(src.reader(0, 3).is_err(), "4 parts do not divide among 3 subtasks");
    }
}
