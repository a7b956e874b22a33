//! WebSocket inside an axum app: `cargo run -p peregrine --features axum --example axum [PORT]`.
//!
//! Listens on 127.0.0.1:3000 (or the port given). `GET /` answers text;
//! `/ws` upgrades through the [`WebSocketUpgrade`] extractor and echoes every
//! message, speaking subprotocol `echo` when the client offers it. Try it
//! with `peregrine connect ws://127.0.0.1:3000/ws`; a plain
//! `curl -i http://127.0.0.1:3000/ws` shows the 426 with its reason.

mod common;

use axum::Router;
use axum::response::Response;
use axum::routing::get;
use peregrine::upgrade::WebSocketUpgrade;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1) {
        Some(port) => port.parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("port {port:?}: {e}"))
        })?,
        None => 3000,
    };
    let app = Router::new()
        .route("/", get(|| async { "peregrine inside axum: connect to /ws for an echo\n" }))
        .route("/ws", get(echo));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    eprintln!("listening on http://{0} (WebSocket: ws://{0}/ws)", listener.local_addr()?);
    axum::serve(listener, app).await
}

async fn echo(ws: WebSocketUpgrade) -> Response {
    // The 101 is returned from this handler first; the callback runs in a
    // task of its own once axum has sent it.
    ws.protocols(["echo"]).on_upgrade(|socket| async move {
        if let Err(error) = common::echo(socket).await {
            eprintln!("echo connection ended with an error: {error}");
        }
    })
}
