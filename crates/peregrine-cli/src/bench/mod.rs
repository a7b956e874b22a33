//! placeholder: `peregrine bench`.

/// Arguments of `peregrine bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {}

/// Runs `peregrine bench`.
pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
