//! `peregrine serve`: the realtime server. Parsing only; the server is
//! `peregrine_server::app::run`.

use std::net::SocketAddr;

use clap::Args;
use peregrine_server::app::config::Config;

/// Arguments of `peregrine serve`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
                  peregrine serve                                  # development mode on 127.0.0.1:8080\n  \
                  peregrine serve --listen 0.0.0.0:8080 --api-key \"$KEY\"")]
pub struct ServeArgs {
    /// Address to listen on (WebSocket, HTTP API, /health, /metrics).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Key for the HTTP API (`Authorization: apikey KEY`).
    #[arg(long, value_name = "KEY", env = "PEREGRINE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Runtime worker threads (1: single-threaded; 0: one per core).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
}

/// Runs `peregrine serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::development();
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if args.api_key.is_some() {
        config.api_key = args.api_key;
    }
    if let Some(workers) = args.workers {
        config.workers = workers;
    }
    eprintln!(
        "peregrine serve: development mode (anonymous clients, any Origin, every channel with history and presence); do not expose it"
    );
    peregrine_server::app::run(config)?;
    Ok(())
}
