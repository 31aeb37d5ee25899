//! # tally-sdk
//!
//! Tally's SDK: capture events with tiny caller overhead, keep them in a
//! durable, encrypted, bounded log, and sync them to a collector exactly
//! once.
//!
//! ```no_run
//! use std::time::Duration;
//! use tally_sdk::{Consent, Props, Tracker};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tracker = Tracker::builder("write-key", "http://127.0.0.1:8080", "/tmp/tally-demo")
//!     .consent(Consent::Granted)
//!     .build()?;
//! tracker.identify("user-42", Props::new().with("plan", "pro"))?;
//! tracker.track("Song Played", Props::new().with("genre", "jazz"))?;
//! tracker.flush()?; // durable: survives a crash from here on
//! let synced = tracker.wait_until_synced(Duration::from_secs(10));
//! println!("synced={synced} {}", serde_json::to_string(&tracker.health())?);
//! tracker.shutdown(Duration::from_secs(5))?;
//! # Ok(()) }
//! ```
//!
//! | module | concern |
//! |---|---|
//! | [`tracker`] | the API, what runs on which thread, `seq` across crashes |
//! | `capture` | the caller's half of a message: checks, `seq`, the hand-off queue |
//! | `shared` | what the threads share: config, clock, log, SDK state, counters |
//! | `error` | refusals and errors |
//! | `install_state` | the SDK state file: identity, consent, watermarks, drops to report |
//! | [`pipeline`] | hand-off → log: sessions, enrichment, privacy, identity |
//! | [`log`] | the durable, encrypted, bounded event log |
//! | [`upload`] | log → collector: batches, transport, answers, backoff |
//! | [`health`] | the health report |
//! | [`mobile`] | network, low power, background syncs, no idle wake-ups |
//! | [`props`] | properties built as JSON text |
//! | `plan` | the tracking plan judged at the call (feature `plan`, development builds) |
//! | [`config`] | options and their defaults |
//! | [`clock`] | real and virtual time, and the wake-up signal the threads wait on |

mod capture;
pub mod clock;
pub mod config;
mod error;
pub mod health;
mod install_state;
pub mod log;
pub mod mobile;
pub mod pipeline;
#[cfg(feature = "plan")]
pub mod plan;
pub mod props;
mod shared;
pub mod stored;
pub mod tracker;
pub mod upload;

pub use clock::{Clock, SystemClock, VirtualClock};
pub use config::WhenFull;
pub use health::Health;
pub use log::{Durability, FullPolicy};
pub use mobile::{BackgroundOutcome, BackgroundSync, MeteredPolicy, LOW_POWER_HOLD_MS};
pub use pipeline::enrich::{ContextProvider, DeviceContext};
pub use pipeline::privacy::{Consent, KeyScope};
pub use props::{Props, PropsError};
pub use tally_proto::Priority;
pub use tracker::{
    Accepted, BuildError, FlushError, PlanRefusal, Refusal, ShutdownError, TrackOptions,
    TrackResult, Tracker, TrackerBuilder,
};
pub use upload::transport::{HttpTransport, Method, Request, Response, Transport, TransportError};

/// The Rust code in `docs/getting-started.md` compiles against this crate.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/getting-started.md")]
struct GettingStartedGuide;

/// The Rust code in `docs/privacy.md` compiles against this crate.
#[cfg(doctest)]
#[doc = include_str!("../../../docs/privacy.md")]
struct PrivacyGuide;
