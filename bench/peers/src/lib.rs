//! What every peer echo server shares: the `ADDR` argument, a tokio
//! current-thread runtime (one core, as `echo_server --single-thread`), and
//! an accept loop that spawns one task per connection with `TCP_NODELAY` set
//! (our server sets it too; without it Nagle's algorithm would hold back
//! echoes when several messages are in flight).

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// Parses `ADDR` from the command line, then serves every accepted
/// connection with `handle` on a current-thread runtime.
pub fn serve<F, Fut>(name: &str, handle: F) -> std::io::Result<()>
where
    F: Fn(TcpStream) -> Fut + Copy + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("ADDR: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(addr).await?;
        eprintln!("{name} echo server listening on {}", listener.local_addr()?);
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: keep serving the others.
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::task::yield_now().await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(handle(tcp));
        }
    })
}
