//! Tracking plans (issue #22): one file lists every event, its versions, a
//! JSON Schema for each version's properties, its priority, whether it is
//! deprecated, and naming rules for the whole plan. `docs/tracking-plan.md`
//! documents the file.
//!
//! - [`Plan`]: the file's model, read from YAML or JSON ([`Plan::load`]).
//! - [`CompiledPlan`]: every schema compiled once;
//!   [`CompiledPlan::validate`] judges one event's properties by the
//!   version it names and returns a [`Verdict`]. It is what the collector
//!   (per source: enforce or warn) and the SDKs (development builds) call.
//! - [`lint::check`]: the rules `tally plan check` applies to one file.
//! - [`diff::diff`]: what changed between two files and whether it breaks
//!   events valid under the old one (`tally plan diff`).
//! - [`codegen::generate`]: typed tracking functions (`tally plan
//!   codegen`) for Rust, TypeScript, Kotlin and Swift.
//!
//! This crate does no I/O but reading a plan file when asked to.

pub mod codegen;
mod compat;
mod compiled;
pub mod diff;
pub mod lint;
mod load;
mod model;
pub mod naming;

pub use compiled::{CompiledEvent, CompiledPlan, Verdict, Violation};
pub use load::{Format, LoadError};
pub use model::{any_object, Case, EventPattern, EventSpec, EventVersion, Naming, Plan, Priority};
