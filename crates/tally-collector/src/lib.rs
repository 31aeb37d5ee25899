//! # tally-collector
//!
//! The collector behind `tally serve`: the HTTP ingest path, exact dedup,
//! the stores (SQLite embedded by default, PostgreSQL shared), queries and
//! metrics.
//!
//! | module | holds |
//! |---|---|
//! | [`alerts`] | alert rules, `/v1/alerts`, the webhook |
//! | [`app`] | the [`Router`](axum::Router) ([`app::app`]), its state, CORS |
//! | [`browser_settings`] | settings documents of Segment's and RudderStack's browser libraries |
//! | [`client`] | the client address of a request, and what per-client limits count by |
//! | [`ingest`] | the ingest path, one module per stage (design in its doc) |
//! | [`query`] | admin endpoints: stats, counts, installs, deletions |
//! | [`queries`] | product queries: events, active people, sessions, funnels, retention, breakdowns |
//! | [`error`] | every error answer, `{code, message}` |
//! | [`health`] | pipeline health: `/v1/health/pipeline` and its figures |
//! | [`metrics`] | Prometheus metrics |
//! | [`config`] | settings from flags, env, `tally.toml`, defaults |
//! | [`data_dir`] | the SQLite data directory and its files' modes |
//! | [`server`] | the accept loop, TLS, graceful shutdown |
//! | [`tls`] | loading the certificate and key |
//! | [`store`] | the store trait and its SQLite and PostgreSQL implementations |
//! | [`throttle`] | failed admin authentication, throttled per client |
//! | [`retention`] | the policy and the background job deleting expired events |
//! | [`export`] | `GET /v1/export`: stored events streamed as NDJSON |
//! | [`dashboard`] | the page at `/` and its embedded assets |

pub mod alerts;
pub mod app;
pub mod browser_settings;
pub mod client;
pub mod config;
pub mod dashboard;
pub mod data_dir;
pub mod error;
pub mod export;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod queries;
pub mod query;
pub mod retention;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tls;
