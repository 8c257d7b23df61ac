//! Reading and writing frames on a byte stream (a TCP connection).

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{decode_body, FrameError};
use super::message::WireMessage;
use super::MAX_FRAME_BYTES;

/// Reads one frame of at most [`MAX_FRAME_BYTES`]; `Ok(None)` when the peer closed the
/// connection between frames. See [`read_frame_limited`].
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<WireMessage>, FrameError> {
    read_frame_limited(r, MAX_FRAME_BYTES, None).await
}

/// The most bytes read into a frame's buffer at once: a frame's buffer grows with what the
/// peer actually sent, so a length prefix alone (or a frame that stops halfway) holds little
/// memory.
const READ_CHUNK: usize = 64 * 1024;

/// Reads one frame of at most `max_len` bytes; `Ok(None)` when the peer closed the connection
/// between frames.
///
/// The length prefix is checked against `max_len` before the body is read, and the body's
/// buffer grows with the bytes that arrive (never by the announced length at once), so a
/// hostile peer can make us hold no more than it actually sent, and at most `max_len`. With
/// `body_timeout`, a frame that has begun must be complete within it (a peer that sends half a
/// frame and stops is cut off); the wait for a frame to begin is not limited.
pub async fn read_frame_limited<R: AsyncRead + Unpin>(
    r: &mut R,
    max_len: usize,
    body_timeout: Option<std::time::Duration>,
) -> Result<Option<WireMessage>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r
            .read(&mut prefix[got..])
            .await
            .map_err(|e| FrameError::Io(e.to_string()))?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated { got, expected: 4 })
            };
        }
        got += n;
    }
    let len = u32::from_le_bytes(prefix) as usize;
    if len > max_len {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    let body = match body_timeout {
        None => read_body(r, len).await?,
        Some(t) => tokio::time::timeout(t, read_body(r, len)).await.map_err(|_| {
            FrameError::Io(format!(
                "a frame of {len} bytes did not arrive within {} ms",
                t.as_millis()
            ))
        })??,
    };
    decode_body(&body).map(Some)
}

async fn read_body<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::with_capacity(len.min(READ_CHUNK));
    while body.len() < len {
        let got = body.len();
        body.resize(got + (len - got).min(READ_CHUNK), 0);
        let n = r
            .read(&mut body[got..])
            .await
            .map_err(|e| FrameError::Io(e.to_string()))?;
        body.truncate(got + n);
        if n == 0 {
            return Err(FrameError::Truncated { got, expected: len });
        }
    }
    Ok(body)
}

/// Writes an encoded frame (from [`super::encode_frame`]) and flushes it.
///
/// Flushing matters: the simulator's TCP stream sends only on flush.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Bytes) -> Result<(), FrameError> {
    w.write_all(frame).await.map_err(|e| FrameError::Io(e.to_string()))?;
    w.flush().await.map_err(|e| FrameError::Io(e.to_string()))
}
