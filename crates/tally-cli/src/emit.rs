//! `tally emit`.

/// Arguments of `tally emit`.
#[derive(Debug, clap::Args)]
pub struct EmitArgs {}

pub fn run(_args: EmitArgs) -> anyhow::Result<()> {
    anyhow::bail!("the SDK is not built yet")
}
