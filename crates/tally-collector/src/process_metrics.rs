//! The process's own figures for `/metrics`, read at each scrape under the
//! names every Prometheus client library uses (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), so stock dashboards and alerts
//! work unchanged.
//!
//! On Linux they come from `/proc/self` (`stat`, `fd`), which a hardened
//! unit's `ProcSubset=pid` still shows; elsewhere nothing is exported, and
//! a figure that cannot be read at a scrape is left out of that scrape
//! rather than shown as 0.

use prometheus_client::registry::Registry;

/// Adds the process collector to `registry` (one without a prefix).
pub fn register(registry: &mut Registry) {
    #[cfg(target_os = "linux")]
    registry.register_collector(Box::new(linux::ProcessCollector::default()));
    #[cfg(not(target_os = "linux"))]
    let _ = registry;
}

/// The fields of `/proc/PID/stat` the collector reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    /// Threads.
    pub threads: u64,
    /// Start, in clock ticks since boot.
    pub start_ticks: u64,
    /// Virtual memory, bytes.
    pub virtual_bytes: u64,
    /// Resident set, pages.
    pub rss_pages: u64,
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    Some(Stat {
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        virtual_bytes: field(23)?,
        rss_pages: field(24)?,
    })
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::OnceLock;

    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric as _};
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    use rustix::time::{clock_gettime, ClockId};

    use super::{parse_stat, Stat};

    #[derive(Debug, Default)]
    pub(super) struct ProcessCollector {
        /// Unix seconds of the start, computed once: it does not change,
        /// and computing it reads two clocks whose difference jitters.
        start: OnceLock<Option<f64>>,
    }

    fn seconds(ts: rustix::time::Timespec) -> f64 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    }

    /// Unix time of the process's start: now, less the time since boot,
    /// plus the start's ticks since boot.
    fn start_time(stat: &Stat, ticks: f64) -> Option<f64> {
        let now = seconds(clock_gettime(ClockId::Realtime));
        let since_boot = seconds(clock_gettime(ClockId::Boottime));
        let start = now - since_boot + stat.start_ticks as f64 / ticks;
        (start > 0.0).then_some(start)
    }

    fn open_fds() -> Option<i64> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        // Less the descriptor read_dir itself holds open.
        Some(entries.count() as i64 - 1)
    }

    fn gauge(
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: ConstGauge<f64>,
    ) -> Result<(), std::fmt::Error> {
        let metric = encoder.encode_descriptor(name, help, None, value.metric_type())?;
        value.encode(metric)
    }

    impl Collector for ProcessCollector {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            let ticks = rustix::param::clock_ticks_per_second() as f64;
            let stat = std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|t| parse_stat(&t));
            if let Some(stat) = stat.filter(|_| ticks > 0.0) {
                let cpu = ConstCounter::new(stat.cpu_ticks as f64 / ticks);
                let metric = encoder.encode_descriptor(
                    "process_cpu_seconds",
                    "User and system CPU time spent, seconds",
                    None,
                    cpu.metric_type(),
                )?;
                cpu.encode(metric)?;
                let page = rustix::param::page_size() as f64;
                gauge(
                    &mut encoder,
                    "process_resident_memory_bytes",
                    "Resident memory size, bytes",
                    ConstGauge::new(stat.rss_pages as f64 * page),
                )?;
                gauge(
                    &mut encoder,
                    "process_virtual_memory_bytes",
                    "Virtual memory size, bytes",
                    ConstGauge::new(stat.virtual_bytes as f64),
                )?;
                gauge(
                    &mut encoder,
                    "process_threads",
                    "Threads of the process",
                    ConstGauge::new(stat.threads as f64),
                )?;
                if let Some(start) = *self.start.get_or_init(|| start_time(&stat, ticks)) {
                    gauge(
                        &mut encoder,
                        "process_start_time_seconds",
                        "Start of the process, seconds since the Unix epoch",
                        ConstGauge::new(start),
                    )?;
                }
            }
            if let Some(open) = open_fds() {
                gauge(
                    &mut encoder,
                    "process_open_fds",
                    "Open file descriptors",
                    ConstGauge::new(open as f64),
                )?;
            }
            let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
            if let Some(max) = limit {
                gauge(
                    &mut encoder,
                    "process_max_fds",
                    "Limit of open file descriptors",
                    ConstGauge::new(max as f64),
                )?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        // A name with a space and a parenthesis, as a thread may be named.
        let text = "4242 (tally (x) y) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 50 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                cpu_ticks: 300,
                threads: 9,
                start_ticks: 123_456,
                virtual_bytes: 987_654_321,
                rss_pages: 2_048,
            })
        );
        assert_eq!(parse_stat("4242 (tally) S 1 2"), None);
        assert_eq!(parse_stat("no name here"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_described() {
        let mut registry = Registry::default();
        register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap_or_default();
        for family in [
            "# TYPE process_cpu_seconds counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_open_fds gauge",
            "# TYPE process_max_fds gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.lines().any(|l| l == family), "{family} in\n{text}");
        }
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(f64::NAN)
        };
        assert!(
            value("process_resident_memory_bytes") > 1_000_000.0,
            "{text}"
        );
        assert!(value("process_open_fds") >= 3.0, "{text}");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        let start = value("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 3_600.0,
            "{start} vs {now}"
        );
    }
}
