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
    #[error("the disk cache must be at least {min} bytes, got {capacity}")]
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
        let failed = |what: &str, e: std::io::Error| DiskCacheError::Dir {
            dir: shown.clone(),
            reason: format!("{what}: {e}"),
        };
        std::fs::create_dir_all(&dir).map_err(|e| failed("cannot create it", e))?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("LOCK"))
            .map_err(|e| failed("cannot write in it", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(DiskCacheError::InUse { dir: shown }),
            Err(std::fs::TryLockError::Error(e)) => return Err(failed("cannot lock its LOCK file", e)),
        }
        // Nothing of an earlier process is trusted or recovered: its files go, and with them
        // any room they took.
        for f in std::fs::read_dir(&dir).map_err(|e| failed("cannot list it", e))? {
            let f = f.map_err(|e| failed("cannot list it", e))?;
            if f.file_name().to_string_lossy().starts_with("foyer-") {
                std::fs::remove_file(f.path()).map_err(|e| failed("cannot remove an earlier cache file", e))?;
            }
        }
        let free = free_space(&dir).map_err(|e| failed("cannot read its file system's free space", e))?;
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
