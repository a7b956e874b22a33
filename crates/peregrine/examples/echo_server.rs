//! An echo server: `echo_server 127.0.0.1:9001 [--single-thread] [--no-deflate]`.
//!
//! Every text and binary message is sent back. This is the server the
//! Autobahn fuzzing client and the benchmarks talk to. permessage-deflate is
//! accepted when a client offers it, unless `--no-deflate` is given.

mod common;

use std::net::SocketAddr;

use peregrine::proto::extension::DeflateConfig;
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr =
        args.next().unwrap_or_else(|| "127.0.0.1:9001".into()).parse().map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("listen address: {e}"))
        })?;
    let flags: Vec<String> = args.collect();
    let single_thread = flags.iter().any(|a| a == "--single-thread" || a == "--current-thread");
    let deflate = !flags.iter().any(|a| a == "--no-deflate");
    let runtime = if single_thread {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()?
    };
    runtime.block_on(serve(addr, deflate))
}

async fn serve(addr: SocketAddr, deflate: bool) -> std::io::Result<()> {
    // Shared, not cloned: every idle connection's task would carry a copy.
    let config = std::sync::Arc::new(peregrine::Config::default().deflate(deflate.then(fast_deflate)));
    let listener = TcpListener::bind(addr).await?;
    eprintln!("echo server listening on ws://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let config = config.clone();
        tokio::spawn(async move {
            tcp.set_nodelay(true)?;
            let ws = peregrine::accept_with(tcp, &config, |request| Ok(request.accept())).await?;
            common::echo(ws).await
        });
    }
}

/// Level 1: Autobahn's 12.* and 13.* push about a gigabyte through compression,
/// and the fast level takes 40% off their run time with the same verdicts.
fn fast_deflate() -> DeflateConfig {
    DeflateConfig::default().level(1)
}
