//! The disk tier of the block cache: raw (still checksummed) blocks in a local directory,
//! through foyer's hybrid cache.
//!
//! A cache, never the source of truth: foyer drops writes under bursts and evicts at will,
//! and a block read back from disk is checked against its checksum before use, so a damaged
//! or foreign cache file costs a fetch from the object store, not a wrong value. Any failure
//! of the tier (it cannot be opened, a read fails) turns it into misses.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder, HybridCachePolicy,
    PsyncIoEngineConfig, RecoverMode,
};

use super::cache::BlockKey;

/// Where the disk tier lives and how large it may grow: a directory checked and claimed by
/// [`DiskCacheConfig::claim`] (clones share the claim, released when the last one goes).
#[derive(Debug, Clone)]
pub struct DiskCacheConfig {
    dir: PathBuf,
    capacity: usize,
    /// Held locked: no other process uses the directory meanwhile.
    _lock: Arc<File>,
}

/// Why a directory cannot hold the disk tier.
#[derive(Debug, thiserror::Error)]
pub enum DiskCacheError {
    /// The size asked for is below [`MIN_DISK_CACHE`].
    #[error("the disk cache must be at least {}MiB, got {capacity} bytes", min >> 20)]
    TooSmall {
        /// Bytes asked for.
        capacity: usize,
        /// The minimum.
        min: usize,
    },
    /// The directory cannot be created, or written.
    #[error("disk cache directory '{dir}': {reason}")]
    Dir {
        /// The directory.
        dir: String,
        /// What failed.
        reason: String,
    },
    /// Another process (or another cache of this one) uses the directory.
    #[error("disk cache directory '{dir}' is in use by another process (its LOCK file is locked): give each process its own directory")]
    InUse {
        /// The directory.
        dir: String,
    },
    /// The file system has less room than the cache may take.
    #[error("disk cache directory '{dir}': its file system has {free} bytes free, fewer than the {capacity} bytes asked for")]
    NoRoom {
        /// The directory.
        dir: String,
        /// Bytes asked for.
        capacity: usize,
        /// Bytes free.
        free: u64,
    },
}

impl DiskCacheConfig {
    /// Checks that `dir` can hold a disk tier of `capacity` bytes (created if missing,
    /// writable, with that much room) and claims it for this process: a second claim,
    /// from this process or another, is refused while this one lives.
    pub fn claim(dir: PathBuf, capacity: usize) -> Result<Self, DiskCacheError> {
        if capacity < MIN_DISK_CACHE {
            return Err(DiskCacheError::TooSmall {
                capacity,
                min: MIN_DISK_CACHE,
            });
        }
        let shown = dir.display().to_string();
        let refused = |reason: String| DiskCacheError::Dir {
            dir: shown.clone(),
            reason,
        };
        private_dir(&dir).map_err(refused)?;
        // Someone else's directory is refused before a LOCK file is left in it.
        clear(&dir, false).map_err(refused)?;
        let lock = lock_file(&dir).map_err(|e| refused(format!("cannot write its LOCK file: {e}")))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(DiskCacheError::InUse { dir: shown }),
            Err(std::fs::TryLockError::Error(e)) => return Err(refused(format!("cannot lock its LOCK file: {e}"))),
        }
        clear(&dir, true).map_err(refused)?;
        let free = free_space(&dir).map_err(|e| refused(format!("cannot read its file system's free space: {e}")))?;
        if free < capacity as u64 {
            return Err(DiskCacheError::NoRoom {
                dir: shown,
                capacity,
                free,
            });
        }
        Ok(DiskCacheConfig {
            dir,
            capacity,
            _lock: Arc::new(lock),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes the tier may take on disk.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The files foyer writes in the directory (one per unit of disk space).
const CACHE_FILE_PREFIX: &str = "foyer-storage-direct-fs-";

/// Makes sure `dir` is a directory only this user can change (created, mode 0700, if
/// missing): the cache's files are opened by name and follow symbolic links, so anyone who
/// could plant one there could have cache blocks written over a file of their choosing.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if dir.as_os_str().is_empty() {
        return Err("an empty path names no directory".into());
    }
    if dir.parent().is_none() {
        return Err("the file system's root is no cache directory: give it a directory of its own".into());
    }
    match std::fs::metadata(dir) {
        Ok(m) if !m.is_dir() => return Err("it exists and is not a directory".into()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create it: {e}"))?,
        Err(e) => return Err(format!("cannot read it: {e}")),
    }
    let m = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(format!(
            "it belongs to user {}, not to this process's user {me}: give the cache a directory of its own",
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 {
        return Err(format!(
            "other users may write in it (mode {:o}): the cache needs a directory only its user can change (e.g. mode 700)",
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

/// Opens (creating) `dir/LOCK` without following a symbolic link.
fn lock_file(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join("LOCK"))
}

/// Deletes an earlier process's cache files when `remove` (nothing of them is trusted or
/// recovered, and they take room; only under the lock); refuses a directory that holds
/// anything else, which is someone else's.
fn clear(dir: &Path, remove: bool) -> Result<(), String> {
    for entry in std::fs::read_dir(dir).map_err(|e| format!("cannot list it: {e}"))? {
        let entry = entry.map_err(|e| format!("cannot list it: {e}"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type().map_err(|e| format!("cannot read '{name}': {e}"))?;
        if name == "LOCK" || (name == "lost+found" && kind.is_dir()) {
            continue;
        }
        if name.starts_with(CACHE_FILE_PREFIX) && !kind.is_dir() {
            if remove {
                std::fs::remove_file(entry.path())
                    .map_err(|e| format!("cannot remove the earlier cache file '{name}': {e}"))?;
            }
            continue;
        }
        return Err(format!(
            "it holds '{name}', which is no cache file: give the cache an empty directory of its own"
        ));
    }
    Ok(())
}

/// Bytes free for unprivileged users on the file system of `dir`.
fn free_space(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` is a
    // plain struct statvfs fills in; it is read only when the call succeeded.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
    }
}

/// The smallest disk tier: a few of foyer's eviction units.
pub const MIN_DISK_CACHE: usize = 16 * DISK_BLOCK;

/// foyer's unit of disk space and eviction; the largest entry it can hold.
const DISK_BLOCK: usize = 4 << 20;

/// The hybrid cache's own memory tier: small, as decoded blocks live in the memory tier
/// above it and raw copies here would only duplicate them.
const RAW_MEMORY: usize = 1 << 20;

type Raw = HybridCache<BlockKey, Bytes>;

/// The disk tier, opened on first use (it needs the runtime its tasks run on).
pub(super) struct DiskTier {
    /// Dropped before `config` (fields drop in order): the claim on the directory outlives
    /// the cache.
    cache: tokio::sync::OnceCell<Option<Raw>>,
    config: DiskCacheConfig,
    /// Lookups answered from disk, and failures (opening, reading, damaged blocks).
    pub(super) hits: AtomicU64,
    pub(super) errors: AtomicU64,
}

impl DiskTier {
    pub(super) fn new(config: DiskCacheConfig) -> Self {
        DiskTier {
            cache: tokio::sync::OnceCell::new(),
            config,
            hits: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    pub(super) fn config(&self) -> &DiskCacheConfig {
        &self.config
    }

    /// The opened cache, or `None` when it could not be opened (counted once).
    async fn raw(&self) -> Option<&Raw> {
        let opened = self
            .cache
            .get_or_init(|| async {
                match open(&self.config).await {
                    Ok(c) => Some(c),
                    Err(_) => {
                        self.errors.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            })
            .await;
        opened.as_ref()
    }

    /// The raw block under `key`, if the tier has it.
    pub(super) async fn get(&self, key: &BlockKey) -> Option<Bytes> {
        let raw = self.raw().await?;
        match raw.get(key).await {
            Ok(Some(entry)) => Some(entry.value().clone()),
            Ok(None) => None,
            Err(_) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Keeps a raw block (written to disk in the background, or dropped under pressure).
    pub(super) async fn insert(&self, key: BlockKey, bytes: Bytes) {
        if let Some(raw) = self.raw().await {
            raw.insert(key, bytes);
        }
    }

    /// A block read from disk failed its checksum: forget it.
    pub(super) async fn damaged(&self, key: &BlockKey) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(raw) = self.raw().await {
            raw.remove(key);
        }
    }

    /// Bytes written to and read from disk so far.
    pub(super) fn io(&self) -> (u64, u64) {
        self.cache.get().and_then(Option::as_ref).map_or((0, 0), |raw| {
            let s = raw.statistics();
            (s.disk_write_bytes() as u64, s.disk_read_bytes() as u64)
        })
    }
}

async fn open(config: &DiskCacheConfig) -> foyer::Result<Raw> {
    // foyer 0.22's device builder creates the directory itself and panics when it cannot (an
    // eagerly evaluated `unwrap_or`): a directory that went away since the claim must be an
    // error here, not a panic in the task reading through the cache.
    std::fs::create_dir_all(&config.dir).map_err(foyer::Error::io_error)?;
    let device = FsDeviceBuilder::new(&config.dir)
        .with_capacity(config.capacity)
        .build()?;
    HybridCacheBuilder::new()
        .with_name("sluice-state-blocks")
        // Every fetched block goes to disk at once: the memory tier above evicts on its own
        // and would not tell this one.
        .with_policy(HybridCachePolicy::WriteOnInsertion)
        .memory(RAW_MEMORY)
        .with_weighter(|k: &BlockKey, v: &Bytes| v.len() + k.file.len() + 64)
        .storage()
        .with_io_engine_config(PsyncIoEngineConfig::new())
        .with_engine_config(BlockEngineConfig::new(device).with_block_size(DISK_BLOCK))
        // A previous process's files are not trusted: the tier starts empty.
        .with_recover_mode(RecoverMode::None)
        .build()
        .await
}

/// How a block key is written to disk.
impl foyer::Code for BlockKey {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        let file = self.file.as_bytes();
        let mut out = Vec::with_capacity(self.estimated_size());
        out.extend_from_slice(&(file.len() as u32).to_le_bytes());
        out.extend_from_slice(file);
        out.extend_from_slice(&self.run.0.to_le_bytes());
        out.extend_from_slice(&self.run.1.to_le_bytes());
        out.extend_from_slice(&self.block.to_le_bytes());
        writer.write_all(&out).map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        let mut u32_buf = [0u8; 4];
        reader.read_exact(&mut u32_buf).map_err(foyer::Error::io_error)?;
        let len = u32::from_le_bytes(u32_buf) as usize;
        // A key longer than any object path is damage, not an allocation to make.
        if len > 64 << 10 {
            return Err(foyer::Error::io_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "block key names a file path longer than 64 KiB",
            )));
        }
        let mut file = vec![0u8; len];
        reader.read_exact(&mut file).map_err(foyer::Error::io_error)?;
        let file = String::from_utf8(file)
            .map_err(|e| foyer::Error::io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let mut u64_buf = [0u8; 8];
        reader.read_exact(&mut u64_buf).map_err(foyer::Error::io_error)?;
        let size = u64::from_le_bytes(u64_buf);
        reader.read_exact(&mut u32_buf).map_err(foyer::Error::io_error)?;
        let crc = u32::from_le_bytes(u32_buf);
        reader.read_exact(&mut u32_buf).map_err(foyer::Error::io_error)?;
        Ok(BlockKey {
            file: file.into(),
            run: (size, crc),
            block: u32::from_le_bytes(u32_buf),
        })
    }

    fn estimated_size(&self) -> usize {
        4 + self.file.len() + 8 + 4 + 4
    }
}
