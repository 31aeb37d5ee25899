//! The scenario: what each simulated device does, generated from the seed.
//!
//! The same seed gives the same scenario (device count, users, scripts,
//! fault schedule), so a failing run can be replayed exactly. Timing on the
//! real clock still varies; the checks do not depend on it.

/// SplitMix64: a tiny, fast, well-distributed generator whose output is
/// fixed by its definition, so scenarios stay the same across versions of
/// any library.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`, mixed with `stream` so devices get
    /// independent sequences.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Self(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        unit < p
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A step of a device's script.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `track(name, props)`.
    Track {
        /// Event name.
        name: &'static str,
        /// A property value that varies.
        item: u64,
        /// Sent as critical priority with a business dedup key.
        order: Option<u64>,
    },
    /// `screen(name)`.
    Screen(&'static str),
    /// `identify(user)` (after sign-up or login).
    Identify,
    /// The user thinks: wait this long before the next step.
    Think(u64),
    /// The app is killed: the tracker is dropped without a flush and
    /// reopened from its data directory.
    Kill,
    /// The app is uninstalled and installed again: a new install id, the
    /// same user (who identifies again).
    Reinstall,
    /// The device loses its network for this long (ms).
    Offline(u64),
}

/// One device: who uses it and what they do.
#[derive(Debug, Clone)]
pub struct DevicePlan {
    /// Index in the fleet.
    pub index: usize,
    /// The person using it (several devices may share one).
    pub user: String,
    /// Consent is refused on this device: nothing may leave it.
    pub refuses_consent: bool,
    /// Device clock error, ms (positive: ahead).
    pub clock_skew_ms: i64,
    /// Under the `kill9` fault: the device runs in a child process that is
    /// killed with SIGKILL at random moments.
    pub in_child: bool,
    /// The script.
    pub steps: Vec<Step>,
}

/// Which faults the run injects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Long offline periods.
    pub offline: bool,
    /// Requests dropped before reaching the collector.
    pub drop: bool,
    /// Connection reset after the collector committed: the client must
    /// resend and get `duplicate`.
    pub reset: bool,
    /// Bursts of 5xx answers.
    pub server_errors: bool,
    /// 429 storms with `Retry-After`.
    pub rate_limit: bool,
    /// Slow links.
    pub slow: bool,
    /// Device clocks skewed by up to ±1 h.
    pub skew: bool,
    /// App kills (tracker dropped and reopened).
    pub kill: bool,
    /// A tiny local queue while offline, so policy drops happen.
    pub queue_full: bool,
    /// Uninstall and reinstall (new install, same user).
    pub reinstall: bool,
    /// Requests delivered twice.
    pub duplicate: bool,
    /// Some devices run in child processes killed with SIGKILL.
    pub kill9: bool,
    /// The collector is stopped (SIGTERM or SIGKILL) and started again.
    pub restart: bool,
}

impl Faults {
    /// Every fault name `--faults` takes.
    pub const NAMES: [&'static str; 13] = [
        "offline",
        "drop",
        "reset",
        "5xx",
        "429",
        "slow",
        "skew",
        "kill",
        "queue_full",
        "reinstall",
        "duplicate",
        "kill9",
        "restart",
    ];

    /// Parses `all` or a comma-separated list of [`Faults::NAMES`].
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut f = Self::default();
        for name in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "all" => {
                    for n in Self::NAMES {
                        f.set(n);
                    }
                }
                n if Self::NAMES.contains(&n) => f.set(n),
                other => {
                    return Err(format!(
                        "unknown fault {other:?}; known: all, {}",
                        Self::NAMES.join(", ")
                    ))
                }
            }
        }
        Ok(f)
    }

    fn set(&mut self, name: &str) {
        match name {
            "offline" => self.offline = true,
            "drop" => self.drop = true,
            "reset" => self.reset = true,
            "5xx" => self.server_errors = true,
            "429" => self.rate_limit = true,
            "slow" => self.slow = true,
            "skew" => self.skew = true,
            "kill" => self.kill = true,
            "queue_full" => self.queue_full = true,
            "reinstall" => self.reinstall = true,
            "kill9" => self.kill9 = true,
            "restart" => self.restart = true,
            _ => self.duplicate = true,
        }
    }
}

/// Share of devices run in child processes under the `kill9` fault: each
/// costs a few process starts, so a quarter of the fleet is enough to kill
/// devices at many different moments.
const CHILD_SHARE: f64 = 0.25;

/// A purchase funnel and the screens around it.
const FUNNEL: [&str; 4] = ["app_open", "view_item", "add_to_cart", "purchase"];
const SCREENS: [&str; 4] = ["Home", "Search", "Item", "Cart"];

/// Stretches (or shrinks) each device's pauses (think times and offline
/// periods) in proportion so that they add up to `total_ms`: the scenario
/// then plays out over about that much wall time, events unchanged. A
/// device whose script has no pause at all keeps it that way.
pub fn stretch(plans: &mut [DevicePlan], total_ms: u64) {
    for plan in plans {
        let pauses: u64 = plan.steps.iter().map(Step::pause_ms).sum();
        if pauses == 0 {
            continue;
        }
        // Cumulative rounding, so the parts add up to the whole exactly.
        let (mut before, mut given) = (0u64, 0u64);
        for step in &mut plan.steps {
            let (Step::Think(ms) | Step::Offline(ms)) = step else {
                continue;
            };
            before += *ms;
            let upto = (u128::from(before) * u128::from(total_ms) / u128::from(pauses)) as u64;
            *ms = upto - given;
            given = upto;
        }
    }
}

impl Step {
    /// How long this step waits (think time or offline period), in ms.
    pub fn pause_ms(&self) -> u64 {
        match self {
            Step::Think(ms) | Step::Offline(ms) => *ms,
            _ => 0,
        }
    }
}

/// [`plan`], then [`stretch`]ed to `duration` when one is given: what the
/// fleet and a device's child process both build from the same arguments.
pub fn plan_stretched(
    seed: u64,
    devices: usize,
    events_per_device: usize,
    faults: Faults,
    duration: Option<std::time::Duration>,
) -> Vec<DevicePlan> {
    let mut plans = plan(seed, devices, events_per_device, faults);
    if let Some(d) = duration {
        stretch(&mut plans, u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    }
    plans
}

/// Builds every device's plan. Users outnumber devices by 3:4, so about a
/// third of users have two or three devices.
pub fn plan(
    seed: u64,
    devices: usize,
    events_per_device: usize,
    faults: Faults,
) -> Vec<DevicePlan> {
    let users = (devices * 3).div_ceil(4).max(1);
    (0..devices)
        .map(|index| {
            let mut rng = Rng::new(seed, index as u64 + 1);
            let user = format!("user-{seed}-{}", rng.below(users as u64));
            let refuses_consent = rng.chance(0.05);
            let clock_skew_ms = if faults.skew {
                rng.between(0, 7_200_000) as i64 - 3_600_000
            } else {
                0
            };
            let steps = script(&mut rng, events_per_device, faults);
            let in_child = faults.kill9 && rng.chance(CHILD_SHARE);
            DevicePlan {
                index,
                user,
                refuses_consent,
                clock_skew_ms,
                in_child,
                steps,
            }
        })
        .collect()
}

fn script(rng: &mut Rng, events: usize, faults: Faults) -> Vec<Step> {
    let mut steps = Vec::with_capacity(events * 2);
    let mut emitted = 0usize;
    let mut identified = false;
    // Sign-up happens somewhere in the first half of the device's life.
    let sign_up_at = rng.below((events / 2).max(1) as u64) as usize;
    let mut order = 0u64;
    while emitted < events {
        if faults.offline && rng.chance(0.05) {
            steps.push(Step::Offline(rng.between(200, 1_500)));
        }
        if faults.kill && rng.chance(0.03) {
            steps.push(Step::Kill);
        }
        if faults.reinstall && identified && rng.chance(0.01) {
            steps.push(Step::Reinstall);
            steps.push(Step::Identify);
            emitted += 1;
        }
        if !identified && emitted >= sign_up_at {
            steps.push(Step::Identify);
            identified = true;
            emitted += 1;
            continue;
        }
        // A session: a screen, then part of the funnel, with think times;
        // sometimes a rapid burst of taps with no think time at all.
        let screen = *rng.pick(&SCREENS);
        steps.push(Step::Screen(screen));
        emitted += 1;
        let burst = rng.chance(0.2);
        let depth = rng.between(1, FUNNEL.len() as u64) as usize;
        for name in FUNNEL.iter().take(depth) {
            if emitted >= events {
                break;
            }
            if !burst {
                steps.push(Step::Think(rng.between(0, 20)));
            }
            let is_purchase = *name == "purchase";
            if is_purchase {
                order += 1;
            }
            steps.push(Step::Track {
                name,
                item: rng.below(50),
                order: is_purchase.then_some(order),
            });
            emitted += 1;
        }
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_scenario_different_seed_different() {
        let a = plan(7, 20, 50, Faults::parse("all").unwrap());
        let b = plan(7, 20, 50, Faults::parse("all").unwrap());
        let c = plan(8, 20, 50, Faults::parse("all").unwrap());
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_ne!(format!("{a:?}"), format!("{c:?}"));
    }

    #[test]
    fn each_device_emits_its_events_plus_at_most_a_reinstall_identify() {
        for d in plan(3, 30, 37, Faults::parse("all").unwrap()) {
            let emitted = d
                .steps
                .iter()
                .filter(|s| matches!(s, Step::Track { .. } | Step::Screen(_) | Step::Identify))
                .count();
            assert!(
                (37..=39).contains(&emitted),
                "device {} emits {emitted}",
                d.index
            );
            assert!(d.clock_skew_ms.abs() <= 3_600_000);
        }
    }

    #[test]
    fn some_users_have_several_devices() {
        let fleet = plan(11, 40, 10, Faults::default());
        let mut per_user = std::collections::HashMap::<_, usize>::new();
        for d in &fleet {
            *per_user.entry(d.user.clone()).or_default() += 1;
        }
        assert!(per_user.values().any(|&n| n >= 2));
        assert!(per_user.len() < fleet.len());
    }

    #[test]
    fn fault_names_parse() {
        let all = Faults::parse("all").unwrap();
        assert!(all.offline && all.duplicate && all.server_errors && all.rate_limit);
        let some = Faults::parse("5xx, kill").unwrap();
        assert!(some.server_errors && some.kill && !some.offline);
        assert!(Faults::parse("meteor").is_err());
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
    }

    #[test]
    fn stretching_scales_every_pause_to_the_duration_and_keeps_the_events() {
        let faults = Faults::parse("offline").unwrap_or_default();
        let plans = plan(3, 8, 60, faults);
        let mut stretched = plans.clone();
        stretch(&mut stretched, 12_345);
        for (before, after) in plans.iter().zip(&stretched) {
            assert_eq!(before.steps.len(), after.steps.len());
            let paused: u64 = before.steps.iter().map(Step::pause_ms).sum();
            let total: u64 = after.steps.iter().map(Step::pause_ms).sum();
            assert_eq!(total, if paused == 0 { 0 } else { 12_345 });
            for (b, a) in before.steps.iter().zip(&after.steps) {
                // Same steps in the same order; only the pauses change.
                assert_eq!(std::mem::discriminant(b), std::mem::discriminant(a));
                if b.pause_ms() == 0 {
                    assert_eq!(format!("{b:?}"), format!("{a:?}"));
                }
            }
        }
        assert!(plans
            .iter()
            .any(|p| p.steps.iter().any(|s| s.pause_ms() > 0)));
    }
}
