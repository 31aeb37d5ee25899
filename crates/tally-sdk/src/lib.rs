//! # tally-sdk
//!
//! Tally's SDK: capture events with tiny caller overhead, keep them in a
//! durable, encrypted, bounded log, and sync them to a collector exactly
//! once.

pub mod log;
