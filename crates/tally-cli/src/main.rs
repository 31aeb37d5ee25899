//! `tally`: the collector, the SDK's command-line front end, and the tools.

use clap::{CommandFactory as _, Parser, Subcommand};

mod args;
mod audit;
mod backup;
mod bench;
mod client;
mod completions;
mod emit;
mod export;
mod inspect;
mod keys;
mod operate;
mod plan;
mod quality;
mod query;
mod serve;
mod simulate;

/// Offline-first product analytics: every event counted exactly once, or
/// its absence explained.
#[derive(Debug, Parser)]
#[command(name = "tally", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the collector (SQLite in --data-dir by default, or PostgreSQL).
    Serve(serve::ServeArgs),
    /// Track events through the real SDK and sync them to a collector.
    Emit(emit::EmitArgs),
    /// Look inside local state (the SDK's durable log).
    #[command(subcommand)]
    Inspect(inspect::InspectCommand),
    /// Drive a fleet of simulated devices through faults and check that
    /// every event is counted once or explained.
    Simulate(simulate::SimulateArgs),
    /// Ask a collector's product query API (events, active people,
    /// sessions, funnels, retention, breakdowns, top events).
    Query(query::QueryArgs),
    /// Measure a component under load (the collector's ingest path).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Export a collector's stored events to NDJSON or Parquet.
    Export(export::ExportArgs),
    /// Manage a collector's write keys, read tokens and admin tokens while
    /// it runs: create, list, rotate, revoke.
    Keys(keys::KeysArgs),
    /// Read a collector's audit log: who read, deleted or changed what,
    /// and the refused authentications.
    Audit(audit::AuditArgs),
    /// Copy the SQLite store, consistently, while the collector runs.
    Backup(backup::BackupArgs),
    /// Print a completion script for a shell to stdout.
    Completions(completions::CompletionsArgs),
    /// Print the man page (roff) to stdout.
    Man,
    /// Print the collector's OpenAPI 3.1 document (what `GET /openapi.json`
    /// serves) to stdout, to generate a client from.
    Openapi {
        /// Print the route reference of docs/http-api.md (Markdown) instead.
        #[arg(long)]
        reference: bool,
    },
    /// Installs whose queues are not draining (from their health beacons),
    /// or one install's completeness.
    Installs(operate::InstallsArgs),
    /// Rejected messages kept by the collector: by reason and time, paged.
    DeadLetters(operate::DeadLettersArgs),
    /// Delete a person's data (by user id, anonymous id or install id),
    /// of every source or of one.
    Delete(operate::DeleteArgs),
    /// What the tracking plan found in the events, per event, rule and
    /// path, with the newest examples (read token).
    Quality(quality::QualityArgs),
    /// Tracking plans: lint one, diff two, generate typed tracking code.
    #[command(subcommand)]
    Plan(plan::PlanCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Emit(args) => emit::run(args),
        Command::Inspect(cmd) => inspect::run(cmd),
        Command::Simulate(args) => simulate::run(args),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Export(args) => export::run(args),
        Command::Query(args) => query::run(args),
        Command::Keys(args) => keys::run(args),
        Command::Audit(args) => audit::run(args),
        Command::Backup(args) => backup::run(args),
        Command::Completions(args) => completions::completions(&args, Cli::command()),
        Command::Man => completions::man(Cli::command()),
        Command::Openapi { reference } => {
            use tally_collector::api::openapi;
            if reference {
                print!("{}", openapi::reference_markdown());
            } else {
                print!("{}", openapi::json());
            }
            Ok(())
        }
        Command::Plan(cmd) => plan::run(cmd),
        Command::Quality(args) => quality::run(args),
        Command::Installs(args) => operate::installs(args),
        Command::DeadLetters(args) => operate::dead_letters(args),
        Command::Delete(args) => operate::delete(args),
    }
}
