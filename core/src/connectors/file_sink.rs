//! An exactly-once file sink: part files published by atomic rename when a checkpoint completes.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::data::{Data, Record};
use crate::error::OperatorError;
use crate::sink::{TransactionalSink, TransactionalWriter};

type FormatFn<T> = Arc<dyn Fn(&T) -> String + Send + Sync>;

/// The folder under the output directory where files wait for their checkpoint to complete.
/// Readers of the output ignore it (and every dot-file).
pub const PENDING_DIR: &str = "_pending";

/// Writes records as lines into part files under a directory, exactly once.
///
/// Each subtask writes one transaction per checkpoint into a hidden in-progress file under
/// `_pending/`. At the checkpoint it becomes `_pending/part-<subtask>-<checkpoint>` (durable,
/// still invisible); when the checkpoint completes it is renamed to
/// `part-<subtask>-<checkpoint>` in the output directory. Only committed part files are ever
/// visible there. Without checkpointing, each subtask publishes `part-<subtask>-final` at the
/// end of input.
pub struct FileSink<T> {
    dir: PathBuf,
    format: FormatFn<T>,
}

impl<T> std::fmt::Debug for FileSink<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink").field("dir", &self.dir).finish()
    }
}

impl<T: Data> FileSink<T> {
    /// A sink writing `format(record)` lines under `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>, format: impl Fn(&T) -> String + Send + Sync + 'static) -> Self {
        FileSink {
            dir: dir.into(),
            format: Arc::new(format),
        }
    }
}

/// A pre-committed part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartFile {
    /// File name, the same under `_pending/` and in the output directory.
    pub name: String,
}

/// One subtask of a [`FileSink`].
pub struct FileSinkWriter<T> {
    dir: PathBuf,
    pending_dir: PathBuf,
    subtask: u32,
    parallelism: u32,
    attempt: u32,
    seq: u64,
    open: Option<(PathBuf, BufWriter<File>)>,
    format: FormatFn<T>,
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> OperatorError {
    move |e| OperatorError::io(context, e)
}

fn fsync_dir(dir: &Path) -> Result<(), OperatorError> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(format!("cannot sync directory {}", dir.display())))
}

impl<T: Data> TransactionalSink for FileSink<T> {
    type In = T;
    type Txn = PartFile;
    type Writer = FileSinkWriter<T>;

    /// The output directory, canonical (symbolic links resolved) once it exists, else absolute
    /// as the current directory makes it: a restore into another directory is told apart from
    /// one into the same directory named differently.
    fn target(&self) -> Option<String> {
        let dir = std::fs::canonicalize(&self.dir)
            .or_else(|_| std::path::absolute(&self.dir))
            .unwrap_or_else(|_| self.dir.clone());
        Some(format!("file:{}", dir.display()))
    }

    fn writer(&self, subtask: u32, parallelism: u32, attempt: u32) -> Result<FileSinkWriter<T>, OperatorError> {
        let pending_dir = self.dir.join(PENDING_DIR);
        fs::create_dir_all(&pending_dir)
            .map_err(io(format!("cannot create output directory {}", pending_dir.display())))?;
        Ok(FileSinkWriter {
            dir: self.dir.clone(),
            pending_dir,
            subtask,
            parallelism,
            attempt,
            seq: 0,
            open: None,
            format: self.format.clone(),
        })
    }
}

impl<T: Data> FileSinkWriter<T> {
    /// Whether `name` in `_pending/` was left by this subtask (or by a subtask that no longer
    /// exists, which subtask 0 cleans up).
    fn is_mine(&self, name: &str) -> bool {
        let owner = name
            .strip_prefix(".inprogress-")
            .or_else(|| name.strip_prefix("part-"))
            .and_then(|rest| rest.split('-').next())
            .and_then(|s| s.parse::<u32>().ok());
        match owner {
            Some(s) => s == self.subtask || (self.subtask == 0 && s >= self.parallelism),
            None => false,
        }
    }
}

impl<T: Data> TransactionalWriter for FileSinkWriter<T> {
    type In = T;
    type Txn = PartFile;

    fn recover(&mut self, restored: Vec<PartFile>) -> Result<(), OperatorError> {
        for txn in &restored {
            self.commit(txn.clone())?;
        }
        let entries =
            fs::read_dir(&self.pending_dir).map_err(io(format!("cannot list {}", self.pending_dir.display())))?;
        for entry in entries {
            let entry = entry.map_err(io(format!("cannot list {}", self.pending_dir.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if self.is_mine(&name) {
                // Not in the restored checkpoint: a transaction of a failed attempt. Abort it.
                fs::remove_file(entry.path()).map_err(io(format!("cannot abort {}", entry.path().display())))?;
            }
        }
        Ok(())
    }

    fn write(&mut self, batch: Vec<Record<T>>) -> Result<(), OperatorError> {
        if self.open.is_none() {
            let path = self
                .pending_dir
                .join(format!(".inprogress-{}-{}-{}", self.subtask, self.attempt, self.seq));
            self.seq += 1;
            let f = File::create(&path).map_err(io(format!("cannot create {}", path.display())))?;
            self.open = Some((path, BufWriter::new(f)));
        }
        let (path, out) = self.open.as_mut().expect("opened just above");
        for r in &batch {
            let line = (self.format)(&r.value);
            out.write_all(line.as_bytes())
                .and_then(|_| out.write_all(b"\n"))
                .map_err(io(format!("cannot write {}", path.display())))?;
        }
        Ok(())
    }

    fn pre_commit(&mut self, checkpoint_id: u64) -> Result<Option<PartFile>, OperatorError> {
        let Some((path, out)) = self.open.take() else {
            return Ok(None);
        };
        let file = out
            .into_inner()
            .map_err(|e| OperatorError::io(format!("cannot flush {}", path.display()), e.into_error()))?;
        file.sync_all().map_err(io(format!("cannot sync {}", path.display())))?;
        let name = if checkpoint_id == u64::MAX {
            format!("part-{}-final", self.subtask)
        } else {
            format!("part-{}-{checkpoint_id:010}", self.subtask)
        };
        let target = self.pending_dir.join(&name);
        fs::rename(&path, &target).map_err(io(format!("cannot pre-commit {}", target.display())))?;
        fsync_dir(&self.pending_dir)?;
        Ok(Some(PartFile { name }))
    }

    fn commit(&mut self, txn: PartFile) -> Result<(), OperatorError> {
        let from = self.pending_dir.join(&txn.name);
        let to = self.dir.join(&txn.name);
        match fs::rename(&from, &to) {
            Ok(()) => fsync_dir(&self.dir),
            // Committed before (a restart repeats commits): nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && to.exists() => Ok(()),
            // Neither pre-committed nor committed: the data is gone, and no restart brings it
            // back.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(OperatorError::Unrecoverable(format!(
                "cannot commit {}: the pre-committed part file is missing and {} does not exist either; \
                 its output is lost (was {} cleaned, or the checkpoint restored with another output directory?)",
                from.display(),
                to.display(),
                self.pending_dir.display()
            ))),
            Err(e) => Err(OperatorError::io(
                format!("cannot commit {} (pre-committed data is missing)", from.display()),
                e,
            )),
        }
    }
}
