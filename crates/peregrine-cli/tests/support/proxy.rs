//! A loopback TCP proxy that can break its connections the way networks do: reset them
//! (RST, no close frame), or silently drop what the server sends.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

#[derive(Default)]
struct Link {
    cut: Notify,
    /// Server → client bytes are read and thrown away.
    mute: AtomicBool,
    /// Nothing is forwarded either way, and nothing is closed: a dead peer.
    freeze: AtomicBool,
}

/// Forwards `127.0.0.1:<port>` to an upstream address.
pub struct Proxy {
    pub addr: SocketAddr,
    links: Arc<Mutex<Vec<Arc<Link>>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<Mutex<Vec<Arc<Link>>>> = Arc::default();
        let registry = links.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else { continue };
                let link = Arc::new(Link::default());
                registry.lock().unwrap().push(link.clone());
                tokio::spawn(forward(client, server, link));
            }
        });
        Proxy { addr, links, accept }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/connection/websocket", self.addr)
    }

    fn live(&self) -> Vec<Arc<Link>> {
        let mut links = self.links.lock().unwrap();
        links.retain(|l| Arc::strong_count(l) > 1);
        links.clone()
    }

    /// Resets every open connection (both sides get an RST); returns how many.
    pub fn cut_all(&self) -> usize {
        let live = self.live();
        for link in &live {
            link.cut.notify_one();
        }
        live.len()
    }

    /// From now on, drops what the server sends on the open connections.
    pub fn mute_all(&self) {
        for link in self.live() {
            link.mute.store(true, Ordering::SeqCst);
        }
    }

    /// From now on, forwards nothing on the open connections and keeps them open.
    pub fn freeze_all(&self) {
        for link in self.live() {
            link.freeze.store(true, Ordering::SeqCst);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_all();
    }
}

async fn forward(mut client: TcpStream, mut server: TcpStream, link: Arc<Link>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let mut up = vec![0u8; 64 << 10];
    let mut down = vec![0u8; 64 << 10];
    loop {
        if link.freeze.load(Ordering::SeqCst) {
            tokio::select! {
                _ = link.cut.notified() => break,
                _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            }
            continue;
        }
        tokio::select! {
            _ = link.cut.notified() => break,
            n = client.read(&mut up) => match n {
                Ok(0) | Err(_) => { let _ = server.shutdown().await; return; }
                Ok(n) => if server.write_all(&up[..n]).await.is_err() { return },
            },
            n = server.read(&mut down) => match n {
                Ok(0) | Err(_) => { let _ = client.shutdown().await; return; }
                Ok(n) => {
                    if !link.mute.load(Ordering::SeqCst) && client.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                }
            },
        }
    }
    // A zero linger makes close send RST instead of FIN: no close frame, no goodbye.
    for stream in [&client, &server] {
        let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
    }
}
