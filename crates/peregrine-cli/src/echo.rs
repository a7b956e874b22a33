//! placeholder: `peregrine echo`.

/// Arguments of `peregrine echo`.
#[derive(Debug, clap::Args)]
pub struct EchoArgs {}

/// Runs `peregrine echo`.
pub fn run(_args: EchoArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
