//! `tally inspect`: look inside local state without changing it.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use tally_sdk::log::{find_log_dir, inspect, StdFs};

/// What to inspect.
#[derive(Debug, clap::Subcommand)]
pub enum InspectCommand {
    /// The SDK's durable log in DIR, as JSON. Read-only (no repair, no
    /// key needed): safe on the directory of a running app.
    Log {
        /// The app's data directory (the one given to the SDK, or to
        /// `tally emit --data-dir`) or its `log/` folder.
        dir: PathBuf,
    },
}

pub fn run(cmd: InspectCommand) -> anyhow::Result<()> {
    match cmd {
        InspectCommand::Log { dir } => {
            let Some(dir) = find_log_dir(&dir, &StdFs) else {
                anyhow::bail!(
                    "{} holds no Tally log (no ledger, segment or keys, in it or in its log/ folder): \
                     give the app's data directory (the one passed to the SDK or to \
                     `tally emit --data-dir`) or its log/ folder",
                    dir.display()
                );
            };
            let report = inspect(&dir, Arc::new(StdFs))
                .with_context(|| format!("inspecting the log in {}", dir.display()))?;
            let json = serde_json::json!({
                "segments": report.segments,
                "records": report.records,
                "bytes": report.bytes,
                "pending": report.pending,
                "pending_critical": report.pending_critical,
                "acknowledged": report.acknowledged,
                "oldest_pending_age_s": report.oldest_pending_age.map(|d| d.as_secs_f64()),
                "corrupt": report.corrupt,
                "dropped": report.dropped,
                "rejected": report.rejected,
                "torn_bytes": report.torn_bytes,
            });
            println!("{json}");
            Ok(())
        }
    }
}
