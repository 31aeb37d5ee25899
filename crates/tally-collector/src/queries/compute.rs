//! The parts of the product queries computed over rows the store
//! returned, identical for both stores: funnels, retention grids, session
//! medians and breakdown values.

use std::collections::BTreeMap;

// Keys by the hundred thousand: foldhash, not SipHash.
use foldhash::{HashMap, HashMapExt as _, HashSet};
use std::hash::Hash;

/// People reaching each step of an ordered funnel: a person reaches step
/// *k* when they did steps 1..k in order, each at or after the previous
/// one, all within `window_ms` of step 1.
///
/// Per person, events are read in time order keeping, for each step,
/// the latest step-1 time from which that step was reached within the
/// window: a later start leaves the most room for the next steps, so one
/// pass finds the deepest step any start reaches. An event matching
/// several steps (a name repeated in the funnel) is applied from the
/// deepest step down, so it never serves as two steps at once.
pub fn funnel<K: Hash + Eq>(
    steps: &[String],
    events: impl IntoIterator<Item = (K, i64, String)>,
    window_ms: i64,
) -> Vec<u64> {
    // Equal times are read in funnel order: "at or after" admits them.
    let first_step = |event: &str| steps.iter().position(|s| s == event);
    let mut by_person: HashMap<K, Vec<(i64, usize)>> = HashMap::new();
    for (person, ts, event) in events {
        if let Some(step) = first_step(&event) {
            by_person.entry(person).or_default().push((ts, step));
        }
    }
    let mut reached = vec![0u64; steps.len()];
    for (_, mut timeline) in by_person {
        timeline.sort_unstable();
        // starts[k]: latest step-1 time from which step k+1 was reached.
        let mut starts: Vec<Option<i64>> = vec![None; steps.len()];
        for (ts, step) in timeline {
            let event = &steps[step];
            for k in (0..steps.len()).rev() {
                if steps[k] != *event {
                    continue;
                }
                if k == 0 {
                    starts[0] = Some(ts);
                } else if let Some(start) = starts[k - 1] {
                    if ts - start <= window_ms {
                        starts[k] = Some(starts[k].map_or(start, |s| s.max(start)));
                    }
                }
            }
        }
        let depth = starts.iter().take_while(|s| s.is_some()).count();
        for r in reached.iter_mut().take(depth) {
            *r += 1;
        }
    }
    reached
}

/// One cohort of a retention grid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cohort {
    /// Index of the cohort's day in the day list.
    pub day: usize,
    /// People first seen that day.
    pub size: u64,
    /// People of the cohort active on each day after (0..=N); `None` for
    /// days not over yet at the window's end.
    pub returned: Vec<Option<u64>>,
}

/// Retention cohorts: `first` gives each person's times of the cohort
/// event, `active` their times of activity; `day_of` maps a time to its
/// day index (`None` outside the window); `days_in_window` is how many
/// days the window touches.
pub fn retention(
    first: &[(String, i64)],
    active: &[(String, i64)],
    day_of: impl Fn(i64) -> Option<usize>,
    days_in_window: usize,
    horizon: usize,
) -> Vec<Cohort> {
    let mut first_day: HashMap<&str, usize> = HashMap::new();
    for (person, ts) in first {
        if let Some(day) = day_of(*ts) {
            let slot = first_day.entry(person.as_str()).or_insert(day);
            *slot = (*slot).min(day);
        }
    }
    let mut active_days: HashMap<&str, HashSet<usize>> = HashMap::new();
    for (person, ts) in active {
        if let Some(day) = day_of(*ts) {
            active_days.entry(person.as_str()).or_default().insert(day);
        }
    }
    let mut cohorts: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for (person, day) in &first_day {
        cohorts.entry(*day).or_default().push(person);
    }
    cohorts
        .into_iter()
        .map(|(day, people)| {
            let returned = (0..=horizon)
                .map(|offset| {
                    let target = day + offset;
                    if target >= days_in_window {
                        return None;
                    }
                    if offset == 0 {
                        return Some(people.len() as u64);
                    }
                    Some(
                        people
                            .iter()
                            .filter(|p| active_days.get(*p).is_some_and(|d| d.contains(&target)))
                            .count() as u64,
                    )
                })
                .collect();
            Cohort {
                day,
                size: people.len() as u64,
                returned,
            }
        })
        .collect()
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// How a breakdown shows a field's JSON text: a string as itself, any
/// other JSON value as its JSON text, no value as `(none)`.
pub fn display_value(json: Option<&str>) -> String {
    match json {
        None => "(none)".to_owned(),
        Some(text) => match serde_json::from_str::<String>(text) {
            Ok(s) => s,
            Err(_) => text.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(person: &str, ts: i64, event: &str) -> (String, i64, String) {
        (person.to_owned(), ts, event.to_owned())
    }

    fn steps(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_later_start_rescues_a_conversion_the_first_start_missed() {
        let s = steps(&["a", "b", "c"]);
        // p1: a at 0, a at 100, b at 150, c at 190: from the second a all
        // within 100. p2: b before a does not count.
        let events = vec![
            ev("p1", 0, "a"),
            ev("p1", 100, "a"),
            ev("p1", 150, "b"),
            ev("p1", 190, "c"),
            ev("p2", 10, "b"),
            ev("p2", 20, "a"),
        ];
        assert_eq!(funnel(&s, events, 100), vec![2, 1, 1]);
    }

    #[test]
    fn a_repeated_name_needs_two_events() {
        let s = steps(&["a", "a"]);
        assert_eq!(funnel(&s, vec![ev("p", 5, "a")], 10), vec![1, 0]);
        assert_eq!(
            funnel(&s, vec![ev("p", 5, "a"), ev("p", 5, "a")], 10),
            vec![1, 1]
        );
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
