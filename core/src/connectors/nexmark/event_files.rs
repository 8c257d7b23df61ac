//! Nexmark events written to files once and read back as a source, so that Sluice and another
//! engine (the Flink comparison) process exactly the same input and pay the same parsing.
//!
//! [`write_event_files`] writes `parts` files `part-0000` … into a directory: event `n` of the
//! generator goes to part `n % parts`, so every part covers the whole time range in order.
//! [`EventFilesSource`] reads them: subtask `i` reads part `i`, so the source runs at a
//! parallelism equal to the number of parts. Any other count is refused with the numbers: a
//! subtask reading two parts one after the other would start the second behind its own
//! watermark (every part covers the whole time range), and windowed queries would drop its
//! events as late and give wrong results.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::csv::{parse_line, to_line, BadEventLine};
use super::{Event, NexmarkConfig, NexmarkGenerator};
use crate::error::{InvalidSetting, OperatorError};
use crate::operator::OperatorContext;
use crate::source::{decode_position, encode_position, Source, SourcePoll, SourceReader};

/// The file in an event directory that holds the number of events written (its name starts
/// with `_`, so file sources that skip hidden files, like Flink's, skip it).
pub const COUNT_FILE: &str = "_events";

/// Why an event directory could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum EventFilesError {
    /// Reading or writing a file failed (names it).
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file holds something else than expected (names it and what it holds).
    #[error("{0}")]
    Content(String),
    /// The generator's configuration or the number of parts is not valid.
    #[error(transparent)]
    Config(#[from] InvalidSetting),
    /// An event could not be written as a line.
    #[error(transparent)]
    Line(#[from] BadEventLine),
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> EventFilesError {
    move |source| EventFilesError::Io { what, source }
}

/// The number of events in an event directory (from [`COUNT_FILE`]).
pub fn event_count(dir: &Path) -> Result<u64, EventFilesError> {
    let path = dir.join(COUNT_FILE);
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|_| EventFilesError::Content(format!("{} does not hold a number: {text:?}", path.display())))
}

/// Which kinds of events a reader produces. Lines of the other kinds are skipped without
/// being parsed: a query over bids alone need not pay for parsing people and auctions (the
/// event-kind filter of the query, pushed into the source).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventKinds {
    /// People.
    pub persons: bool,
    /// Auctions.
    pub auctions: bool,
    /// Bids.
    pub bids: bool,
}

impl EventKinds {
    /// Every kind.
    pub const ALL: EventKinds = EventKinds {
        persons: true,
        auctions: true,
        bids: true,
    };
    /// Bids only.
    pub const BIDS: EventKinds = EventKinds {
        persons: false,
        auctions: false,
        bids: true,
    };

    /// Whether a line starting with `first` (the event-type column) is wanted.
    fn wants(&self, first: u8) -> bool {
        match first {
            b'0' => self.persons,
            b'1' => self.auctions,
            b'2' => self.bids,
            // Not a valid line: let the parser say why.
            _ => true,
        }
    }
}

/// The file name of part `i`.
pub fn part_name(i: usize) -> String {
    format!("part-{i:04}")
}

/// Writes events `0..events` of `config`'s generator into `parts` files in `dir` (created if
/// missing); returns the bytes written.
pub fn write_event_files(config: NexmarkConfig, events: u64, dir: &Path, parts: usize) -> Result<u64, EventFilesError> {
    if parts == 0 {
        return Err(InvalidSetting("parts must be at least 1".into()).into());
    }
    let generator = NexmarkGenerator::try_new(config)?;
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let mut files = Vec::with_capacity(parts);
    for i in 0..parts {
        let path = dir.join(part_name(i));
        let f = File::create(&path).map_err(io(format!("creating {}", path.display())))?;
        files.push(BufWriter::with_capacity(1 << 20, f));
    }
    let mut bytes = 0u64;
    for n in 0..events {
        let line = to_line(&generator.event(n))?;
        let w = &mut files[(n % parts as u64) as usize];
        w.write_all(line.as_bytes())
            .and_then(|_| w.write_all(b"\n"))
            .map_err(io("writing events".into()))?;
        bytes += line.len() as u64 + 1;
    }
    for w in &mut files {
        w.flush().map_err(io("writing events".into()))?;
    }
    std::fs::write(dir.join(COUNT_FILE), format!("{events}\n")).map_err(io(format!("writing {COUNT_FILE}")))?;
    Ok(bytes)
}

/// Reads Nexmark events from the part files of a directory (see the module docs).
#[derive(Debug, Clone)]
pub struct EventFilesSource {
    parts: Vec<PathBuf>,
    kinds: EventKinds,
}

impl EventFilesSource {
    /// A source over the `part-*` files in `dir`, in name order. Fails if there are none.
    pub fn new(dir: impl AsRef<Path>) -> Result<Self, OperatorError> {
        let dir = dir.as_ref();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| OperatorError::io(format!("cannot list the event directory {}", dir.display()), e))?;
        let mut parts: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("part-"))
            })
            .collect();
        parts.sort();
        if parts.is_empty() {
            return Err(OperatorError::user(format!(
                "no part-* event files in {}",
                dir.display()
            )));
        }
        Ok(EventFilesSource {
            parts,
            kinds: EventKinds::ALL,
        })
    }

    /// How many part files the directory holds (the parallelism the source must run at).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// Produces only events of these kinds (see [`EventKinds`]).
    pub fn with_kinds(mut self, kinds: EventKinds) -> Self {
        self.kinds = kinds;
        self
    }
}

impl Source for EventFilesSource {
    type Out = Event;
    type Reader = EventFilesReader;

    fn reader(&self, subtask: u32, parallelism: u32) -> Result<EventFilesReader, OperatorError> {
        if self.parts.len() != parallelism as usize {
            // Not a failure a restart mends: the job fails at once.
            return Err(OperatorError::Unrecoverable(parts_mismatch(
                self.parts.len(),
                parallelism,
            )));
        }
        let mine = vec![self.parts[subtask as usize].clone()];
        Ok(EventFilesReader {
            kinds: self.kinds,
            parts: mine,
            current: 0,
            reader: None,
            offset: 0,
            line: String::new(),
        })
    }
}

/// Why `parts` event files cannot be read at `parallelism`.
pub fn parts_mismatch(parts: usize, parallelism: u32) -> String {
    format!(
        "the event directory holds {parts} part files and the source runs at parallelism {parallelism}: each subtask \
         reads one part (a subtask reading several one after the other would drop the later ones' events as late); \
         write the events with --parts {parallelism}, or run at parallelism {parts}"
    )
}

/// One subtask of an [`EventFilesSource`].
#[derive(Debug)]
pub struct EventFilesReader {
    kinds: EventKinds,
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
        let mut f =
            File::open(path).map_err(|e| OperatorError::io(format!("cannot open event file {}", path.display()), e))?;
        f.seek(SeekFrom::Start(self.offset))
            .map_err(|e| OperatorError::io(format!("cannot seek in event file {}", path.display()), e))?;
        self.reader = Some(BufReader::with_capacity(1 << 20, f));
        Ok(())
    }
}

impl SourceReader for EventFilesReader {
    type Out = Event;

    fn poll_batch(
        &mut self,
        max: usize,
        out: &mut Vec<Event>,
        _ctx: &OperatorContext,
    ) -> Result<SourcePoll, OperatorError> {
        while out.len() < max {
            if self.current >= self.parts.len() {
                return Ok(SourcePoll::Finished);
            }
            if self.reader.is_none() {
                self.open()?;
            }
            let reader = self.reader.as_mut().expect("opened just above");
            self.line.clear();
            let n = reader.read_line(&mut self.line).map_err(|e| {
                OperatorError::io(
                    format!("cannot read event file {}", self.parts[self.current].display()),
                    e,
                )
            })?;
            if n == 0 {
                self.current += 1;
                self.offset = 0;
                self.reader = None;
                continue;
            }
            self.offset += n as u64;
            if !self.kinds.wants(self.line.as_bytes()[0]) {
                continue;
            }
            let text = self.line.trim_end_matches(['\n', '\r']);
            let event = parse_line(text).map_err(|e| {
                OperatorError::user(format!(
                    "{} at byte {}: {e}",
                    self.parts[self.current].display(),
                    self.offset - n as u64
                ))
            })?;
            out.push(event);
        }
        Ok(if self.current >= self.parts.len() {
            SourcePoll::Finished
        } else {
            SourcePoll::Ready
        })
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

    fn ctx() -> OperatorContext {
        OperatorContext::for_test("events")
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
        write_event_files(NexmarkConfig::default(), 1000, dir.path(), 2).unwrap();
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
        for p in [1, 3, 4] {
            let Err(OperatorError::Unrecoverable(e)) = src.reader(0, p) else {
                panic!("2 parts at parallelism {p} must be refused")
            };
            assert!(
                e.contains("holds 2 part files") && e.contains(&format!("parallelism {p}")),
                "{e}"
            );
        }
        assert_eq!(event_count(dir.path()).unwrap(), 1000);
        let one = tempfile::tempdir().unwrap();
        write_event_files(NexmarkConfig::default(), 1000, one.path(), 1).unwrap();
        let bids = EventFilesSource::new(one.path()).unwrap().with_kinds(EventKinds::BIDS);
        let mut got = read_all(&mut bids.reader(0, 1).unwrap());
        let mut want: Vec<Event> = (0..1000)
            .map(|n| g.event(n))
            .filter(|e| matches!(e, Event::Bid(_)))
            .collect();
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert!(
            got == want,
            "the bids-only reader read {} events, {} bids were written",
            got.len(),
            want.len()
        );
    }
}
