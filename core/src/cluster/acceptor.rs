//! Accepting connections on a port without letting the port take the process down: at most
//! a set number of connections at once (a connection beyond it is closed at once and counted),
//! at most [`MAX_PENDING_PER_ADDRESS`] from one address that have not yet said who they are
//! (one host opening connections and holding them in the handshake cannot fill the port), and
//! accept errors (out of file descriptors, say) logged and retried with back-off instead of
//! ending the server.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::sync::LockExt;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest pause after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Connections from one address at once that have not completed their TLS handshake and
/// first frame (greeting).
pub(crate) const MAX_PENDING_PER_ADDRESS: u32 = 64;

/// Counts a connection as not yet introduced until dropped (its handler drops it once the
/// peer's handshake and first frame are in).
#[derive(Debug)]
pub(crate) struct Pending {
    counts: Arc<Mutex<BTreeMap<IpAddr, u32>>>,
    ip: IpAddr,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut counts = self.counts.locked();
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// A connection taken by [`Acceptor::accept`].
pub(crate) struct Accepted {
    pub(crate) stream: TcpStream,
    pub(crate) peer: SocketAddr,
    /// Held for as long as the connection is open.
    pub(crate) permit: OwnedSemaphorePermit,
    /// Dropped once the peer has introduced itself.
    pub(crate) pending: Pending,
}

/// A listener with a connection limit; see the module documentation.
pub(crate) struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
    pending: Arc<Mutex<BTreeMap<IpAddr, u32>>>,
    limit: usize,
    /// What the port is for, in log lines ("control", "data").
    port: &'static str,
    log: slog::Logger,
    /// Connections refused at the limit since the last log line about them.
    refused: u64,
    last_refusal_log: Option<tokio::time::Instant>,
}

impl Acceptor {
    /// Accepts on `listener`, at most `limit` connections at once.
    pub(crate) fn new(listener: TcpListener, limit: usize, port: &'static str, log: slog::Logger) -> Self {
        Acceptor {
            listener,
            permits: Arc::new(Semaphore::new(limit)),
            pending: Arc::default(),
            limit,
            port,
            log,
            refused: 0,
            last_refusal_log: None,
        }
    }

    /// The next connection with its permit (the connection counts against the limit until
    /// the permit is dropped) and its pending mark.
    pub(crate) async fn accept(&mut self) -> Accepted {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    let Some(pending) = self.pending(peer.ip()) else {
                        drop(stream);
                        self.refused(
                            peer,
                            "too many connections from this address have not introduced themselves",
                        );
                        continue;
                    };
                    match self.permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            return Accepted {
                                stream,
                                peer,
                                permit,
                                pending,
                            }
                        }
                        Err(_) => {
                            drop(stream);
                            self.refused(peer, "the port is at its connection limit");
                        }
                    }
                }
                Err(e) => {
                    // EMFILE and the like: the process is short of something for a while.
                    slog::warn!(self.log, "accepting a connection failed; retrying"; "port" => self.port,
                        "error" => %e, "retry_in_ms" => backoff.as_millis() as u64);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Marks a connection from `ip` pending, unless that address has too many already.
    fn pending(&self, ip: IpAddr) -> Option<Pending> {
        let mut counts = self.pending.locked();
        let n = counts.entry(ip).or_insert(0);
        if *n >= MAX_PENDING_PER_ADDRESS {
            return None;
        }
        *n += 1;
        Some(Pending {
            counts: self.pending.clone(),
            ip,
        })
    }

    /// Logs refused connections at most once a second (a flood must not flood the log too).
    fn refused(&mut self, peer: SocketAddr, why: &'static str) {
        self.refused += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            slog::warn!(self.log, "refused connections"; "reason" => why, "port" => self.port,
                "limit" => self.limit, "refused" => self.refused, "last_peer" => peer.to_string());
            self.refused = 0;
            self.last_refusal_log = Some(now);
        }
    }
}
