//! Reading an HTTP header block off a transport, bounded by the limit.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::{Error, Result};

/// Reads into `buf` until `parse` returns `Some`. `parse` sees the whole
/// buffer each time and enforces the header size limit itself; reads are small
/// so the buffer never grows far past that limit.
pub(crate) async fn read_head<S, T>(
    io: &mut S,
    buf: &mut BytesMut,
    mut parse: impl FnMut(&[u8]) -> Result<Option<T>>,
) -> Result<T>
where
    S: AsyncRead + Unpin,
{
    loop {
        if !buf.is_empty()
            && let Some(parsed) = parse(buf)?
        {
            return Ok(parsed);
        }
        buf.reserve(1024);
        if io.read_buf(buf).await? == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the peer closed the connection during the opening handshake",
            )));
        }
    }
}
