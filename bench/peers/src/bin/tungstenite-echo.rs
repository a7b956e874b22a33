//! tokio-tungstenite echo server: `tungstenite-echo ADDR`.
//!
//! The loop of tokio-tungstenite's own `autobahn-server` example: read a
//! message, send text and binary back with `send().await`. Pings are answered
//! and close frames replied to by tungstenite itself.

use futures_util::{SinkExt, StreamExt};

fn main() -> std::io::Result<()> {
    peregrine_bench_peers::serve("tokio-tungstenite", |tcp| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
    })
}
