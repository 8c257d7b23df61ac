//! One stream type for plain and TLS connections, so the framing code above it is the same
//! for both.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A TCP stream whose shutdown flushes first. TLS writes its close_notify and then shuts the
/// socket down without flushing; the simulator's sockets send only on flush, so without this
/// the last bytes of a TLS connection would never leave in the simulation.
#[derive(Debug)]
pub struct Flushing(pub(super) TcpStream);

impl AsyncRead for Flushing {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Flushing {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.0).poll_flush(cx))?;
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A connection as the cluster's ports use it: plain TCP, or TLS on either side.
#[derive(Debug)]
pub enum NetStream {
    /// No TLS (a cluster without security configured).
    Plain(TcpStream),
    /// TLS, this side dialed.
    Client(Box<tokio_rustls::client::TlsStream<Flushing>>),
    /// TLS, this side accepted.
    Server(Box<tokio_rustls::server::TlsStream<Flushing>>),
}

impl NetStream {
    /// The underlying TCP stream (for socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            NetStream::Plain(s) => s,
            NetStream::Client(s) => &s.get_ref().0 .0,
            NetStream::Server(s) => &s.get_ref().0 .0,
        }
    }
}

impl AsyncRead for NetStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let read = match self.get_mut() {
            NetStream::Plain(s) => return Pin::new(s).poll_read(cx, buf),
            NetStream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            NetStream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        // A peer that closes without TLS's close_notify (a killed process) is an end of
        // stream like any other here: the frames above are self-delimiting, so a connection
        // cut inside a frame is still caught there ("closed in the middle of a frame").
        match read {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for NetStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            NetStream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            NetStream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_flush(cx),
            NetStream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            NetStream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            NetStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            NetStream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            NetStream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
