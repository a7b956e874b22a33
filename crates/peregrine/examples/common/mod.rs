//! The echo loop shared by the examples.

use peregrine::{Result, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

/// Echoes every data message until the connection ends. Replies to all the
/// messages already received are queued first and leave in one write.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> Result<()> {
    while let Some(message) = ws.recv().await {
        let message = message?;
        if message.is_data() {
            ws.feed(message).await?;
        }
        while let Some(message) = ws.try_recv() {
            let message = message?;
            if message.is_data() {
                ws.feed(message).await?;
            }
        }
        ws.flush().await?;
    }
    Ok(())
}
