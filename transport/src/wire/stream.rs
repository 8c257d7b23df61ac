//! Reading and writing frames on a byte stream (a TCP connection).

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::codec::{decode_body, FrameError};
use super::message::WireMessage;
use super::MAX_FRAME_BYTES;

/// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
///
/// The length prefix is checked against [`MAX_FRAME_BYTES`] before the body is read, so a
/// hostile peer can't make us allocate more than that.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<WireMessage>, FrameError> {
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
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_BYTES,
        });
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = r
            .read(&mut body[got..])
            .await
            .map_err(|e| FrameError::Io(e.to_string()))?;
        if n == 0 {
            return Err(FrameError::Truncated { got, expected: len });
        }
        got += n;
    }
    decode_body(&body).map(Some)
}

/// Writes an encoded frame (from [`super::encode_frame`]) and flushes it.
///
/// Flushing matters: the simulator's TCP stream sends only on flush.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &Bytes) -> Result<(), FrameError> {
    w.write_all(frame).await.map_err(|e| FrameError::Io(e.to_string()))?;
    w.flush().await.map_err(|e| FrameError::Io(e.to_string()))
}
