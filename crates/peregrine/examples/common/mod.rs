//! The echo loop shared by the examples.

use peregrine::{Message, Result, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};

/// Echoes every data message until the connection ends. Replies to all the
/// messages already received are queued first and leave in one write.
///
/// An error does not end the loop: the connection is still finishing (its
/// close frame, and any replies queued before the violation, are being
/// written), and it ends with `None`. The first error is returned then.
///
/// A plain `fn` returning an `async move` block, not an `async fn`: an
/// `async fn` keeps its argument twice in its state (rust-lang/rust#62958),
/// and this future lives as long as the connection (measured: 2,445 -> 1,817
/// bytes of server memory per idle connection, with the shared config).
#[allow(clippy::manual_async_fn)]
pub fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut ws: WebSocket<S>) -> impl Future<Output = Result<()>> {
    async move {
        let mut outcome = Ok(());
        while let Some(first) = ws.recv().await {
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Ok(message @ (Message::Text(_) | Message::Binary(_))) => ws.feed(message).await?,
                    Ok(_) => {}
                    Err(e) => {
                        if outcome.is_ok() {
                            outcome = Err(e);
                        }
                    }
                }
                next = ws.try_recv();
            }
            ws.flush().await?;
        }
        outcome
    }
}
