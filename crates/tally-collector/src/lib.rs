//! # tally-collector
//!
//! The collector behind `tally serve`: the HTTP API, the ingest path with
//! exact dedup, the stores (SQLite embedded by default, PostgreSQL
//! shared), product queries, pipeline health and alerts, governance, and
//! metrics.
//!
//! The HTTP layer ([`api`]) knows every mechanism; no mechanism knows the
//! HTTP layer.
//!
//! | module | holds |
//! |---|---|
//! | [`api`] | the [`Router`](axum::Router) ([`api::app`]), its state and layers (authentication, CORS), and the handlers by audience |
//! | [`ingest`] | the ingest path, one module per stage (design in its doc): authentication, body bounds, decoding, events |
//! | [`audit`] | the audit trail: what a row of every read and admin action holds, refusals counted in windows |
//! | [`keyring`] | the secrets accepted now: configured keys and the keys in the store, followed by polling its key version |
//! | [`store`] | the store contract and its SQLite and PostgreSQL implementations |
//! | [`queries`] | product queries: events, active people, sessions, funnels, retention, breakdowns |
//! | [`health`] | pipeline health: its figures and the task that refreshes them |
//! | [`alerts`] | alert rules, their states, the webhook and the shared outbox |
//! | [`governance`] | retention, export, deletion: the data lifecycle |
//! | [`clock`] | the collector's clock |
//! | [`config`] | settings from flags, env, `tally.toml`, defaults |
//! | [`server`] | the accept loop, connection limits, TLS, graceful shutdown |
//! | [`client`] | the client address of a request, and what per-client limits count by |
//! | [`throttle`] | failed admin authentication, throttled per client |
//! | [`data_dir`] | the SQLite data directory and its files' modes |
//! | [`tls`] | loading the certificate and key |
//! | [`metrics`] | Prometheus metrics |
//! | [`process_metrics`] | the process's CPU, memory and descriptors for `/metrics` |
//! | [`error`] | every error answer, `{code, message}` |

pub mod alerts;
pub mod api;
pub mod audit;
pub mod client;
pub mod clock;
pub mod config;
pub mod data_dir;
pub mod error;
pub mod governance;
pub mod health;
pub mod ingest;
pub mod keyring;
pub mod metrics;
pub mod plan;
pub mod process_metrics;
pub mod queries;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tls;
