//! `tally serve`: the collector.
//!
//! Settings come from flags, then `TALLY_*` environment variables, then the
//! `tally.toml` given by `--config`, then defaults (the table is in
//! `tally_collector::config`). Logs go to stderr (`TALLY_LOG` or `RUST_LOG`
//! filter them, `info` by default; `--log-format json` writes one JSON
//! object a line) and never hold keys or event content.
//! SIGTERM or Ctrl-C: stop accepting, finish requests in flight, exit 0.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use tally_collector::api::{app, AppState};
use tally_collector::config::Settings;
use tally_collector::governance::retention::RetentionJob;
use tally_collector::ingest::auth::Keys;
use tally_collector::{data_dir, plan, server, store, tls};

/// How long a stop waits for the health task: a webhook request's timeout
/// and a little more.
const MONITOR_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Connections of the metrics listener: a few Prometheus servers scrape
/// it, each on one keep-alive connection.
const METRICS_MAX_CONNECTIONS: usize = 16;

/// How long to wait for tasks still running after the server drained (the
/// server already waited for in-flight requests).
const RUNTIME_SHUTDOWN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

const PRECEDENCE: &str = "\
Each setting is taken from the first of: the flag, its TALLY_* environment
variable, the --config file (tally.toml: listen, data_dir, database_url,
write_keys = [..], admin_token, read_tokens = [..], tls_cert, tls_key, max_in_flight, key_rate, key_burst,
max_connections, idle_timeout_s, cors_origins = [..], metrics_token,
metrics_listen, alert_webhook,
an [alerts] table: interval_s, window_s, [alerts.<rule>] threshold, for_s, and
a [retention] table: default_days, dead_letters_days, audit_days, interval_s, chunk_rows,
[retention.events] \"Event Name\" = days), the default.
SIGTERM or Ctrl-C stops accepting, finishes requests in flight and exits 0.";

/// Arguments of `tally serve`.
#[derive(Debug, clap::Args)]
#[command(after_help = PRECEDENCE)]
pub struct ServeArgs {
    /// Address to listen on, IP:PORT (port 0 picks a free one; the address
    /// in use is logged as "listening on ...") [default: 127.0.0.1:8080]
    #[arg(long, env = "TALLY_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Directory of the embedded SQLite store [default: ./tally-data]
    #[arg(long, env = "TALLY_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Use PostgreSQL (postgres://...) instead of SQLite
    #[arg(
        long,
        env = "TALLY_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
    /// A write key clients may send (repeatable; the variable is
    /// comma-separated)
    #[arg(
        long = "write-key",
        env = "TALLY_WRITE_KEYS",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    write_keys: Vec<String>,
    /// Bearer token of the admin and query endpoints
    #[arg(
        long,
        env = "TALLY_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    admin_token: Option<String>,
    /// A token that may read: product queries, export, totals, the
    /// dashboard's product views (repeatable; the variable is
    /// comma-separated)
    #[arg(
        long = "read-token",
        env = "TALLY_READ_TOKENS",
        value_name = "TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    read_tokens: Vec<String>,
    /// PEM certificate chain: serve HTTPS (needs --tls-key)
    #[arg(long, env = "TALLY_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(long, env = "TALLY_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Ingest requests in flight at most; more are answered 429 [default: 64]
    #[arg(long, env = "TALLY_MAX_IN_FLIGHT", value_name = "N")]
    max_in_flight: Option<usize>,
    /// Ingest requests a second each write key may send; past it, 429 with
    /// Retry-After (so one app cannot take every app's capacity)
    /// [default: no limit]
    #[arg(long, env = "TALLY_KEY_RATE", value_name = "PER_S")]
    key_rate: Option<f64>,
    /// Ingest requests a write key may send at once before its rate
    /// applies [default: twice --key-rate]
    #[arg(long, env = "TALLY_KEY_BURST", value_name = "N")]
    key_burst: Option<f64>,
    /// Connections open at most; at the limit the longest-idle one is closed
    /// for a new one [default: 4096, or half the open-file limit if lower]
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// How long a connection may stay idle before it is closed: 65s, 2m,
    /// or seconds [default: 65s]
    #[arg(
        long,
        env = "TALLY_IDLE_TIMEOUT",
        value_name = "DURATION",
        value_parser = crate::args::parse_duration
    )]
    idle_timeout: Option<std::time::Duration>,
    /// An origin whose pages may call the admin, query and export APIs,
    /// https://host[:port] (repeatable; the variable is comma-separated)
    /// [default: none, the dashboard is same-origin]
    #[arg(
        long = "cors-origin",
        env = "TALLY_CORS_ORIGINS",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// A token that may read /metrics (the admin token always may)
    #[arg(
        long,
        env = "TALLY_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    metrics_token: Option<String>,
    /// Also serve /metrics, without a token, on this IP:PORT (a listener
    /// only the monitoring network reaches)
    #[arg(long, env = "TALLY_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// POST alert state changes (JSON) to this http(s) URL, with retries
    #[arg(
        long,
        env = "TALLY_ALERT_WEBHOOK",
        value_name = "URL",
        hide_env_values = true
    )]
    alert_webhook: Option<String>,
    /// A tracking plan (YAML or JSON) to judge track events against;
    /// reloaded when the file changes [default: none]
    #[arg(long, env = "TALLY_PLAN", value_name = "FILE")]
    plan: Option<PathBuf>,
    /// What a plan violation does, for sources [plan.sources] does not
    /// name [default: warn]
    #[arg(long, env = "TALLY_PLAN_MODE", value_enum)]
    plan_mode: Option<PlanModeArg>,
    /// Optional tally.toml with the same settings
    #[arg(long, env = "TALLY_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines on stderr as text, or as one JSON object a line (for a
    /// log shipper)
    #[arg(
        long,
        env = "TALLY_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
}

/// What a tracking-plan violation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanModeArg {
    /// Rejected as plan_violation (kept as a dead letter).
    Enforce,
    /// Accepted and counted.
    Warn,
    /// Not checked.
    Off,
}

impl From<PlanModeArg> for plan::Mode {
    fn from(m: PlanModeArg) -> plan::Mode {
        match m {
            PlanModeArg::Enforce => plan::Mode::Enforce,
            PlanModeArg::Warn => plan::Mode::Warn,
            PlanModeArg::Off => plan::Mode::Off,
        }
    }
}

/// How `tally serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-07T10:00:00Z  INFO tally::serve: listening on ...`,
    /// coloured on a terminal.
    Text,
    /// `{"timestamp":"...","level":"INFO","message":"listening on ...",
    /// "store":"sqlite","target":"tally::serve"}`: the event's fields
    /// beside the message, at the top level.
    Json,
}

impl ServeArgs {
    fn settings(&self) -> Settings {
        Settings {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            write_keys: Some(self.write_keys.clone()).filter(|k| !k.is_empty()),
            admin_token: self.admin_token.clone(),
            read_tokens: Some(self.read_tokens.clone()).filter(|t| !t.is_empty()),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            max_in_flight: self.max_in_flight,
            key_rate: self.key_rate,
            key_burst: self.key_burst,
            max_connections: self.max_connections,
            idle_timeout_s: self.idle_timeout.map(|d| d.as_secs_f64()),
            cors_origins: Some(self.cors_origins.clone()).filter(|o| !o.is_empty()),
            metrics_token: self.metrics_token.clone(),
            metrics_listen: self.metrics_listen.clone(),
            alert_webhook: self.alert_webhook.clone(),
            alerts: None,
            retention: None,
            dead_letters: None,
            plan: (self.plan.is_some() || self.plan_mode.is_some()).then(|| plan::PlanSettings {
                file: self.plan.clone(),
                mode: self.plan_mode.map(plan::Mode::from),
                sources: None,
            }),
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logs(args.log_format);
    let file = match &args.config {
        Some(path) => Settings::from_file(path)?,
        None => Settings::default(),
    };
    let config = args.settings().or(file).resolve()?;
    if let Some(files) = server::open_file_limit() {
        if config.connections.max_connections as u64 >= files {
            tracing::warn!(
                max_connections = config.connections.max_connections,
                open_file_limit = files,
                "the connection limit is above the open-file limit: connections past it fail to be accepted"
            );
        }
    }
    if config.admin_token.is_none() {
        tracing::warn!("no admin token: the query and admin endpoints answer 401");
    }
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls::acceptor(cert, key)?),
        None => None,
    };
    if config.database_url.is_none() {
        data_dir::prepare(&config.data_dir, store::SQLITE_FILE_NAME)?;
    }
    let store: Arc<dyn store::Store> = store::open_with(
        &config.data_dir,
        config.database_url.as_deref(),
        config.dead_letters,
    )
    .context("cannot open the store")?;
    let state = AppState::new(
        store.clone(),
        Keys::new(config.write_keys.clone(), config.admin_token.clone())
            .with_read_tokens(config.read_tokens.clone())
            .with_metrics_token(config.metrics_token.clone()),
    )
    .with_max_in_flight(config.max_in_flight)
    .with_key_rate(config.key_rate)
    .with_cors_origins(&config.cors_origins)
    .with_alerts(config.alerts.clone());
    let plans = plan::Plans::start(&config.plan, tally_collector::clock::now_ms())
        .context("cannot start with the tracking plan")?
        .map(Arc::new);
    if let Some(p) = &plans {
        tracing::info!(
            file = %p.file().display(),
            mode = p.default_mode().as_str(),
            sources = p.source_modes().len(),
            "tracking plan in force"
        );
    }
    let state = state.with_plans(plans.clone());
    // The configured keys are recorded in the store (so they can be
    // listed, rotated and revoked), and the ring follows the store's keys.
    let key_version = tally_collector::keyring::bootstrap(store.as_ref(), state.keys.as_ref())
        .context("cannot record the configured keys in the store")?;
    let health = state.health.clone();
    let audit_denied = state.audit_denied.clone();
    // Always on: dead letters expire even when events are kept forever.
    tracing::info!(
        default_days = config.retention.default_days,
        event_rules = config.retention.events.len(),
        dead_letters_days = config.retention.dead_letters_days,
        audit_days = config.retention.audit_days,
        interval_s = config.retention.interval.as_secs(),
        "retention on"
    );
    let retention = RetentionJob::start(
        store.clone(),
        state.metrics.clone(),
        config.retention.clone(),
    )
    .context("cannot start the retention job")?;

    warm_in_background(&store);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        if config.database_url.is_some() {
            tracing::info!(store = "postgres", "listening on {scheme}://{local}");
        } else {
            tracing::info!(
                store = "sqlite",
                data_dir = %config.data_dir.display(),
                "listening on {scheme}://{local}"
            );
        }
        let monitor = tally_collector::health::monitor::spawn(state.clone());
        let plan_reloader = plans.clone().map(|p| {
            let metrics = state.metrics.clone();
            plan::spawn_reloader(p, move |outcome| metrics.plan.reload(outcome))
        });
        let audit_flusher = tally_collector::audit::spawn_flusher(
            store.clone(),
            state.audit_denied.clone(),
            tally_collector::audit::DENIED_FLUSH_INTERVAL,
        );
        let key_poller = tally_collector::keyring::spawn_poller(
            store.clone(),
            state.keys.clone(),
            key_version,
            tally_collector::keyring::KEY_POLL_INTERVAL,
        );
        let (stop, stopping) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let metrics_server = match config.metrics_listen {
            None => None,
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for metrics"))?;
                tracing::info!(
                    "metrics served without a token on http://{}/metrics",
                    listener.local_addr()?
                );
                Some(tokio::spawn(server::serve(
                    listener,
                    tally_collector::api::metrics_app(state.clone()),
                    None,
                    server::Limits {
                        max_connections: METRICS_MAX_CONNECTIONS,
                        ..config.connections
                    },
                    // The connection metrics describe the main listener.
                    Arc::new(tally_collector::metrics::Metrics::new()),
                    stopped(stopping.clone()),
                )))
            }
        };
        let metrics = state.metrics.clone();
        server::serve(
            listener,
            app(state),
            tls,
            config.connections,
            metrics,
            stopped(stopping),
        )
        .await;
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        if let Some(reloader) = plan_reloader {
            reloader.abort();
        }
        key_poller.abort();
        audit_flusher.abort();
        // Hands the alert sender lease on (a shared store): a webhook
        // attempt in flight ends within its timeout.
        if tokio::time::timeout(MONITOR_STOP_TIMEOUT, monitor.stop())
            .await
            .is_err()
        {
            tracing::warn!("the health task did not stop in time");
        }
        anyhow::Ok(())
    });
    // The store is dropped last, on this thread, outside the runtime: the
    // PostgreSQL client runs its own runtime to close its connections, which
    // panics when that happens on a thread driving (or blocking for) tokio.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    // Refusals counted since the audit log's last window.
    if let Err(e) = audit_denied.flush(store.as_ref(), tally_collector::clock::now_ms()) {
        tracing::warn!(error = %e, "refused authentications not written to the audit log: the store did not answer");
    }
    // Requests refused before the store since the last flush.
    if let Err(e) = health.batches.flush(store.as_ref()) {
        tracing::warn!(error = %e, "request counts not saved: the store did not answer");
    }
    // Stops the job (a chunk in progress finishes) before the store goes.
    drop(retention);
    drop(store);
    tracing::info!("stopped");
    served
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// Fills the store's query caches (PostgreSQL's persons) on a thread of its
/// own while the collector starts serving: the first query would otherwise
/// wait for it (464 ms for 260,000 identities). A query arriving sooner
/// waits for the same work, not for more; a failure only means the first
/// query fills the cache itself.
fn warm_in_background(store: &Arc<dyn store::Store>) {
    let store = Arc::clone(store);
    let spawned = std::thread::Builder::new()
        .name("tally-warm".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            match store.warm() {
                Ok(0) => {}
                Ok(entries) => tracing::info!(
                    entries,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "query caches warm"
                ),
                Err(e) => tracing::warn!(error = %e, "cannot warm the query caches"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start warming the query caches");
    }
}
