//! Objects in S3-compatible (or any `object_store`) storage.
//!
//! Only built with the `object-store` feature and outside the simulation: the `object_store`
//! crate brings the real tokio and an HTTP client, which madsim cannot drive. The simulation
//! uses [`super::MemoryStore`] behind the same trait.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};

use super::{validate_path, BlobError, BlobStore, BoxFuture};

/// A [`BlobStore`] over any `object_store` backend, under a key prefix.
pub struct ObjectStoreBlob {
    inner: Arc<dyn ObjectStore>,
    prefix: String,
    description: String,
}

impl fmt::Debug for ObjectStoreBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectStoreBlob({})", self.description)
    }
}

fn io_err(path: &str, e: object_store::Error) -> BlobError {
    match e {
        object_store::Error::NotFound { .. } => BlobError::NotFound(path.to_string()),
        object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. } => {
            BlobError::AlreadyExists(path.to_string())
        }
        other => BlobError::Io {
            path: path.to_string(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

impl ObjectStoreBlob {
    /// Wraps `inner`; object paths are put under `prefix` (may be empty).
    pub fn new(inner: Arc<dyn ObjectStore>, prefix: &str, description: &str) -> Self {
        ObjectStoreBlob {
            inner,
            prefix: prefix.trim_matches('/').to_string(),
            description: description.to_string(),
        }
    }

    /// S3 (or an S3-compatible service) from a URL `s3://bucket/prefix`. Credentials, region
    /// and endpoint come from the usual `AWS_*` environment variables
    /// (`AWS_ENDPOINT` for MinIO and friends, `AWS_ALLOW_HTTP=true` for plain HTTP).
    pub fn s3_from_url(url: &str) -> Result<Self, BlobError> {
        let bad = |reason: &'static str| BlobError::InvalidPath {
            path: url.to_string(),
            reason,
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| bad("an S3 location starts with s3://"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the S3 location names no bucket"));
        }
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| io_err(url, e))?;
        Ok(Self::new(Arc::new(store), prefix, url))
    }

    fn full(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }
}

impl BlobStore for ObjectStoreBlob {
    fn put_if_absent<'a>(&'a self, path: &'a str, bytes: Bytes) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            self.inner
                .put_opts(&Path::from(self.full(path)), PutPayload::from_bytes(bytes), opts)
                .await
                .map(|_| ())
                .map_err(|e| io_err(path, e))
        })
    }

    fn get<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            let r = self
                .inner
                .get(&Path::from(self.full(path)))
                .await
                .map_err(|e| io_err(path, e))?;
            r.bytes().await.map_err(|e| io_err(path, e))
        })
    }

    fn get_range<'a>(&'a self, path: &'a str, range: std::ops::Range<u64>) -> BoxFuture<'a, Result<Bytes, BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            let want = range.end.saturating_sub(range.start);
            let got = if range.start < range.end {
                self.inner.get_range(&Path::from(self.full(path)), range.clone()).await
            } else {
                // An empty (or reversed) range needs no request beyond the size check below.
                Ok(Bytes::new())
            };
            match got {
                Ok(b) if b.len() as u64 == want && range.start <= range.end => Ok(b),
                Err(object_store::Error::NotFound { .. }) => Err(BlobError::NotFound(path.to_string())),
                // Stores answer a range past the end with a short body or an error of their
                // own: either way the size says which it was.
                other => {
                    let size = self.head(path).await?;
                    super::check_range(path, &range, size)?;
                    match other {
                        Err(e) => Err(io_err(path, e)),
                        Ok(b) => Err(BlobError::Io {
                            path: path.to_string(),
                            source: std::io::Error::other(format!(
                                "asked for {want} bytes of range {range:?}, got {}",
                                b.len()
                            )),
                        }),
                    }
                }
            }
        })
    }

    fn head<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<u64, BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            let meta = self
                .inner
                .head(&Path::from(self.full(path)))
                .await
                .map_err(|e| io_err(path, e))?;
            Ok(meta.size)
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, BlobError>> {
        Box::pin(async move {
            // object_store lists by whole path segments; ours is a plain string prefix, so list
            // the enclosing directory and filter.
            let dir = match prefix.rfind('/') {
                Some(i) => &prefix[..i],
                None => "",
            };
            let full_dir = self.full(dir);
            let listing = if full_dir.is_empty() {
                None
            } else {
                Some(Path::from(full_dir))
            };
            let metas: Vec<_> = self
                .inner
                .list(listing.as_ref())
                .try_collect()
                .await
                .map_err(|e| io_err(prefix, e))?;
            let strip = if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            };
            let mut out: Vec<String> = metas
                .into_iter()
                .filter_map(|m| m.location.as_ref().strip_prefix(strip.as_str()).map(str::to_string))
                .filter(|p| p.starts_with(prefix))
                .collect();
            out.sort();
            Ok(out)
        })
    }

    fn delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, Result<(), BlobError>> {
        Box::pin(async move {
            validate_path(path)?;
            match self.inner.delete(&Path::from(self.full(path))).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io_err(path, e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    #[test]
    fn create_if_absent_list_and_delete_over_object_store() {
        rt().block_on(async {
            let s = ObjectStoreBlob::new(Arc::new(object_store::memory::InMemory::new()), "root/p", "memory");
            s.put_if_absent("job/chk-0000000001/_metadata", Bytes::from_static(b"m1"))
                .await
                .unwrap();
            s.put_if_absent("job/chk-0000000002/a/0.state", Bytes::from_static(b"s"))
                .await
                .unwrap();
            s.put_if_absent("job/other", Bytes::from_static(b"o")).await.unwrap();
            let again = s
                .put_if_absent("job/chk-0000000001/_metadata", Bytes::from_static(b"m2"))
                .await;
            assert!(matches!(again, Err(BlobError::AlreadyExists(_))), "{again:?}");
            assert_eq!(
                s.get("job/chk-0000000001/_metadata").await.unwrap(),
                Bytes::from_static(b"m1")
            );
            assert_eq!(
                s.list("job/chk-").await.unwrap(),
                ["job/chk-0000000001/_metadata", "job/chk-0000000002/a/0.state"]
            );
            s.delete("job/other").await.unwrap();
            s.delete("job/other").await.unwrap();
            assert!(matches!(s.get("job/other").await, Err(BlobError::NotFound(_))));
            assert!(ObjectStoreBlob::s3_from_url("gs://x").is_err());
            crate::blob::contract::ranged_reads_and_head_agree_with_get(&s).await;
        });
    }
}
