//! `tally inspect`.

/// What to inspect.
#[derive(Debug, clap::Subcommand)]
pub enum InspectCommand {}

pub fn run(cmd: InspectCommand) -> anyhow::Result<()> {
    match cmd {}
}
