//! Sorted-run files: the immutable files the tiered store keeps its state in.
//!
//! A run holds unique byte keys in ascending order, each with a value or a tombstone. Every
//! key starts with its key group (two bytes, big-endian), so a key-group range is a key range
//! and the footer can say which key groups a file covers (what a rescaled subtask needs to
//! know before it fetches anything). Layout, all integers little-endian except the key-group
//! prefix:
//!
//! ```text
//! block*   entries (u32 key len, key, u8 tag 0=value 1=tombstone, [u32 len, value]) + u32 crc32
//! bloom    u8 hashes, u32 byte len, bits                                            + u32 crc32
//! index    u32 blocks, per block (u64 offset, u32 len, u32 last-key len, last key)  + u32 crc32
//! footer   "SLRUN\0\0\1", u32 version, u32 first kg, u32 last kg, u64 entries,
//!          u64 bloom offset, u32 bloom len, u64 index offset, u32 index len          + u32 crc32
//! ```
//!
//! Every section carries a checksum, so a flipped bit is an error naming the file and the
//! section, never a wrong value. A reader fetches the tail (bloom, index, footer) once per
//! file and then single blocks by ranged reads.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::TieredError;
use crate::blob::{BlobError, BlobStore};
use crate::stable_hash;

const MAGIC: &[u8; 8] = b"SLRUN\0\0\x01";
const VERSION: u32 = 1;
const FOOTER_LEN: usize = 8 + 4 + 4 + 4 + 8 + 8 + 4 + 8 + 4 + 4;
/// Bytes read from a file's end in one request when opening it; enough for the bloom filter
/// and index of a run of a few tens of megabytes, so one request usually suffices.
const TAIL_GUESS: u64 = 64 * 1024;
const BLOOM_BITS_PER_KEY: usize = 10;
const BLOOM_HASHES: u8 = 6;
const TAG_VALUE: u8 = 0;
const TAG_TOMBSTONE: u8 = 1;

/// The hash a run's bloom filter is built from.
pub fn key_hash(key: &[u8]) -> u64 {
    stable_hash(key)
}

/// The key group a stored key belongs to: its first two bytes.
pub fn key_group_of(key: &[u8]) -> Option<u32> {
    key.get(..2).map(|p| u32::from(u16::from_be_bytes([p[0], p[1]])))
}

/// Writes one run: keys must come in strictly ascending order.
#[derive(Debug)]
pub struct RunWriter {
    block_size: usize,
    out: BytesMut,
    block: BytesMut,
    index: Vec<(u64, u32, Bytes)>,
    hashes: Vec<u64>,
    last_key: Option<Bytes>,
    first_kg: Option<u32>,
}

/// What a finished run holds, for its manifest entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// Entries (values and tombstones).
    pub entries: u64,
    /// The first and last key group of its keys.
    pub key_groups: (u32, u32),
    /// The file's size in bytes.
    pub size: u64,
}

impl RunWriter {
    /// A writer that cuts blocks at about `block_size` bytes.
    pub fn new(block_size: usize) -> Self {
        RunWriter {
            block_size: block_size.max(64),
            out: BytesMut::new(),
            block: BytesMut::new(),
            index: Vec::new(),
            hashes: Vec::new(),
            last_key: None,
            first_kg: None,
        }
    }

    /// Adds `key` with its value, or a tombstone (`None`).
    pub fn add(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), TieredError> {
        let kg = key_group_of(key)
            .ok_or_else(|| TieredError::BadInput(format!("key of {} bytes has no key group", key.len())))?;
        if let Some(last) = &self.last_key {
            if key <= last.as_ref() {
                return Err(TieredError::BadInput(
                    "keys must be added in strictly ascending order".into(),
                ));
            }
        }
        self.first_kg.get_or_insert(kg);
        put_len(&mut self.block, key.len())?;
        self.block.put_slice(key);
        match value {
            Some(v) => {
                self.block.put_u8(TAG_VALUE);
                put_len(&mut self.block, v.len())?;
                self.block.put_slice(v);
            }
            None => self.block.put_u8(TAG_TOMBSTONE),
        }
        if self.block.len() > u32::MAX as usize - 4 {
            return Err(TieredError::BadInput("an entry too large for a run block".into()));
        }
        self.hashes.push(stable_hash(key));
        self.last_key = Some(Bytes::copy_from_slice(key));
        if self.block.len() >= self.block_size {
            self.cut_block();
        }
        Ok(())
    }

    /// Bytes written so far (blocks, without the index and filter `finish` adds).
    pub fn len(&self) -> usize {
        self.out.len() + self.block.len()
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.last_key.is_none()
    }

    fn cut_block(&mut self) {
        if self.block.is_empty() {
            return;
        }
        let crc = crc32fast::hash(&self.block);
        self.block.put_u32_le(crc);
        let offset = self.out.len() as u64;
        let len = self.block.len() as u32;
        self.out.extend_from_slice(&self.block);
        self.block.clear();
        let last = self.last_key.clone().expect("a non-empty block has a last key");
        self.index.push((offset, len, last));
    }

    /// Ends the file: its bytes and summary. `None` for a run without entries.
    pub fn finish(mut self) -> Option<(Bytes, RunSummary)> {
        self.cut_block();
        let first_kg = self.first_kg?;
        let last_kg = key_group_of(self.last_key.as_deref().expect("entries were added")).expect("checked in add");
        let bloom_off = self.out.len() as u64;
        let bloom = Bloom::build(&self.hashes);
        let bloom_len = bloom.encode(&mut self.out);
        let index_off = self.out.len() as u64;
        let index_len = encode_index(&self.index, &mut self.out);
        let start = self.out.len();
        self.out.put_slice(MAGIC);
        self.out.put_u32_le(VERSION);
        self.out.put_u32_le(first_kg);
        self.out.put_u32_le(last_kg);
        self.out.put_u64_le(self.hashes.len() as u64);
        self.out.put_u64_le(bloom_off);
        self.out.put_u32_le(bloom_len);
        self.out.put_u64_le(index_off);
        self.out.put_u32_le(index_len);
        let crc = crc32fast::hash(&self.out[start..]);
        self.out.put_u32_le(crc);
        let summary = RunSummary {
            entries: self.hashes.len() as u64,
            key_groups: (first_kg, last_kg),
            size: self.out.len() as u64,
        };
        Some((self.out.freeze(), summary))
    }
}

/// Writes a length as u32, refusing what does not fit rather than truncating it.
fn put_len(out: &mut BytesMut, len: usize) -> Result<(), TieredError> {
    let len = u32::try_from(len).map_err(|_| TieredError::BadInput(format!("an entry of {len} bytes is too large")))?;
    out.put_u32_le(len);
    Ok(())
}

fn encode_index(index: &[(u64, u32, Bytes)], out: &mut BytesMut) -> u32 {
    let start = out.len();
    out.put_u32_le(index.len() as u32);
    for (offset, len, last) in index {
        out.put_u64_le(*offset);
        out.put_u32_le(*len);
        out.put_u32_le(last.len() as u32);
        out.put_slice(last);
    }
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32_le(crc);
    (out.len() - start) as u32
}

/// A bloom filter over a run's keys: a key it rules out is not in the file, so a lookup
/// fetches no block of it.
#[derive(Debug, Clone)]
struct Bloom {
    hashes: u8,
    bits: Bytes,
}

impl Bloom {
    fn build(key_hashes: &[u64]) -> Self {
        let bytes = (key_hashes.len() * BLOOM_BITS_PER_KEY).div_ceil(8).max(8);
        let mut bits = vec![0u8; bytes];
        for &h in key_hashes {
            for bit in probe(h, BLOOM_HASHES, bytes * 8) {
                bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        Bloom {
            hashes: BLOOM_HASHES,
            bits: Bytes::from(bits),
        }
    }

    fn may_contain_hash(&self, hash: u64) -> bool {
        let nbits = self.bits.len() * 8;
        probe(hash, self.hashes, nbits).all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }

    fn encode(&self, out: &mut BytesMut) -> u32 {
        let start = out.len();
        out.put_u8(self.hashes);
        out.put_u32_le(self.bits.len() as u32);
        out.put_slice(&self.bits);
        let crc = crc32fast::hash(&out[start..]);
        out.put_u32_le(crc);
        (out.len() - start) as u32
    }
}

/// The bit positions of a key hash (double hashing: Kirsch and Mitzenmacher).
fn probe(h: u64, hashes: u8, nbits: usize) -> impl Iterator<Item = usize> {
    let (h1, h2) = (h as u32, ((h >> 32) as u32) | 1);
    (0..u32::from(hashes)).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) as usize) % nbits)
}

/// Where one block lies in its file, and the last key it holds.
#[derive(Debug, Clone)]
struct BlockHandle {
    offset: u64,
    len: u32,
    last_key: Bytes,
}

/// An opened run: its index and bloom filter, held in memory while the run is live; blocks
/// are fetched separately.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// Shared with every cache key naming one of its blocks.
    file: Arc<str>,
    size: u64,
    /// The footer's crc32 (see [`RunMeta::identity`]).
    footer_crc: u32,
    key_groups: (u32, u32),
    entries: u64,
    blocks: Vec<BlockHandle>,
    bloom: Bloom,
}

/// Reads the little-endian integers of a section, failing (not panicking) on a short one.
struct Reader<'a> {
    buf: &'a [u8],
    file: &'a str,
    what: &'static str,
}

impl Reader<'_> {
    fn need(&self, n: usize) -> Result<(), TieredError> {
        if self.buf.remaining() < n {
            return Err(TieredError::corrupt(self.file, format!("{} is truncated", self.what)));
        }
        Ok(())
    }
    fn u8(&mut self) -> Result<u8, TieredError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u32(&mut self) -> Result<u32, TieredError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, TieredError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], TieredError> {
        self.need(n)?;
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
}

/// Checks a section's trailing crc32 and returns the section without it.
fn checked<'a>(file: &str, what: &str, section: &'a [u8]) -> Result<&'a [u8], TieredError> {
    let Some(body_len) = section.len().checked_sub(4) else {
        return Err(TieredError::corrupt(file, format!("{what} is truncated")));
    };
    let (body, crc) = section.split_at(body_len);
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().expect("split at len - 4")) {
        return Err(TieredError::corrupt(file, format!("{what} fails its checksum")));
    }
    Ok(body)
}

/// The parsed footer: where the bloom filter and index are.
struct Footer {
    /// The footer's crc32: with the file's size, what tells two runs apart in a cache even if
    /// one path were used for both.
    crc: u32,
    key_groups: (u32, u32),
    entries: u64,
    bloom: (u64, u32),
    index: (u64, u32),
}

fn parse_footer(file: &str, size: u64, tail: &[u8]) -> Result<Footer, TieredError> {
    if tail.len() < FOOTER_LEN {
        return Err(TieredError::corrupt(
            file,
            format!("{size} bytes is too short for a run"),
        ));
    }
    let footer_bytes = &tail[tail.len() - FOOTER_LEN..];
    let crc = u32::from_le_bytes(footer_bytes[FOOTER_LEN - 4..].try_into().expect("4 bytes"));
    let body = checked(file, "footer", footer_bytes)?;
    let mut r = Reader {
        buf: body,
        file,
        what: "footer",
    };
    if r.bytes(8)? != MAGIC {
        return Err(TieredError::corrupt(file, "no run file (wrong magic)"));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(TieredError::corrupt(
            file,
            format!("run format version {version}, this build reads {VERSION}"),
        ));
    }
    let key_groups = (r.u32()?, r.u32()?);
    let entries = r.u64()?;
    let bloom = (r.u64()?, r.u32()?);
    let index = (r.u64()?, r.u32()?);
    // Checked sums: offsets come from the file and must not overflow into a match.
    let bloom_end = bloom.0.checked_add(u64::from(bloom.1));
    let index_end = index
        .0
        .checked_add(u64::from(index.1))
        .and_then(|e| e.checked_add(FOOTER_LEN as u64));
    if bloom_end != Some(index.0) || index_end != Some(size) {
        return Err(TieredError::corrupt(
            file,
            "footer's section offsets do not match the file's size",
        ));
    }
    Ok(Footer {
        crc,
        key_groups,
        entries,
        bloom,
        index,
    })
}

impl RunMeta {
    /// Opens run `file` of `store`: one ranged read of its tail (two when the index is large).
    pub async fn open(store: &dyn BlobStore, file: &str) -> Result<Self, TieredError> {
        let size = retried(file, || store.head(file)).await?;
        let first = size.saturating_sub(TAIL_GUESS);
        let mut tail = retried(file, || store.get_range(file, first..size)).await?;
        let footer = parse_footer(file, size, &tail)?;
        let mut start = first;
        if footer.bloom.0 < first {
            start = footer.bloom.0;
            tail = retried(file, || store.get_range(file, start..size)).await?;
        }
        Self::decode(file, size, &tail[(footer.bloom.0 - start) as usize..], footer)
    }

    /// Parses a whole run file held in memory (what a writer just produced).
    pub fn from_bytes(file: &str, bytes: &[u8]) -> Result<Self, TieredError> {
        let footer = parse_footer(file, bytes.len() as u64, bytes)?;
        Self::decode(file, bytes.len() as u64, &bytes[footer.bloom.0 as usize..], footer)
    }

    /// Parses the bloom filter and index (`sections` starts at the bloom filter).
    fn decode(file: &str, size: u64, sections: &[u8], footer: Footer) -> Result<Self, TieredError> {
        let (bloom_bytes, rest) = sections.split_at(footer.bloom.1 as usize);
        let index_bytes = &rest[..footer.index.1 as usize];
        let mut r = Reader {
            buf: checked(file, "bloom filter", bloom_bytes)?,
            file,
            what: "bloom filter",
        };
        let hashes = r.u8()?;
        let len = r.u32()? as usize;
        let bits = Bytes::copy_from_slice(r.bytes(len)?);
        if bits.is_empty() || hashes == 0 {
            return Err(TieredError::corrupt(file, "empty bloom filter"));
        }
        let blocks = decode_index(file, size, checked(file, "index", index_bytes)?, footer.bloom.0)?;
        Ok(RunMeta {
            file: Arc::from(file),
            size,
            footer_crc: footer.crc,
            key_groups: footer.key_groups,
            entries: footer.entries,
            blocks,
            bloom: Bloom { hashes, bits },
        })
    }

    /// The run's object path.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The run's object path, shared.
    pub fn file_arc(&self) -> &Arc<str> {
        &self.file
    }

    /// What tells this run's bytes apart from another run's under the same path (its size
    /// and footer checksum): part of every cache key, so a path used twice (a job directory
    /// deleted and used again, two jobs of one name in one process) never serves one run's
    /// blocks for another's.
    pub fn identity(&self) -> (u64, u32) {
        (self.size, self.footer_crc)
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first and last key group of its keys.
    pub fn key_groups(&self) -> (u32, u32) {
        self.key_groups
    }

    /// Entries (values and tombstones) in the run.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Blocks in the run.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// The block that would hold `key`, unless the bloom filter or the key range rules it
    /// out.
    pub fn block_for(&self, key: &[u8]) -> Option<usize> {
        self.block_for_hashed(key, stable_hash(key))
    }

    /// [`Self::block_for`] with the key's hash ([`key_hash`]) computed once for all runs.
    pub fn block_for_hashed(&self, key: &[u8], hash: u64) -> Option<usize> {
        if !self.bloom.may_contain_hash(hash) {
            return None;
        }
        let i = self.blocks.partition_point(|b| b.last_key.as_ref() < key);
        (i < self.blocks.len()).then_some(i)
    }

    /// The blocks whose keys may fall in `[from, to)` (all blocks from the one that could
    /// hold `from` to the one that could hold the last key before `to`).
    pub fn blocks_in(&self, from: &[u8], to: &[u8]) -> std::ops::Range<usize> {
        let first = self.blocks.partition_point(|b| b.last_key.as_ref() < from);
        let end = self.blocks.partition_point(|b| b.last_key.as_ref() < to);
        first..(end + 1).min(self.blocks.len()).max(first)
    }

    /// The byte range of block `i` in the file.
    pub fn block_range(&self, i: usize) -> std::ops::Range<u64> {
        let b = &self.blocks[i];
        b.offset..b.offset + u64::from(b.len)
    }

    /// Fetches and checks block `i`.
    pub async fn fetch_block(&self, store: &dyn BlobStore, i: usize) -> Result<Arc<Block>, TieredError> {
        let bytes = self.fetch_raw_block(store, i).await?;
        Block::decode(&self.file, i, bytes).map(Arc::new)
    }

    /// Block `i` as stored (checksum included, not checked yet): what the disk cache keeps.
    pub async fn fetch_raw_block(&self, store: &dyn BlobStore, i: usize) -> Result<Bytes, TieredError> {
        retried(&self.file, || store.get_range(&self.file, self.block_range(i))).await
    }
}

/// Tries of a store request before its error counts.
const TRIES: u32 = 4;

/// Runs a store request, retrying transient failures with a growing pause (object stores fail
/// now and then, and one failed read must not fail a task); an object that is missing or a
/// range outside it is no transient failure.
pub(crate) async fn retried<T, F, Fut>(file: &str, mut f: F) -> Result<T, TieredError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BlobError>>,
{
    let mut pause = std::time::Duration::from_millis(10);
    for _ in 1..TRIES {
        match f().await {
            Err(BlobError::Io { .. } | BlobError::Injected { .. }) => {
                tokio::time::sleep(pause).await;
                pause *= 4;
            }
            done => return done.map_err(|e| TieredError::store(file, e)),
        }
    }
    f().await.map_err(|e| TieredError::store(file, e))
}

fn decode_index(file: &str, size: u64, body: &[u8], data_end: u64) -> Result<Vec<BlockHandle>, TieredError> {
    let mut r = Reader {
        buf: body,
        file,
        what: "index",
    };
    let n = r.u32()? as usize;
    // Each index entry takes at least 16 bytes: a count larger than the section allows is
    // damage, not an allocation to make.
    if n > body.len() / 16 {
        return Err(TieredError::corrupt(file, format!("index claims {n} blocks")));
    }
    let mut blocks = Vec::with_capacity(n);
    let mut next = 0u64;
    for _ in 0..n {
        let offset = r.u64()?;
        let len = r.u32()?;
        let key_len = r.u32()? as usize;
        let last_key = Bytes::copy_from_slice(r.bytes(key_len)?);
        if offset != next || len < 4 || offset + u64::from(len) > data_end.min(size) {
            return Err(TieredError::corrupt(
                file,
                "index names a block outside the data section",
            ));
        }
        next = offset + u64::from(len);
        blocks.push(BlockHandle { offset, len, last_key });
    }
    Ok(blocks)
}

/// One checked, parsed block: its entries in key order, sharing the fetched bytes.
#[derive(Debug)]
pub struct Block {
    entries: Vec<(Bytes, Option<Bytes>)>,
    size: usize,
}

impl Block {
    /// Checks block `index` of `file` and parses its entries.
    pub fn decode(file: &str, index: usize, bytes: Bytes) -> Result<Self, TieredError> {
        let size = bytes.len();
        let what = format!("block {index}");
        checked(file, &what, &bytes)?;
        let mut body = bytes.slice(..size - 4);
        let mut entries = Vec::new();
        let short = || TieredError::corrupt(file, format!("block {index} is truncated"));
        while body.has_remaining() {
            let key_len = take_u32(&mut body).ok_or_else(short)? as usize;
            let key = take(&mut body, key_len).ok_or_else(short)?;
            let value = match take(&mut body, 1).ok_or_else(short)?[0] {
                TAG_VALUE => {
                    let len = take_u32(&mut body).ok_or_else(short)? as usize;
                    Some(take(&mut body, len).ok_or_else(short)?)
                }
                TAG_TOMBSTONE => None,
                tag => return Err(TieredError::corrupt(file, format!("block {index} has entry tag {tag}"))),
            };
            entries.push((key, value));
        }
        Ok(Block { entries, size })
    }

    /// The entry of `key` in this block: `Some(None)` is a tombstone, `None` not here.
    pub fn get(&self, key: &[u8]) -> Option<Option<&Bytes>> {
        self.entries
            .binary_search_by(|(k, _)| k.as_ref().cmp(key))
            .ok()
            .map(|i| self.entries[i].1.as_ref())
    }

    /// The entries in key order.
    pub fn entries(&self) -> &[(Bytes, Option<Bytes>)] {
        &self.entries
    }

    /// The block's size in bytes, as a cache weighs it.
    pub fn size(&self) -> usize {
        self.size
    }
}

fn take_u32(b: &mut Bytes) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32_le())
}

fn take(b: &mut Bytes, n: usize) -> Option<Bytes> {
    (b.remaining() >= n).then(|| b.split_to(n))
}
