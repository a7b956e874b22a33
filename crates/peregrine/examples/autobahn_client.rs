//! The Autobahn|Testsuite client driver:
//! `autobahn_client ws://127.0.0.1:9002 peregrine`.
//!
//! Asks the fuzzing server how many cases there are, runs each one by echoing
//! every message, then asks it to write the reports. permessage-deflate is
//! offered unless `--no-deflate` is given.

mod common;

use peregrine::proto::extension::DeflateConfig;
use peregrine::{ClientBuilder, Config, Message, Result};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let base = args.next().unwrap_or_else(|| "ws://127.0.0.1:9002".into());
    let agent = args.next().unwrap_or_else(|| "peregrine".into());
    let deflate = !args.any(|a| a == "--no-deflate");
    let config = Config::default().deflate(deflate.then(fast_deflate));
    let connect = |url: String| ClientBuilder::new(url).config(config.clone()).connect();

    let (mut ws, _) = peregrine::connect(&format!("{base}/getCaseCount")).await?;
    let mut count = 0;
    while let Some(message) = ws.recv().await {
        if let Message::Text(text) = message? {
            count = text.parse().map_err(|_| peregrine::Error::Url(format!("bad case count {text:?}")))?;
        }
    }
    eprintln!("running {count} cases");
    for case in 1..=count {
        let (ws, _) = connect(format!("{base}/runCase?case={case}&agent={agent}")).await?;
        // Failing a case is the suite's verdict to give, not ours: go on.
        if let Err(e) = common::echo(ws).await {
            eprintln!("case {case}: {e}");
        }
    }
    let (mut ws, _) = peregrine::connect(&format!("{base}/updateReports?agent={agent}")).await?;
    while ws.recv().await.is_some() {}
    Ok(())
}

/// Level 1: Autobahn's 12.* and 13.* push about a gigabyte through compression,
/// and the fast level takes 40% off their run time with the same verdicts.
fn fast_deflate() -> DeflateConfig {
    DeflateConfig::default().level(1)
}
