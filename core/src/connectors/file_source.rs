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
        let file = File::open(&path)
            .map_err(|e| OperatorError::io(format!("cannot open input file {}", path.display()), e))?;
        let meta = file
            .metadata()
            .map_err(|e| OperatorError::io(format!("cannot read input file {}", path.display()), e))?;
        if !meta.is_file() {
            return Err(OperatorError::user(format!(
                "input {} is not a file (a directory?)",
                path.display()
            )));
        }
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
    /// Further byte ranges `(offset, end)` to read after this one: after a rescale a subtask
    /// may own the unread parts of several old subtasks.
    pending: std::collections::VecDeque<(u64, u64)>,
    /// The file's length (the end of the last range).
    len: u64,
    /// This reader's subtask index and the source's parallelism.
    subtask: u64,
    parallelism: u64,
}

impl FileReader {
    fn seek(&mut self, offset: u64) -> Result<(), OperatorError> {
        self.reader
            .seek(SeekFrom::Start(offset))
            .map_err(|e| OperatorError::io(format!("cannot seek in input file {}", self.path.display()), e))?;
        self.offset = offset;
        Ok(())
    }

    /// Decodes a position: a bare offset, or the ranges still to read.
    fn decode_ranges(position: &[u8], default_end: u64) -> Result<Vec<(u64, u64)>, OperatorError> {
        if position.len() == 8 {
            let offset: u64 = crate::source::decode_position(position)?;
            return Ok(vec![(offset, default_end)]);
        }
        crate::source::decode_position(position)
    }

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
            reader
                .seek(SeekFrom::Start(split_start - 1))
                .map_err(|e| OperatorError::io(ctx(), e))?;
            let mut skipped = Vec::new();
            let n = reader
                .read_until(b'\n', &mut skipped)
                .map_err(|e| OperatorError::io(ctx(), e))?;
            offset = split_start - 1 + n as u64;
        }
        if let Some(resume) = self.start_offsets.as_ref().and_then(|o| o.get(subtask as usize)) {
            if *resume > offset {
                reader
                    .seek(SeekFrom::Start(*resume))
                    .map_err(|e| OperatorError::io(ctx(), e))?;
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
            pending: std::collections::VecDeque::new(),
            len,
            subtask: i,
            parallelism: p,
        })
    }
}

impl SourceReader for FileReader {
    type Out = String;

    fn poll_batch(
        &mut self,
        max: usize,
        out: &mut Vec<String>,
        ctx: &OperatorContext,
    ) -> Result<SourcePoll, OperatorError> {
        let mut max = max;
        if let Some(rate) = &mut self.rate {
            match rate.allow(ctx.clock.now_ms(), max) {
                Ok(n) => max = n,
                Err(wake) => return Ok(SourcePoll::WaitUntil(wake)),
            }
            rate.record(max);
        }
        for _ in 0..max {
            while self.offset >= self.end {
                let Some((offset, end)) = self.pending.pop_front() else {
                    return Ok(SourcePoll::Finished);
                };
                self.end = end;
                self.seek(offset)?;
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
        // Always the explicit ranges: after a rescale this reader's `end` is not its own split's
        // end, so a bare offset would be read back with the wrong end. A reader past its end
        // (its last line crossed the boundary) saves an empty range.
        let ranges: Vec<(u64, u64)> = std::iter::once((self.offset.min(self.end), self.end))
            .chain(self.pending.iter().copied())
            .collect();
        crate::source::encode_position(&ranges)
    }

    fn restore_position(&mut self, position: &[u8]) -> Result<(), OperatorError> {
        let ranges = Self::decode_ranges(position, self.end)?;
        let live = self.unread(ranges)?;
        self.resume(live.into())
    }

    fn restore_rescaled(&mut self, old_parallelism: u32, positions: &[Vec<u8>]) -> Result<(), OperatorError> {
        // The parts each old subtask had not read yet, in order; new subtask j takes every
        // p-th of them (parts start at line starts, so each line is still read exactly once).
        let old = u64::from(old_parallelism);
        let mut unread = Vec::new();
        for (i, p) in positions.iter().enumerate() {
            let default_end = self.len * (i as u64 + 1) / old;
            unread.extend(self.unread(Self::decode_ranges(p, default_end)?)?);
        }
        let mine: std::collections::VecDeque<(u64, u64)> = unread
            .into_iter()
            .enumerate()
            .filter(|(k, _)| *k as u64 % self.parallelism == self.subtask)
            .map(|(_, r)| r)
            .collect();
        self.resume(mine)
    }
}

impl FileReader {
    /// The ranges still to read (empty ones dropped: a finished reader's offset may lie past
    /// its end); a range outside the file is an error.
    fn unread(&self, ranges: Vec<(u64, u64)>) -> Result<Vec<(u64, u64)>, OperatorError> {
        let mut live = Vec::with_capacity(ranges.len());
        for (o, e) in ranges {
            if o > self.len || e > self.len {
                return Err(OperatorError::user(format!(
                    "source position {o}..{e} lies beyond the end of {} ({} bytes): is it the same file?",
                    self.path.display(),
                    self.len
                )));
            }
            if o < e {
                live.push((o, e));
            }
        }
        Ok(live)
    }

    /// Continues with `ranges`, or finishes at once if there are none.
    fn resume(&mut self, mut ranges: std::collections::VecDeque<(u64, u64)>) -> Result<(), OperatorError> {
        match ranges.pop_front() {
            Some((o, e)) => {
                self.end = e;
                self.pending = ranges;
                self.seek(o)
            }
            None => {
                self.pending.clear();
                self.offset = self.end;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ctx() -> OperatorContext {
        OperatorContext::for_test("file")
    }

    /// Reads up to `n` lines from `r`.
    fn read(r: &mut FileReader, n: usize, seen: &mut Vec<String>) {
        let c = ctx();
        let mut out = Vec::new();
        let mut left = n;
        while left > 0 {
            out.clear();
            let poll = r.poll_batch(left.min(7), &mut out, &c).unwrap();
            left -= out.len().min(left);
            seen.append(&mut out);
            if poll == SourcePoll::Finished {
                break;
            }
        }
    }

    fn readers(src: &FileSource, p: u32) -> Vec<FileReader> {
        (0..p).map(|i| src.reader(i, p).unwrap()).collect()
    }

    fn rescale(src: &FileSource, from: &[FileReader], to: u32) -> Vec<FileReader> {
        let positions: Vec<Vec<u8>> = from.iter().map(|r| r.snapshot_position().unwrap()).collect();
        let mut next = readers(src, to);
        for r in &mut next {
            r.restore_rescaled(from.len() as u32, &positions).unwrap();
        }
        next
    }

    fn restart(src: &FileSource, from: &[FileReader]) -> Vec<FileReader> {
        let mut next = readers(src, from.len() as u32);
        for (r, old) in next.iter_mut().zip(from) {
            r.restore_position(&old.snapshot_position().unwrap()).unwrap();
        }
        next
    }

    #[test]
    fn every_line_is_read_once_across_rescales_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.txt");
        let lines: Vec<String> = (0..500).map(|i| format!("line {i} {}", "x".repeat(i % 13))).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let src = FileSource::new(&path).unwrap();
        let mut seen = Vec::new();
        let mut rs = readers(&src, 3);
        // Uneven progress, and one subtask finishes (its offset passes its end).
        for (r, n) in rs.iter_mut().zip([10usize, 1000, 40]) {
            read(r, n, &mut seen);
        }
        let mut rs = rescale(&src, &rs, 2);
        for (r, n) in rs.iter_mut().zip([25usize, 3]) {
            read(r, n, &mut seen);
        }
        let mut rs = restart(&src, &rs);
        for r in rs.iter_mut() {
            read(r, 5, &mut seen);
        }
        let mut rs = rescale(&src, &rs, 4);
        for r in rs.iter_mut() {
            read(r, usize::MAX, &mut seen);
        }
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for l in &seen {
            *count.entry(l.as_str()).or_default() += 1;
        }
        let dup: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
        assert!(dup.is_empty(), "read twice: {dup:?}");
        assert_eq!(
            count.len(),
            lines.len(),
            "lines never read: {}",
            lines.len() - count.len()
        );
    }
}
