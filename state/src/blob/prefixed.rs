//! A view of a sub-directory of another store, e.g. one savepoint among many in a bucket.

use bytes::Bytes;

use super::{BlobError, BlobStore, BoxFuture};

/// Every path is taken relative to `prefix` in `inner`; listings and errors name paths
/// relative to the prefix.
#[derive(Debug)]
pub struct PrefixedStore<S> {
    inner: S,
    /// Empty, or ending in '/'.
    prefix: String,
}

impl<S: BlobStore> PrefixedStore<S> {
    /// The sub-directory `dir` of `inner`.
    pub fn new(inner: S, dir: &str) -> Self {
        let dir = dir.trim_matches('/');
        PrefixedStore {
            inner,
            prefix: if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            },
        }
    }

    fn full(&self, path: &str) -> String {
        format!("{}{path}", self.prefix)
    }

    fn strip(&self, e: BlobError) -> BlobError {
        match e {
            BlobError::NotFound(p) => {
                BlobError::NotFound(p.strip_prefix(&self.prefix).map(str::to_string).unwrap_or(p))
            }
            BlobError::AlreadyExists(p) => {
                BlobError::AlreadyExists(p.strip_prefix(&self.prefix).map(str::to_string).unwrap_or(p))
            }
            other => other,
        }
    }
}

impl<S: BlobStore> BlobStore for PrefixedStore<S> {
    fn put_if_absent<'a>(&'a self, path: &'a str, bytes: Bytes) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            self.inner
                .put_if_absent(&self.full(path), bytes)
                .await
                .map_err(|e| self.strip(e))
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move { self.inner.get(&self.full(path)).await.map_err(|e| self.strip(e)) })
    }

    fn get_range<'a>(&'a self, path: &'a str, range: std::ops::Range<u64>) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move {
            self.inner
                .get_range(&self.full(path), range)
                .await
                .map_err(|e| self.strip(e))
        })
    }

    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        Box::pin(async move { self.inner.head(&self.full(path)).await.map_err(|e| self.strip(e)) })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, BlobError>> {
        Box::pin(async move {
            let all = self.inner.list(&self.full(prefix)).await?;
            Ok(all
                .into_iter()
                .filter_map(|p| p.strip_prefix(&self.prefix).map(str::to_string))
                .collect())
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move { self.inner.delete(&self.full(path)).await.map_err(|e| self.strip(e)) })
    }
}
