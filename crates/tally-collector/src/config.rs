//! The collector's settings and where they come from.
//!
//! Each setting is taken from the first of these that has it:
//!
//! 1. a command-line flag (`--listen`, `--write-key`, ...);
//! 2. an environment variable (`TALLY_LISTEN`, `TALLY_WRITE_KEYS`, ...);
//! 3. the `tally.toml` named by `--config` / `TALLY_CONFIG`;
//! 4. the default.
//!
//! Flags and variables are read by the CLI (clap gives a flag precedence
//! over its variable) into one [`Settings`]; [`Settings::or`] lays it over
//! the file's, and [`Settings::resolve`] fills defaults and checks the
//! result.
//!
//! | flag | variable | `tally.toml` key | default |
//! |---|---|---|---|
//! | `--listen` | `TALLY_LISTEN` | `listen` | `127.0.0.1:8080` |
//! | `--data-dir` | `TALLY_DATA_DIR` | `data_dir` | `./tally-data` |
//! | `--database-url` | `TALLY_DATABASE_URL` | `database_url` | none: SQLite in the data dir |
//! | `--write-key` (repeatable) | `TALLY_WRITE_KEYS` (comma-separated) | `write_keys` (array) | none: at least one is required |
//! | `--admin-token` | `TALLY_ADMIN_TOKEN` | `admin_token` | none: admin paths answer 401; at least [`MIN_ADMIN_TOKEN_BYTES`] characters |
//! | `--read-token` (repeatable) | `TALLY_READ_TOKENS` (comma-separated) | `read_tokens` (array) | none: only the admin token reads; each at least [`MIN_ADMIN_TOKEN_BYTES`] characters |
//! | `--tls-cert`, `--tls-key` | `TALLY_TLS_CERT`, `TALLY_TLS_KEY` | `tls_cert`, `tls_key` | none: plain HTTP |
//! | `--max-in-flight` | `TALLY_MAX_IN_FLIGHT` | `max_in_flight` | 64 |
//! | `--key-rate`, `--key-burst` | `TALLY_KEY_RATE`, `TALLY_KEY_BURST` | `key_rate`, `key_burst` | none: no limit per key; burst twice the rate (see [`crate::ingest::rate`]) |
//! | `--max-connections` | `TALLY_MAX_CONNECTIONS` | `max_connections` | 4096, or half the open-file limit when lower (see [`crate::server`]) |
//! | `--idle-timeout` | `TALLY_IDLE_TIMEOUT` | `idle_timeout_s` | 65 s |
//! | `--cors-origin` (repeatable) | `TALLY_CORS_ORIGINS` (comma-separated) | `cors_origins` (array) | none: only same-origin pages call the admin paths |
//! | `--metrics-token` | `TALLY_METRICS_TOKEN` | `metrics_token` | none: `/metrics` takes the admin token |
//! | `--metrics-listen` | `TALLY_METRICS_LISTEN` | `metrics_listen` | none: `/metrics` only on `listen`, with a token |
//! | `--alert-webhook` | `TALLY_ALERT_WEBHOOK` | `alert_webhook` | none: alerts are only shown |
//! | — | — | `[alerts]` `interval_s`, `window_s`, and per rule `[alerts.<rule>]` `threshold`, `for_s`, `min_count` | see [`crate::alerts`] |
//! | — | — | `[retention]` table | events are kept; dead letters 30 days (see [`crate::governance::retention`]) |
//! | — | — | `[dead_letters]` `max_rows`, `max_bytes`, `max_message_bytes` | 100,000 rows, 256 MiB, 32 KiB (see [`DeadLetterLimits`]) |
//! | `--plan`, `--plan-mode` | `TALLY_PLAN`, `TALLY_PLAN_MODE` | `[plan]` `file`, `mode`, and `[plan.sources]` a mode per source id | none: no plan; mode `warn` (see [`crate::plan`]) |

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use std::time::Duration;

use crate::alerts::rules::{self, RuleSettings};
use crate::alerts::{AlertConfig, DEFAULT_INTERVAL, DEFAULT_WINDOW};
use crate::governance::retention::{RetentionError, RetentionPolicy, RetentionSettings};
use crate::ingest::rate::KeyRate;
use crate::plan::PlanSettings;
use crate::server;
use crate::store::DeadLetterLimits;

/// Default listen address: loopback only, so a first run exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Default data directory (the SQLite store), relative to the working
/// directory.
pub const DEFAULT_DATA_DIR: &str = "./tally-data";

/// Shortest admin token accepted at start, in bytes. With wrong tokens
/// throttled to 10 a minute per client address ([`crate::throttle`]), 16
/// characters even from lowercase letters alone (26^16 ≈ 4·10^22 values)
/// cannot be guessed; a random token of `openssl rand -hex 16` has 32.
pub const MIN_ADMIN_TOKEN_BYTES: usize = 16;

/// Ingest requests allowed to hold a slot at once by default.
///
/// Each slot may hold a 20 MiB body and a 16 MiB decoded copy, so 64 slots
/// bound ingest memory near 2.3 GiB in the worst case, and far more than
/// the store can commit concurrently (SQLite has one writer; a PostgreSQL
/// pool a few connections), so real load queues in the store, not here.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// Why the settings could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key or a value of
    /// the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The listen address is not `IP:PORT`.
    #[error("invalid listen address {0:?} (expected IP:PORT)")]
    Listen(String),
    /// Only one of the TLS certificate and key was given.
    #[error("TLS needs both a certificate and a key")]
    TlsIncomplete,
    /// No write key anywhere: the collector would refuse every event.
    #[error("no write key: give --write-key, TALLY_WRITE_KEYS or write_keys in the config file")]
    NoWriteKey,
    /// `max_in_flight` is 0.
    #[error("max_in_flight must be at least 1")]
    NoSlots,
    /// `key_rate` or `key_burst` is not a usable number.
    #[error("invalid key rate: {0}")]
    KeyRate(&'static str),
    /// A token (`admin_token`, or the one named) is shorter than
    /// [`MIN_ADMIN_TOKEN_BYTES`].
    #[error("{0} is too short: use at least {MIN_ADMIN_TOKEN_BYTES} characters (e.g. `openssl rand -hex 16`)")]
    TokenTooShort(&'static str),
    /// `max_connections` is 0, or the idle timeout is not a positive
    /// number of seconds.
    #[error("invalid connection setting: {0}")]
    Connections(&'static str),
    /// A CORS origin is not `http(s)://host[:port]` (`null` and `*` are
    /// refused too).
    #[error("invalid CORS origin {0:?}: expected http(s)://host[:port], without a path")]
    CorsOrigin(String),
    /// The metrics listen address is not `IP:PORT`.
    #[error("invalid metrics listen address {0:?} (expected IP:PORT)")]
    MetricsListen(String),
    /// An `[alerts]` setting out of range (a duration not positive, a
    /// threshold or `for_s` not finite or negative), or a webhook URL that
    /// is not http(s).
    #[error("invalid alert setting: {0}")]
    Alerts(&'static str),
    /// The `[retention]` table has a value that cannot be used.
    #[error(transparent)]
    Retention(#[from] RetentionError),
    /// The `[dead_letters]` table has a value that cannot be used.
    #[error("invalid dead-letter setting: {0}")]
    DeadLetters(&'static str),
}

/// The `[alerts]` table of `tally.toml`; every member optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    /// Seconds between evaluations (and gauge refreshes).
    pub interval_s: Option<f64>,
    /// Seconds of the rate window.
    pub window_s: Option<f64>,
    /// `[alerts.stale_client_queues]`.
    pub stale_client_queues: Option<RuleSettings>,
    /// `[alerts.dedup_rate_high]`.
    pub dedup_rate_high: Option<RuleSettings>,
    /// `[alerts.rejection_rate_high]`.
    pub rejection_rate_high: Option<RuleSettings>,
    /// `[alerts.completeness_gaps_growing]`.
    pub completeness_gaps_growing: Option<RuleSettings>,
    /// `[alerts.plan_violation_rate_high]`.
    pub plan_violation_rate_high: Option<RuleSettings>,
}

impl AlertSettings {
    fn resolve(self, webhook: Option<String>) -> Result<AlertConfig, ConfigError> {
        let seconds = |v: Option<f64>, default: Duration, what| match v {
            None => Ok(default),
            Some(s) if s.is_finite() && s > 0.0 => Ok(Duration::from_secs_f64(s)),
            Some(_) => Err(ConfigError::Alerts(what)),
        };
        let mut config = AlertConfig {
            interval: seconds(
                self.interval_s,
                DEFAULT_INTERVAL,
                "interval_s must be positive",
            )?,
            window: seconds(self.window_s, DEFAULT_WINDOW, "window_s must be positive")?,
            ..AlertConfig::default()
        };
        for (name, settings) in &mut config.rules {
            let given = match *name {
                rules::STALE_CLIENT_QUEUES => self.stale_client_queues,
                rules::DEDUP_RATE_HIGH => self.dedup_rate_high,
                rules::REJECTION_RATE_HIGH => self.rejection_rate_high,
                rules::COMPLETENESS_GAPS_GROWING => self.completeness_gaps_growing,
                rules::PLAN_VIOLATION_RATE_HIGH => self.plan_violation_rate_high,
                _ => None,
            };
            if let Some(given) = given {
                if !given.threshold.is_finite() || !given.for_s.is_finite() || given.for_s < 0.0 {
                    return Err(ConfigError::Alerts(
                        "threshold and for_s must be finite, for_s not negative",
                    ));
                }
                *settings = given;
            }
        }
        if let Some(url) = &webhook {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Alerts(
                    "the alert webhook must be an http:// or https:// URL",
                ));
            }
        }
        config.webhook = webhook;
        Ok(config)
    }
}

/// Settings from one source; every member optional.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// `IP:PORT` to listen on.
    pub listen: Option<String>,
    /// The data directory (SQLite store).
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL URL: use PostgreSQL instead of SQLite.
    pub database_url: Option<String>,
    /// Accepted write keys.
    pub write_keys: Option<Vec<String>>,
    /// The admin token.
    pub admin_token: Option<String>,
    /// Tokens that may read (product queries, export, the dashboard).
    pub read_tokens: Option<Vec<String>>,
    /// PEM certificate chain.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
    /// Ingest requests in flight at most.
    pub max_in_flight: Option<usize>,
    /// Ingest requests a second each write key may send.
    pub key_rate: Option<f64>,
    /// Requests a write key may send at once.
    pub key_burst: Option<f64>,
    /// Connections open at most.
    pub max_connections: Option<usize>,
    /// Seconds a connection may stay idle.
    pub idle_timeout_s: Option<f64>,
    /// Origins whose pages may call the admin paths.
    pub cors_origins: Option<Vec<String>>,
    /// A token that may read `/metrics`.
    pub metrics_token: Option<String>,
    /// `IP:PORT` of a listener serving `/metrics` without a token.
    pub metrics_listen: Option<String>,
    /// Where alert state changes are POSTed.
    pub alert_webhook: Option<String>,
    /// Alert rules and their evaluation.
    pub alerts: Option<AlertSettings>,
    /// The `[retention]` table (only in `tally.toml`).
    pub retention: Option<RetentionSettings>,
    /// The `[dead_letters]` table (only in `tally.toml`).
    pub dead_letters: Option<DeadLetterSettings>,
    /// The tracking plan and its modes.
    pub plan: Option<PlanSettings>,
}

/// The `[dead_letters]` table of `tally.toml`; every member optional.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// Most dead letters kept.
    pub max_rows: Option<u64>,
    /// Most bytes of message text kept.
    pub max_bytes: Option<u64>,
    /// Most bytes kept of one message.
    pub max_message_bytes: Option<usize>,
}

impl DeadLetterSettings {
    fn resolve(self) -> Result<DeadLetterLimits, ConfigError> {
        let defaults = DeadLetterLimits::default();
        let limits = DeadLetterLimits {
            max_rows: self.max_rows.unwrap_or(defaults.max_rows),
            max_bytes: self.max_bytes.unwrap_or(defaults.max_bytes),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
        };
        if limits.max_message_bytes == 0 {
            return Err(ConfigError::DeadLetters(
                "max_message_bytes must be at least 1",
            ));
        }
        Ok(limits)
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("write_keys", &self.write_keys.as_ref().map(Vec::len))
            .field("admin_token", &self.admin_token.as_ref().map(|_| "<set>"))
            .field("read_tokens", &self.read_tokens.as_ref().map(Vec::len))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_connections", &self.max_connections)
            .field("idle_timeout_s", &self.idle_timeout_s)
            .field("cors_origins", &self.cors_origins)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| "<set>"),
            )
            .field("metrics_listen", &self.metrics_listen)
            .field(
                "alert_webhook",
                &self.alert_webhook.as_ref().map(|_| "<set>"),
            )
            .field("alerts", &self.alerts)
            .field("retention", &self.retention)
            .field("dead_letters", &self.dead_letters)
            .field("plan", &self.plan)
            .finish()
    }
}

/// The settings in force.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The data directory.
    pub data_dir: PathBuf,
    /// PostgreSQL instead of SQLite, when set.
    pub database_url: Option<String>,
    /// Accepted write keys (at least one, none empty).
    pub write_keys: Vec<String>,
    /// The admin token, if any.
    pub admin_token: Option<String>,
    /// Read tokens (none empty, each long enough).
    pub read_tokens: Vec<String>,
    /// Certificate and key, when serving TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Ingest requests in flight at most.
    pub max_in_flight: usize,
    /// Each write key's request rate, when limited.
    pub key_rate: Option<KeyRate>,
    /// Connections and their idle timeout.
    pub connections: server::Limits,
    /// Origins whose pages may call the admin paths (checked).
    pub cors_origins: Vec<String>,
    /// The metrics token, if any.
    pub metrics_token: Option<String>,
    /// Where `/metrics` is served without a token, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Alert rules, evaluation and webhook.
    pub alerts: AlertConfig,
    /// Which events expire, and how the job deletes them.
    pub retention: RetentionPolicy,
    /// What the store keeps of rejected messages.
    pub dead_letters: DeadLetterLimits,
    /// The tracking plan (loaded at start by the caller) and its modes.
    pub plan: PlanSettings,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets (keys, token, a URL that may hold a password) never print.
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field(
                "database",
                &if self.database_url.is_some() {
                    "postgres"
                } else {
                    "sqlite"
                },
            )
            .field("write_keys", &self.write_keys.len())
            .field("admin_token", &self.admin_token.is_some())
            .field("read_tokens", &self.read_tokens.len())
            .field("tls", &self.tls)
            .field("max_in_flight", &self.max_in_flight)
            .field("connections", &self.connections)
            .field("cors_origins", &self.cors_origins)
            .field("metrics_token", &self.metrics_token.is_some())
            .field("metrics_listen", &self.metrics_listen)
            .field("alert_rules", &self.alerts.rules)
            .field("alert_webhook", &self.alerts.webhook.is_some())
            .field("retention", &self.retention)
            .field("dead_letters", &self.dead_letters)
            .field("plan", &self.plan)
            .finish()
    }
}

impl Settings {
    /// Reads a `tally.toml`.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })
    }

    /// These settings, with each missing one taken from `lower`.
    pub fn or(self, lower: Settings) -> Settings {
        Settings {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            database_url: self.database_url.or(lower.database_url),
            write_keys: self.write_keys.or(lower.write_keys),
            admin_token: self.admin_token.or(lower.admin_token),
            read_tokens: self.read_tokens.or(lower.read_tokens),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            max_in_flight: self.max_in_flight.or(lower.max_in_flight),
            key_rate: self.key_rate.or(lower.key_rate),
            key_burst: self.key_burst.or(lower.key_burst),
            max_connections: self.max_connections.or(lower.max_connections),
            idle_timeout_s: self.idle_timeout_s.or(lower.idle_timeout_s),
            cors_origins: self.cors_origins.or(lower.cors_origins),
            metrics_token: self.metrics_token.or(lower.metrics_token),
            metrics_listen: self.metrics_listen.or(lower.metrics_listen),
            alert_webhook: self.alert_webhook.or(lower.alert_webhook),
            alerts: self.alerts.or(lower.alerts),
            retention: self.retention.or(lower.retention),
            dead_letters: self.dead_letters.or(lower.dead_letters),
            plan: match (self.plan, lower.plan) {
                (Some(upper), Some(lower)) => Some(upper.or(lower)),
                (upper, lower) => upper.or(lower),
            },
        }
    }

    /// Fills defaults and checks the result. Empty strings count as unset
    /// (an empty `TALLY_ADMIN_TOKEN` does not make an empty token).
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        let listen_text = non_empty(self.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_text
            .parse::<SocketAddr>()
            .map_err(|_| ConfigError::Listen(listen_text.clone()))?;
        let write_keys: Vec<String> = self
            .write_keys
            .unwrap_or_default()
            .into_iter()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty())
            .collect();
        if write_keys.is_empty() {
            return Err(ConfigError::NoWriteKey);
        }
        let admin_token = non_empty(self.admin_token);
        if admin_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_BYTES)
        {
            return Err(ConfigError::TokenTooShort("the admin token"));
        }
        let read_tokens: Vec<String> = self
            .read_tokens
            .unwrap_or_default()
            .into_iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect();
        if read_tokens.iter().any(|t| t.len() < MIN_ADMIN_TOKEN_BYTES) {
            return Err(ConfigError::TokenTooShort("a read token"));
        }
        let metrics_token = non_empty(self.metrics_token);
        if metrics_token
            .as_ref()
            .is_some_and(|t| t.len() < MIN_ADMIN_TOKEN_BYTES)
        {
            return Err(ConfigError::TokenTooShort("the metrics token"));
        }
        let metrics_listen = match non_empty(self.metrics_listen) {
            None => None,
            Some(text) => Some(
                text.parse::<SocketAddr>()
                    .map_err(|_| ConfigError::MetricsListen(text.clone()))?,
            ),
        };
        let cors_origins = self
            .cors_origins
            .unwrap_or_default()
            .into_iter()
            .map(|o| o.trim().to_owned())
            .filter(|o| !o.is_empty())
            .map(|o| {
                if is_origin(&o) {
                    Ok(o)
                } else {
                    Err(ConfigError::CorsOrigin(o))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(ConfigError::TlsIncomplete),
        };
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if max_in_flight == 0 {
            return Err(ConfigError::NoSlots);
        }
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let key_rate =
            match (self.key_rate, self.key_burst) {
                (None, None) => None,
                (Some(rate), burst)
                    if positive(rate) && burst.is_none_or(|b| positive(b) && b >= 1.0) =>
                {
                    Some(KeyRate::new(rate, burst))
                }
                (None, Some(_)) => return Err(ConfigError::KeyRate("key_burst needs key_rate")),
                _ => return Err(ConfigError::KeyRate(
                    "key_rate must be a positive number of requests a second, key_burst at least 1",
                )),
            };
        let connections = server::Limits {
            max_connections: match self.max_connections {
                Some(0) => {
                    return Err(ConfigError::Connections(
                        "max_connections must be at least 1",
                    ))
                }
                Some(n) => n,
                None => server::default_max_connections(server::open_file_limit()),
            },
            idle_timeout: match self.idle_timeout_s {
                None => server::DEFAULT_IDLE_TIMEOUT,
                Some(s) if s.is_finite() && s > 0.0 => Duration::from_secs_f64(s),
                Some(_) => {
                    return Err(ConfigError::Connections(
                        "the idle timeout must be a positive number of seconds",
                    ))
                }
            },
        };
        Ok(Config {
            listen,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            database_url: non_empty(self.database_url),
            write_keys,
            admin_token,
            read_tokens,
            tls,
            max_in_flight,
            key_rate,
            connections,
            cors_origins,
            metrics_token,
            metrics_listen,
            alerts: self
                .alerts
                .unwrap_or_default()
                .resolve(non_empty(self.alert_webhook))?,
            retention: self.retention.unwrap_or_default().resolve()?,
            dead_letters: self.dead_letters.unwrap_or_default().resolve()?,
            plan: self.plan.unwrap_or_default(),
        })
    }
}

/// Whether `text` is a browser origin: `http://` or `https://`, a host,
/// an optional port, nothing after. `null` (sandboxed frames, local files)
/// and `*` are not origins a page of the operator's has.
fn is_origin(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once("://") else {
        return false;
    };
    let authority_ok = !rest.is_empty()
        && !rest.starts_with(':')
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    matches!(scheme, "http" | "https") && authority_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_file_over_defaults() {
        let dir = std::env::temp_dir().join(format!("tally-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tally.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:9000\"\nwrite_keys = [\"from-file\"]\nadmin_token = \"file-admin-token-123\"\nmax_in_flight = 8\nmax_connections = 100\nidle_timeout_s = 2.5\n",
        )
        .unwrap();
        let from_file = Settings::from_file(&file).unwrap();
        let flags = Settings {
            write_keys: Some(vec!["from-flag".into(), " ".into()]),
            ..Settings::default()
        };
        let config = flags.or(from_file).resolve().unwrap();
        assert_eq!(config.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.write_keys, ["from-flag"]);
        assert_eq!(config.admin_token.as_deref(), Some("file-admin-token-123"));
        assert_eq!(config.max_in_flight, 8);
        assert_eq!(config.connections.max_connections, 100);
        assert_eq!(config.connections.idle_timeout, Duration::from_millis(2500));
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(config.database_url, None);
        assert!(!format!("{config:?}").contains("file-admin-token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cors_origins_metrics_token_and_listener() {
        let with = |origins: &[&str]| Settings {
            write_keys: Some(vec!["k".into()]),
            cors_origins: Some(origins.iter().map(|o| (*o).to_owned()).collect()),
            ..Settings::default()
        };
        let config = with(&["https://admin.example", " http://127.0.0.1:3000 ", ""])
            .resolve()
            .unwrap();
        assert_eq!(
            config.cors_origins,
            ["https://admin.example", "http://127.0.0.1:3000"]
        );
        for bad in [
            "null",
            "*",
            "https://admin.example/",
            "https://admin.example/path",
            "ftp://admin.example",
            "admin.example",
            "https://",
            "https://a b",
        ] {
            assert!(
                matches!(with(&[bad]).resolve(), Err(ConfigError::CorsOrigin(_))),
                "{bad}"
            );
        }
        let metrics = Settings {
            write_keys: Some(vec!["k".into()]),
            metrics_token: Some("m".repeat(MIN_ADMIN_TOKEN_BYTES)),
            metrics_listen: Some("127.0.0.1:9090".into()),
            ..Settings::default()
        };
        let config = metrics.clone().resolve().unwrap();
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert!(!format!("{config:?}").contains("mmmm"));
        let short = Settings {
            metrics_token: Some("short".into()),
            ..metrics.clone()
        };
        assert!(matches!(
            short.resolve(),
            Err(ConfigError::TokenTooShort("the metrics token"))
        ));
        let bad_listen = Settings {
            metrics_listen: Some("localhost:9090".into()),
            ..metrics
        };
        assert!(matches!(
            bad_listen.resolve(),
            Err(ConfigError::MetricsListen(_))
        ));
    }

    #[test]
    fn retention_comes_from_the_file() {
        let dir = std::env::temp_dir().join(format!("tally-config-ret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tally.toml");
        std::fs::write(
            &file,
            "write_keys = [\"k\"]\n[retention]\ndefault_days = 90\n[retention.events]\n\"Song Played\" = 7\n",
        )
        .unwrap();
        let config = Settings::from_file(&file).unwrap().resolve().unwrap();
        assert_eq!(config.retention.default_days, Some(90));
        assert_eq!(config.retention.events.get("Song Played"), Some(&7));
        std::fs::write(
            &file,
            "write_keys = [\"k\"]\n[retention]\ndefault_days = 0\n",
        )
        .unwrap();
        assert!(matches!(
            Settings::from_file(&file).unwrap().resolve(),
            Err(ConfigError::Retention(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_and_refusals() {
        let keys = || Settings {
            write_keys: Some(vec!["k".into()]),
            ..Settings::default()
        };
        let config = keys().resolve().unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(config.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert_eq!(
            config.connections.idle_timeout,
            server::DEFAULT_IDLE_TIMEOUT
        );
        assert!(config.connections.max_connections <= server::DEFAULT_MAX_CONNECTIONS);
        for bad in [
            Settings {
                max_connections: Some(0),
                ..keys()
            },
            Settings {
                idle_timeout_s: Some(0.0),
                ..keys()
            },
            Settings {
                idle_timeout_s: Some(f64::NAN),
                ..keys()
            },
        ] {
            assert!(matches!(bad.resolve(), Err(ConfigError::Connections(_))));
        }
        assert!(matches!(
            Settings::default().resolve(),
            Err(ConfigError::NoWriteKey)
        ));
        let bad_listen = Settings {
            listen: Some("localhost".into()),
            ..keys()
        };
        assert!(matches!(bad_listen.resolve(), Err(ConfigError::Listen(_))));
        let half_tls = Settings {
            tls_cert: Some("c.pem".into()),
            ..keys()
        };
        assert!(matches!(
            half_tls.resolve(),
            Err(ConfigError::TlsIncomplete)
        ));
        let empty_token = Settings {
            admin_token: Some(String::new()),
            ..keys()
        };
        assert_eq!(empty_token.resolve().unwrap().admin_token, None);
        let short = Settings {
            admin_token: Some("x".repeat(MIN_ADMIN_TOKEN_BYTES - 1)),
            ..keys()
        };
        let err = short.resolve().unwrap_err();
        assert!(matches!(err, ConfigError::TokenTooShort(_)));
        assert!(err.to_string().contains("at least 16 characters"), "{err}");
        let long_enough = Settings {
            admin_token: Some("x".repeat(MIN_ADMIN_TOKEN_BYTES)),
            ..keys()
        };
        assert!(long_enough.resolve().is_ok());
        let readers = Settings {
            read_tokens: Some(vec![
                " ".into(),
                "r".repeat(MIN_ADMIN_TOKEN_BYTES),
                "s".repeat(MIN_ADMIN_TOKEN_BYTES + 1),
            ]),
            ..keys()
        };
        let resolved = readers.resolve().unwrap();
        assert_eq!(
            resolved.read_tokens,
            [
                "r".repeat(MIN_ADMIN_TOKEN_BYTES),
                "s".repeat(MIN_ADMIN_TOKEN_BYTES + 1)
            ]
        );
        assert!(!format!("{resolved:?}").contains("rrrr"));
        let short_reader = Settings {
            read_tokens: Some(vec!["r".repeat(MIN_ADMIN_TOKEN_BYTES - 1)]),
            ..keys()
        };
        assert!(matches!(
            short_reader.resolve(),
            Err(ConfigError::TokenTooShort("a read token"))
        ));
    }

    #[test]
    fn a_key_rate_is_positive_and_its_burst_at_least_one() {
        let keys = || Settings {
            write_keys: Some(vec!["k".into()]),
            ..Settings::default()
        };
        let with = |rate: Option<f64>, burst: Option<f64>| {
            Settings {
                key_rate: rate,
                key_burst: burst,
                ..keys()
            }
            .resolve()
        };
        assert_eq!(with(None, None).unwrap().key_rate, None);
        assert_eq!(
            with(Some(50.0), None).unwrap().key_rate,
            Some(KeyRate {
                per_s: 50.0,
                burst: 100.0
            })
        );
        assert_eq!(
            with(Some(0.5), Some(3.0)).unwrap().key_rate,
            Some(KeyRate {
                per_s: 0.5,
                burst: 3.0
            })
        );
        for (rate, burst) in [
            (Some(0.0), None),
            (Some(-1.0), None),
            (Some(f64::INFINITY), None),
            (Some(5.0), Some(0.5)),
            (None, Some(3.0)),
        ] {
            assert!(
                matches!(with(rate, burst), Err(ConfigError::KeyRate(_))),
                "{rate:?} {burst:?}"
            );
        }
    }

    #[test]
    fn alert_settings_from_the_file() {
        let dir = std::env::temp_dir().join(format!("tally-config-alerts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tally.toml");
        std::fs::write(
            &file,
            "write_keys = [\"k\"]\nalert_webhook = \"http://127.0.0.1:9/hook\"\n\
             [alerts]\ninterval_s = 0.25\nwindow_s = 60\n\
             [alerts.dedup_rate_high]\nthreshold = 0.2\nfor_s = 30\n\
             [alerts.plan_violation_rate_high]\nthreshold = 0.1\nmin_count = 50\n",
        )
        .unwrap();
        let config = Settings::from_file(&file).unwrap().resolve().unwrap();
        assert_eq!(config.alerts.interval, Duration::from_millis(250));
        assert_eq!(config.alerts.window, Duration::from_secs(60));
        assert_eq!(
            config.alerts.webhook.as_deref(),
            Some("http://127.0.0.1:9/hook")
        );
        let dedup = RuleSettings {
            threshold: 0.2,
            for_s: 30.0,
            min_count: 0,
        };
        let stale = RuleSettings {
            threshold: 0.05,
            for_s: 0.0,
            min_count: 0,
        };
        let violations = RuleSettings {
            threshold: 0.1,
            for_s: 0.0,
            min_count: 50,
        };
        assert_eq!(config.alerts.rules[1], (rules::DEDUP_RATE_HIGH, dedup));
        assert_eq!(config.alerts.rules[0], (rules::STALE_CLIENT_QUEUES, stale));
        assert_eq!(
            config.alerts.rules[4],
            (rules::PLAN_VIOLATION_RATE_HIGH, violations)
        );
        assert!(!format!("{config:?}").contains("9/hook"));
        std::fs::write(&file, "write_keys = [\"k\"]\n[alerts]\ninterval_s = 0\n").unwrap();
        assert!(matches!(
            Settings::from_file(&file).unwrap().resolve(),
            Err(ConfigError::Alerts(_))
        ));
        std::fs::write(
            &file,
            "write_keys = [\"k\"]\n[alerts.dedup_rate_hi]\nthreshold = 1\n",
        )
        .unwrap();
        assert!(matches!(
            Settings::from_file(&file),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("tally-config-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("tally.toml");
        std::fs::write(&file, "listn = \"x\"\n").unwrap();
        assert!(matches!(
            Settings::from_file(&file),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Settings::from_file(&dir.join("missing.toml")),
            Err(ConfigError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
