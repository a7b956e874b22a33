//! fastwebsockets echo server: `fastwebsockets-echo ADDR`.
//!
//! fastwebsockets' own `echo_server` example: hyper serves the upgrade
//! request (`fastwebsockets::upgrade::upgrade`), a `FragmentCollector` reads
//! whole messages, each text or binary frame is written back with
//! `write_frame().await`. auto_close and auto_pong are on (the defaults), so
//! pings are answered and close frames replied to. Like the example, the
//! connection task runs `unconstrained`.

use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};

async fn handle_client(fut: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(fut.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
    Ok(())
}

async fn server_upgrade(mut req: Request<Incoming>) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, fut) = upgrade::upgrade(&mut req)?;
    tokio::spawn(async move {
        let _ = tokio::task::unconstrained(handle_client(fut)).await;
    });
    Ok(response)
}

fn main() -> std::io::Result<()> {
    peregrine_bench_peers::serve("fastwebsockets", |tcp| async move {
        let io = hyper_util::rt::TokioIo::new(tcp);
        let _ = http1::Builder::new().serve_connection(io, service_fn(server_upgrade)).with_upgrades().await;
    })
}
