//! Accepting connections on a port without letting the port take the process down: at most
//! a set number of connections at once (a connection beyond it is closed at once and counted),
//! and accept errors (out of file descriptors, say) logged and retried with back-off instead
//! of ending the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The longest pause after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A listener with a connection limit; see the module documentation.
pub(crate) struct Acceptor {
    listener: TcpListener,
    permits: Arc<Semaphore>,
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
            limit,
            port,
            log,
            refused: 0,
            last_refusal_log: None,
        }
    }

    /// The next connection and its permit (the connection counts against the limit until
    /// the permit is dropped).
    pub(crate) async fn accept(&mut self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => return (stream, peer, permit),
                    Err(_) => {
                        drop(stream);
                        self.refused(peer);
                    }
                },
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

    /// Logs refused connections at most once a second (a flood must not flood the log too).
    fn refused(&mut self, peer: SocketAddr) {
        self.refused += 1;
        let now = tokio::time::Instant::now();
        if self
            .last_refusal_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            slog::warn!(self.log, "refused connections: the port is at its connection limit"; "port" => self.port,
                "limit" => self.limit, "refused" => self.refused, "last_peer" => peer.to_string());
            self.refused = 0;
            self.last_refusal_log = Some(now);
        }
    }
}
