//! # tally-collector
//!
//! The collector behind `tally serve`: the HTTP ingest path, exact dedup,
//! the stores (SQLite embedded by default, PostgreSQL shared), queries and
//! metrics.

pub mod store;
