//! tokio-websockets echo server: `tokio-websockets-echo ADDR`.
//!
//! tokio-websockets' own `echo_server` example with the default `Config` and
//! `Limits`: `ServerBuilder::accept`, then every text or binary message is
//! sent back with `send().await`. Pings are answered and close frames replied
//! to by the library. Like the example, the connection task runs
//! `unconstrained`.

use futures_util::{SinkExt, StreamExt};
use tokio_websockets::ServerBuilder;

fn main() -> std::io::Result<()> {
    peregrine_bench_peers::serve("tokio-websockets", |tcp| {
        tokio::task::unconstrained(async move {
            let Ok((_request, mut ws)) = ServerBuilder::new().accept(tcp).await else { return };
            while let Some(Ok(message)) = ws.next().await {
                if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                    break;
                }
            }
        })
    })
}
