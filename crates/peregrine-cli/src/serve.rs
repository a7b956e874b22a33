//! `peregrine serve`: the realtime server. Parsing only; the server is
//! `peregrine_server::app::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use peregrine_server::config::{Config, Sources};

/// Arguments of `peregrine serve`.
#[derive(Debug, Args)]
#[command(
    long_about = "Run the realtime server: channels, ordered and recoverable delivery, auth, limits, \
                  an HTTP API, /health and /metrics, all on one port.\n\n\
                  Configuration: defaults < TOML file (--config or PEREGRINE_CONFIG) < environment \
                  (PEREGRINE_KEY, PEREGRINE_SECTION__KEY) < flags. With no file the server starts in \
                  development mode (anonymous clients, any Origin, open HTTP API) and prints its \
                  configuration with a warning. Every key: docs/configuration.md.",
    after_help = "Examples:\n  \
                  peregrine serve                                          # development mode on 127.0.0.1:8080\n  \
                  peregrine serve --config peregrine.toml\n  \
                  peregrine serve --config peregrine.toml --listen 0.0.0.0:8080 --set client.ping_interval=15s\n  \
                  PEREGRINE_API_KEY=secret peregrine serve --config peregrine.toml"
)]
pub struct ServeArgs {
    /// TOML configuration file (production base: tokens, origins and an API key needed).
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (key `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Key for the HTTP API, `Authorization: apikey KEY` (key `api_key`; or PEREGRINE_API_KEY).
    #[arg(long, value_name = "KEY")]
    api_key: Option<String>,
    /// Certificate chain (PEM) for TLS (key `tls.cert`); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) for TLS (key `tls.key`).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// An Origin browsers may connect from; repeatable (key `allowed_origins`).
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,
    /// HS256 secret for connection and subscription tokens (key `token.hmac_secret`).
    #[arg(long, value_name = "SECRET")]
    token_hmac_secret: Option<String>,
    /// Runtime worker threads: 1 runs single-threaded, 0 one per core (key `workers`).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Force development mode on (or off with --dev=false) whatever the base.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    dev: Option<bool>,
    /// Set any key: --set client.ping_interval=15s (repeatable; see docs/configuration.md).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the effective configuration (secrets redacted) and exit.
    #[arg(long)]
    print_config: bool,
}

fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

impl ServeArgs {
    /// The flags as key-path overrides, after `--set` ones (typed flags win).
    fn overrides(&self) -> Vec<String> {
        let mut out = self.set.clone();
        let path = |p: &PathBuf| toml_string(&p.display().to_string());
        if let Some(listen) = self.listen {
            out.push(format!("listen={}", toml_string(&listen.to_string())));
        }
        if let Some(key) = &self.api_key {
            out.push(format!("api_key={}", toml_string(key)));
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            out.push(format!("tls.cert={}", path(cert)));
            out.push(format!("tls.key={}", path(key)));
        }
        if !self.allowed_origins.is_empty() {
            let list: Vec<String> = self.allowed_origins.iter().map(|o| toml_string(o)).collect();
            out.push(format!("allowed_origins=[{}]", list.join(",")));
        }
        if let Some(secret) = &self.token_hmac_secret {
            out.push(format!("token.hmac_secret={}", toml_string(secret)));
        }
        if let Some(workers) = self.workers {
            out.push(format!("workers={workers}"));
        }
        if let Some(dev) = self.dev {
            out.push(format!("development={dev}"));
        }
        out
    }
}

/// Runs `peregrine serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let sources =
        Sources { file: args.config.clone(), env: std::env::vars().collect(), overrides: args.overrides() };
    let config = match Config::load(&sources) {
        Ok(config) => config,
        Err(e) => {
            // A configuration error is the user's to fix: say what and where, no backtrace.
            eprintln!("peregrine serve: configuration error: {e}");
            std::process::exit(2);
        }
    };
    if args.print_config {
        print!("{}", config.redacted_toml());
        return Ok(());
    }
    if config.development {
        eprintln!(
            "peregrine serve: DEVELOPMENT MODE (no configuration file): anonymous clients, any Origin, \
             an HTTP API without a key, every channel with history and presence. Do not expose it; \
             give --config for production. Effective configuration:\n\n{}",
            config.redacted_toml()
        );
    }
    peregrine_server::app::run(config)?;
    Ok(())
}
