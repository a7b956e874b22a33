//! `peregrine`: connect to, serve and load-test WebSockets.
//!
//! This file only parses arguments and dispatches; each subcommand lives in
//! the module named after it.

mod bench;
mod connect;
mod echo;
mod serve;

use clap::{Parser, Subcommand};

/// jemalloc rather than the system allocator: under connection churn glibc's heap keeps the
/// holes the handshakes leave between long-lived session state, and a node held 8-9 KB per
/// idle subscribed connection against jemalloc's 3.7 KB (docs/benchmarks.md, "Where the
/// bytes of a subscribed connection go"). Only the binary chooses: the library crates leave
/// the allocator to their users; `--no-default-features` builds it with the system's.
#[cfg(all(feature = "jemalloc", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A WebSocket toolbox: an interactive client that shows frames and explains
/// failures, an echo server, and a load generator.
#[derive(Debug, Parser)]
#[command(name = "peregrine", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Connect to a ws:// or wss:// URL and exchange messages: interactive on a
    /// terminal, one message per line when piped; shows frames and explains
    /// failed handshakes and dropped connections.
    Connect(connect::ConnectArgs),
    /// Run an echo server (ws:// or wss://) for tests and demos.
    Echo(echo::EchoArgs),
    // No doc comment here: it would replace the long help that `BenchArgs` sets.
    Bench(bench::BenchArgs),
    /// Run the realtime server: channels, ordered and recoverable delivery,
    /// auth, limits, HTTP API, /metrics.
    Serve(serve::ServeArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Connect(args) => connect::run(args),
        Command::Echo(args) => echo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The causes on one line, and no backtrace even with
            // RUST_BACKTRACE set: these are the user's errors, not ours.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
