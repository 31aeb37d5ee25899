//! `tally bench`: figures measured on this machine, each against a
//! baseline of the same run.
//!
//! | module | command |
//! |---|---|
//! | [`collector`] | `tally bench collector`: ingest over loopback, full and half load, optionally beside the retention job ([`retention`]) or with a tracking plan enforced ([`plan`]); on SQLite, the bytes on disk per stored event ([`disk`]) |
//! | [`seed`] | `tally bench seed` and `tally bench queries`: a realistic product history, then the product queries timed on it |

mod collector;
mod disk;
mod load;
mod plan;
mod retention;
mod seed;

pub use collector::CollectorArgs;
pub use seed::{QueriesArgs, SeedArgs};

/// What to benchmark.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Ingest throughput and latency of the collector over loopback.
    Collector(CollectorArgs),
    /// Fill a store with a realistic product-analytics history (bulk, for
    /// `bench queries`).
    Seed(SeedArgs),
    /// Time the product queries on a seeded store (median of 5 runs).
    Queries(QueriesArgs),
}

/// Which store the collector under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// SQLite in a fresh temporary directory.
    Sqlite,
    /// PostgreSQL at --database-url (or TALLY_DATABASE_URL).
    Postgres,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Collector(args) => collector::collector(args),
        BenchCommand::Seed(args) => seed::seed(args),
        BenchCommand::Queries(args) => seed::queries(args),
    }
}
