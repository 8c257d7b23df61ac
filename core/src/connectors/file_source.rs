use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::PathBuf;

use crate::connectors::rate::RateLimiter;
use crate::error::OperatorError;
use crate::operator::OperatorContext;
use crate::source::{Source, SourcePoll, SourceReader};

/// Reads a text file line by line (without the line ending). With parallelism `p`, subtask `i`
/// reads the lines that start in the `i`-th of `p` equal byte ranges of the file, so every line
/// is read exactly once. A reader can start at a byte offset ([`FileSource::starting_at`]),
/// which is how it resumes.
///
/// It reads with blocking file I/O in the task; keep files on local disk.
#[derive(Debug, Clone)]
pub struct FileSource {
    path: PathBuf,
    start_offsets: Option<Vec<u64>>,
    lines_per_second: Option<u64>,
}

impl FileSource {
    /// A source over the file at `path`. Fails if the file can't be opened.
    pub fn new(path: impl Into<PathBuf>) -> Result<Self, OperatorError> {
        let path = path.into();
        File::open(&path).map_err(|e| OperatorError::io(format!("cannot open input file {}", path.display()), e))?;
        Ok(FileSource {
            path,
            start_offsets: None,
            lines_per_second: None,
        })
    }

    /// Paces the whole source (all subtasks together) to `rate` lines per second, to replay a
    /// file as a live stream.
    pub fn with_lines_per_second(mut self, rate: u64) -> Self {
        self.lines_per_second = Some(rate);
        self
    }

    /// Resumes each subtask at the byte offset it had reached (one per subtask).
    pub fn starting_at(mut self, offsets: Vec<u64>) -> Self {
        self.start_offsets = Some(offsets);
        self
    }
}

/// One subtask of a [`FileSource`].
#[derive(Debug)]
pub struct FileReader {
    path: PathBuf,
    reader: BufReader<File>,
    /// Byte offset of the next line to read.
    offset: u64,
    /// Lines that start at or after this offset belong to the next subtask.
    end: u64,
    line: String,
    rate: Option<RateLimiter>,
}

impl FileReader {
    /// The byte offset of the next line this reader will return.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl Source for FileSource {
    type Out = String;
    type Reader = FileReader;

    fn reader(&self, subtask: u32, parallelism: u32) -> Result<FileReader, OperatorError> {
        let ctx = || format!("cannot read input file {}", self.path.display());
        let file = File::open(&self.path).map_err(|e| OperatorError::io(ctx(), e))?;
        let len = file.metadata().map_err(|e| OperatorError::io(ctx(), e))?.len();
        let (p, i) = (parallelism as u64, subtask as u64);
        let split_start = len * i / p;
        let end = len * (i + 1) / p;
        let mut reader = BufReader::new(file);
        let mut offset = split_start;
        if split_start > 0 {
            // The line that straddles the split start belongs to the previous subtask: skip to
            // the first line starting at or after it.
            reader.seek(SeekFrom::Start(split_start - 1)).map_err(|e| OperatorError::io(ctx(), e))?;
            let mut skipped = Vec::new();
            let n = reader.read_until(b'\n', &mut skipped).map_err(|e| OperatorError::io(ctx(), e))?;
            offset = split_start - 1 + n as u64;
        }
        if let Some(resume) = self.start_offsets.as_ref().and_then(|o| o.get(subtask as usize)) {
            if *resume > offset {
                reader.seek(SeekFrom::Start(*resume)).map_err(|e| OperatorError::io(ctx(), e))?;
                offset = *resume;
            }
        }
        Ok(FileReader {
            path: self.path.clone(),
            reader,
            offset,
            end,
            line: String::new(),
            rate: self
                .lines_per_second
                .map(|r| RateLimiter::new((r / parallelism as u64).max(1))),
        })
    }
}

impl SourceReader for FileReader {
    type Out = String;

    fn poll_batch(&mut self, max: usize, out: &mut Vec<String>, ctx: &OperatorContext) -> Result<SourcePoll, OperatorError> {
        let mut max = max;
        if let Some(rate) = &mut self.rate {
            match rate.allow(ctx.clock.now_ms(), max) {
                Ok(n) => max = n,
                Err(wake) => return Ok(SourcePoll::WaitUntil(wake)),
            }
            rate.record(max);
        }
        for _ in 0..max {
            if self.offset >= self.end {
                return Ok(SourcePoll::Finished);
            }
            self.line.clear();
            let n = self
                .reader
                .read_line(&mut self.line)
                .map_err(|e| OperatorError::io(format!("cannot read input file {}", self.path.display()), e))?;
            if n == 0 {
                return Ok(SourcePoll::Finished);
            }
            self.offset += n as u64;
            let trimmed = self.line.trim_end_matches(['\n', '\r']);
            out.push(trimmed.to_string());
        }
        Ok(SourcePoll::Ready)
    }

    fn snapshot_position(&self) -> Result<Vec<u8>, OperatorError> {
        crate::source::encode_position(&self.offset)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let offset: u64 = crate::source::decode_position(position)?;
        if offset > self.end.max(self.offset) {
            return Err(OperatorError::user(format!(
                "source position {offset} lies beyond this subtask's part of {} (ends at {})",
                self.path.display(),
                self.end
            )));
        }
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| OperatorError::io(format!("cannot seek in input file {}", self.path.display()), e))?;
        self.offset = offset;
        Ok(())
    }
}
