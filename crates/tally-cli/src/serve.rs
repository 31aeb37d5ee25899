//! `tally serve`.

/// Arguments of `tally serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    anyhow::bail!("the collector is not built yet")
}
