//! The kernel's floor for a broadcast over loopback TCP: no WebSocket, no runtime on the
//! sending side, no broker. `scripts/bench-fanout-floor` runs several senders and receivers
//! the way `scripts/bench-scale-nodes` runs nodes and generators, so the two compare.
//!
//! ```text
//! tcp-fanout send ADDR GO_FILE
//! tcp-fanout recv ADDRS CONNECTIONS BROADCASTS READY_FILE [READ_PAUSE_US]
//! ```
//!
//! A sender accepts connections until `GO_FILE` appears (`<start, Unix ns> <interval ms>
//! <broadcasts>`), and at each broadcast's time writes one 32-byte message (the broadcast's
//! number and its start time) to every connection with a plain blocking `write`, one after
//! the other: the least work a server can do per delivery. It prints its CPU time and how
//! long each pass took. A receiver opens its connections over the comma-separated `ADDRS`
//! in turn (one tokio task each, on one thread, as `peregrine bench scale` reads), touches
//! `READY_FILE`, prints each broadcast's latencies (from the broadcast's start to the
//! message's arrival: count, p50, p99, last) and touches `READY_FILE.done`. Both keep their
//! connections until they are killed. With `READ_PAUSE_US`, a receiver pauses that long
//! between turns of its event loop while messages arrive, as `peregrine bench scale
//! --read-pause-us` does.

use std::cell::RefCell;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncReadExt;

const MESSAGE: usize = 32;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("send") if args.len() == 4 => send(&args[2], &args[3]),
        Some("recv") if args.len() == 6 || args.len() == 7 => {
            let pause = args.get(6).map_or(0, |us| number(us)) as u64;
            recv(&args[2], number(&args[3]), number(&args[4]), &args[5], pause)
        }
        _ => {
            eprintln!(
                "usage: tcp-fanout send ADDR GO_FILE | recv ADDRS CONNECTIONS BROADCASTS READY_FILE [READ_PAUSE_US]"
            );
            std::process::exit(2);
        }
    }
}

fn number(text: &str) -> usize {
    text.parse().unwrap_or_else(|_| panic!("not a number: {text}"))
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_nanos() as u64
}

/// User + system CPU time of this process, in ms (from /proc, at 100 ticks a second).
fn cpu_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) * 10
}

fn send(addr: &str, go_file: &str) {
    let listener = TcpListener::bind(addr).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut sockets: Vec<TcpStream> = Vec::new();
    let go = loop {
        match listener.accept() {
            Ok((socket, _)) => {
                socket.set_nonblocking(false).expect("blocking");
                socket.set_nodelay(true).expect("nodelay");
                sockets.push(socket);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Ok(text) = std::fs::read_to_string(go_file)
            && text.ends_with('\n')
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let connections = sockets.len();
    let fields: Vec<u64> = go.split_whitespace().map(|f| f.parse().expect("go file: numbers")).collect();
    let (start, interval_ms, broadcasts) = (fields[0], fields[1], fields[2]);
    let cpu_before = cpu_ms();
    let mut passes = Vec::new();
    for b in 0..broadcasts {
        let at = start + b * interval_ms * 1_000_000;
        let now = now_ns();
        if at > now {
            std::thread::sleep(Duration::from_nanos(at - now));
        }
        let mut message = [0u8; MESSAGE];
        message[..8].copy_from_slice(&b.to_le_bytes());
        message[8..16].copy_from_slice(&at.to_le_bytes());
        let began = now_ns();
        for socket in &mut sockets {
            socket.write_all(&message).expect("write");
        }
        passes.push((now_ns() - began) as f64 / 1e6);
    }
    let cpu = cpu_ms() - cpu_before;
    let deliveries = connections as u64 * broadcasts;
    println!(
        "{{\"connections\":{connections},\"cpu_ms\":{cpu},\"cpu_us_per_delivery\":{:.2},\"pass_ms\":{passes:?}}}",
        cpu as f64 * 1000.0 / deliveries as f64
    );
    // Keep the sockets open until the script ends this process: closing 10,000s of sockets
    // is kernel work that would slow the receivers still reading.
    std::thread::sleep(Duration::from_secs(600));
}

fn recv(addrs: &str, connections: usize, broadcasts: usize, ready_file: &str, pause_us: u64) {
    let addrs: Vec<&str> = addrs.split(',').collect();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let latencies: Rc<RefCell<Vec<Vec<u64>>>> = Rc::new(RefCell::new(vec![Vec::new(); broadcasts]));
    // Messages read so far, and the pacer's wake-up at the first of a burst.
    let read = Rc::new(std::cell::Cell::new(0u64));
    let arrived = Rc::new(tokio::sync::Notify::new());
    local.block_on(&runtime, async {
        let mut streams = Vec::with_capacity(connections);
        for i in 0..connections {
            let stream = TcpStream::connect(addrs[i % addrs.len()]).expect("connect");
            stream.set_nonblocking(true).expect("nonblocking");
            streams.push(tokio::net::TcpStream::from_std(stream).expect("register"));
        }
        let mut readers = Vec::with_capacity(connections);
        for mut stream in streams {
            let latencies = Rc::clone(&latencies);
            let (read, arrived) = (Rc::clone(&read), Rc::clone(&arrived));
            readers.push(tokio::task::spawn_local(async move {
                let mut message = [0u8; MESSAGE];
                for _ in 0..broadcasts {
                    if stream.read_exact(&mut message).await.is_err() {
                        break;
                    }
                    let arrived_at = now_ns();
                    let b = u64::from_le_bytes(message[..8].try_into().expect("8 bytes")) as usize;
                    let at = u64::from_le_bytes(message[8..16].try_into().expect("8 bytes"));
                    latencies.borrow_mut()[b].push(arrived_at.saturating_sub(at) / 1000);
                    read.set(read.get() + 1);
                    if pause_us > 0 {
                        arrived.notify_one();
                    }
                }
                // Kept open: a socket closed now is kernel work while others still read.
                stream
            }));
        }
        std::fs::write(ready_file, b"").expect("ready file");
        if pause_us > 0 {
            // As `peregrine bench scale --read-pause-us`: while messages arrive, read many
            // sockets per turn; after a turn with nothing read, wait as usual.
            let (read, arrived) = (Rc::clone(&read), Rc::clone(&arrived));
            tokio::task::spawn_local(async move {
                loop {
                    arrived.notified().await;
                    loop {
                        let before = read.get();
                        std::thread::sleep(Duration::from_micros(pause_us));
                        tokio::task::yield_now().await;
                        if read.get() == before {
                            break;
                        }
                    }
                }
            });
        }
        let mut open = Vec::with_capacity(connections);
        let all = async {
            for reader in readers {
                open.extend(reader.await);
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(60), all).await;
        report(&mut latencies.borrow_mut());
        // Done: tell the script, and keep the connections until it ends this process
        // (closing them now would load the machine while other receivers still read).
        std::fs::write(format!("{ready_file}.done"), b"").expect("done file");
        std::future::pending::<()>().await;
    });
}

/// Prints each broadcast's latencies: count, p50, p99, last.
fn report(latencies: &mut [Vec<u64>]) {
    for (b, list) in latencies.iter_mut().enumerate() {
        list.sort_unstable();
        let at =
            |q: f64| list.get(((list.len() as f64 * q) as usize).min(list.len().saturating_sub(1))).copied();
        println!(
            "{{\"broadcast\":{b},\"delivered\":{},\"p50_us\":{},\"p99_us\":{},\"last_us\":{}}}",
            list.len(),
            at(0.5).unwrap_or(0),
            at(0.99).unwrap_or(0),
            list.last().copied().unwrap_or(0)
        );
    }
}
