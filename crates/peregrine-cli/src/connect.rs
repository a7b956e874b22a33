//! placeholder: `peregrine connect`.

/// Arguments of `peregrine connect`.
#[derive(Debug, clap::Args)]
pub struct ConnectArgs {}

/// Runs `peregrine connect`.
pub fn run(_args: ConnectArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
