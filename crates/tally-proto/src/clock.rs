//! Clock correction: pure functions, all times in Unix milliseconds.
//!
//! A device clock may be hours off. The batch carries the device clock at
//! send (`sentAt`); the collector stamps `received_at` with its own. Their
//! difference is the device's offset plus the transit time, and applying it
//! to the capture timestamp puts the event on the collector's clock:
//!
//! `ts_corrected = timestamp + (received_at − sentAt)`
//!
//! (the correction Segment and Snowplow apply). The error left is the
//! transit time of the batch, which is small and always makes the event
//! look later, never earlier, than it was.

/// The result of correcting one message's capture time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Correction {
    /// The capture time on the collector's clock.
    pub ts_corrected: i64,
    /// `received_at − sentAt`: the offset applied (0 without `sentAt`).
    pub offset: i64,
    /// The corrected time lay further in the future than the tolerance and
    /// was clamped to `received_at`.
    pub clamped: bool,
}

/// Corrects `timestamp` by `received_at − sent_at` and clamps a result more
/// than `future_tolerance` past `received_at` down to `received_at`.
///
/// Without `sent_at` no offset is known and the timestamp is used as is
/// (still clamped). Arithmetic saturates, so no input overflows.
pub fn correct(
    timestamp: i64,
    sent_at: Option<i64>,
    received_at: i64,
    future_tolerance: i64,
) -> Correction {
    let offset = sent_at.map_or(0, |s| received_at.saturating_sub(s));
    let corrected = timestamp.saturating_add(offset);
    let limit = received_at.saturating_add(future_tolerance.max(0));
    if corrected > limit {
        Correction {
            ts_corrected: received_at,
            offset,
            clamped: true,
        }
    } else {
        Correction {
            ts_corrected: corrected,
            offset,
            clamped: false,
        }
    }
}

/// An NTP-style estimate of how far the device clock is ahead of the
/// server's, from one request: sent at `t_send` and answered at `t_recv`
/// (device clock), stamped `server_time` by the server. Assumes symmetric
/// transit: the server stamped at the midpoint.
///
/// Returns `(offset, round_trip)`; a positive offset means the device clock
/// is ahead.
pub fn device_offset(t_send: i64, server_time: i64, t_recv: i64) -> (i64, i64) {
    let round_trip = t_recv.saturating_sub(t_send).max(0);
    let midpoint = t_send.saturating_add(round_trip / 2);
    (midpoint.saturating_sub(server_time), round_trip)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR: i64 = 3_600_000;
    const TOL: i64 = crate::limits::FUTURE_TOLERANCE_MS;
    // 1970 ± 10,000 years in ms: every realistic clock, with room to skew.
    const SPAN: i64 = 315_576_000_000_000;

    #[test]
    fn device_an_hour_behind_is_moved_forward_by_an_hour_plus_transit() {
        let truth = 1_700_000_000_000;
        let device_ts = truth - HOUR;
        let device_sent = truth + 5_000 - HOUR;
        let received = truth + 5_000 + 40;
        let c = correct(device_ts, Some(device_sent), received, TOL);
        assert_eq!(c.ts_corrected, truth + 40);
        assert_eq!(c.offset, HOUR + 40);
        assert!(!c.clamped);
    }

    #[test]
    fn far_future_is_clamped_and_flagged_not_dropped() {
        let received = 1_700_000_000_000;
        let c = correct(received + 2 * HOUR, None, received, TOL);
        assert_eq!(
            c,
            Correction {
                ts_corrected: received,
                offset: 0,
                clamped: true
            }
        );
        let within = correct(received + TOL, None, received, TOL);
        assert!(!within.clamped);
        assert_eq!(within.ts_corrected, received + TOL);
    }

    #[test]
    fn extreme_inputs_saturate() {
        let c = correct(i64::MAX, Some(i64::MIN), 0, TOL);
        assert!(c.clamped);
        assert_eq!(c.ts_corrected, 0);
        assert_eq!(
            correct(i64::MIN, Some(i64::MAX), 0, TOL).ts_corrected,
            i64::MIN
        );
    }

    #[test]
    fn offset_estimate_uses_the_midpoint() {
        // device 10 s ahead, 200 ms round trip
        assert_eq!(device_offset(10_000, 100, 10_200), (10_000, 200));
        assert_eq!(device_offset(500, 1_000, 400), (-500, 0));
    }

    proptest! {
        #[test]
        fn skew_cancels_out(
            truth in -SPAN..SPAN,
            transit in 0i64..60_000,
            wait in 0i64..(30 * 24 * HOUR),
            skew in -(24 * HOUR)..(24 * HOUR),
        ) {
            // captured at `truth`, sent `wait` later, received after `transit`
            let received = truth + wait + transit;
            let c = correct(truth + skew, Some(truth + wait + skew), received, TOL);
            prop_assert_eq!(c.ts_corrected, truth + transit);
            prop_assert_eq!(c.offset, transit - skew);
            prop_assert!(!c.clamped);
        }

        #[test]
        fn never_beyond_tolerance(
            ts in any::<i64>(),
            sent in proptest::option::of(any::<i64>()),
            received in -SPAN..SPAN,
        ) {
            let c = correct(ts, sent, received, TOL);
            prop_assert!(c.ts_corrected <= received + TOL);
            if c.clamped {
                prop_assert_eq!(c.ts_corrected, received);
            }
        }

        #[test]
        fn without_sent_at_only_clamping_changes_the_time(
            ts in -SPAN..SPAN,
            received in -SPAN..SPAN,
        ) {
            let c = correct(ts, None, received, TOL);
            prop_assert_eq!(c.clamped, ts > received + TOL);
            if !c.clamped {
                prop_assert_eq!(c.ts_corrected, ts);
            }
        }

        #[test]
        fn offset_estimate_recovers_a_symmetric_skew(
            t in -SPAN..SPAN,
            one_way in 0i64..10_000,
            skew in -(24 * HOUR)..(24 * HOUR),
        ) {
            let (offset, rtt) = device_offset(t + skew, t + one_way, t + 2 * one_way + skew);
            prop_assert_eq!(rtt, 2 * one_way);
            prop_assert_eq!(offset, skew);
        }
    }
}
