//! Serving the REST API: its own accept loop over hyper, because a port open to a network
//! needs what `axum::serve` does not give: a limit on connections (more are closed at once),
//! a deadline for a request's header (a client that dribbles bytes is cut off), an idle
//! timeout for kept-alive connections (a client that connects and stays silent holds nothing
//! for long), and accept errors (out of file descriptors) retried with back-off instead of
//! ending the server.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

/// The limits of the REST port.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Connections at once; more are closed at once.
    pub max_connections: usize,
    /// How long a request's header may take to arrive.
    pub header_timeout: Duration,
    /// How long a connection may go without a byte either way before it is closed.
    pub idle_timeout: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            max_connections: 256,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// Serves `app` on `listener` until the process ends; over TLS with `tls`.
pub async fn serve(
    listener: Arc<TcpListener>,
    app: Router,
    limits: ServeLimits,
    tls: Option<Arc<ServerConfig>>,
    log: slog::Logger,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut backoff = Duration::from_millis(10);
    let mut refused = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = Duration::from_millis(10);
                c
            }
            Err(e) => {
                slog::warn!(log, "REST API: accepting a connection failed; retrying"; "error" => %e,
                    "retry_in_ms" => backoff.as_millis() as u64);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                slog::warn!(log, "REST API: refused connections at the connection limit";
                    "limit" => limits.max_connections, "refused" => refused, "last_peer" => peer.to_string());
                refused = 0;
                last_refusal_log = Some(Instant::now());
            }
            continue;
        };
        let app = app.clone().layer(axum::Extension(super::auth::Peer(peer)));
        let (tls, log) = (tls.clone(), log.clone());
        tokio::spawn(async move {
            match tls {
                None => serve_connection(stream, app, limits).await,
                Some(tls) => {
                    // The handshake counts as the start of the header: same deadline.
                    let accept = TlsAcceptor::from(tls).accept(stream);
                    match tokio::time::timeout(limits.header_timeout, accept).await {
                        Ok(Ok(stream)) => serve_connection(stream, app, limits).await,
                        Ok(Err(e)) => {
                            slog::info!(log, "REST API: TLS handshake failed"; "peer" => peer.to_string(), "error" => %e)
                        }
                        Err(_) => slog::info!(log, "REST API: TLS handshake timed out"; "peer" => peer.to_string()),
                    }
                }
            }
            drop(permit);
        });
    }
}

/// Serves HTTP/1.1 on one connection until it closes, idles out or errs.
async fn serve_connection<S>(stream: S, app: Router, limits: ServeLimits)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(IdleTimeout::new(stream, limits.idle_timeout));
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Some(limits.header_timeout))
        .keep_alive(true)
        .serve_connection(io, TowerToHyperService::new(app));
    // Errors are the client's (it went away, sent garbage, timed out): nothing to do.
    let _ = conn.await;
}

/// A stream that fails its reads and writes once nothing has moved either way for `idle`.
struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> IdleTimeout<S> {
    fn new(inner: S, idle: Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        self.deadline.as_mut().reset(Instant::now() + self.idle);
    }

    /// `Ready(err)` once the connection has been idle too long.
    fn expired(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Error> {
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the connection was idle too long",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.expired(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.moved();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.expired(cx) {
                Poll::Ready(e) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
